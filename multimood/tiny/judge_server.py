"""A scripted OpenAI-compatible judge server on 127.0.0.1, for tests and benchmarks of the trust judge.

It implements ``POST /v1/chat/completions`` only, with the standard library
(``http.server.ThreadingHTTPServer``, one thread per request), so slow, hanging and concurrent
replies are real. What it answers is scripted per sentence: ``script(sentence, attempt)`` returns a
:class:`Reply` for the ``attempt``-th request (0-based) about that sentence, where the sentence is read
from the ``<sentence>`` tags of the judge prompt. It counts every request and keeps the
Authorization headers it saw.

Bounded by construction: a "hanging" reply waits at most ``max_hang_s`` (or until the server
stops), and the server only ever listens on the loopback address.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from multimood.rewards.judge_prompt import DIMENSION_NAMES

_SENTENCE = re.compile(r"<sentence>\n(.*?)\n</sentence>", re.DOTALL)


@dataclass
class Reply:
    """One scripted answer.

    ``scores``: a correct reply (the JSON object of these scores); ``content``: the message content
    as given (for malformed replies); ``status`` other than 200: an error with ``headers`` (e.g.
    ``Retry-After``); ``delay_s``: wait before answering; ``hang``: never answer (until the server
    stops or ``max_hang_s``).
    """

    scores: dict[str, Any] | None = None
    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False


def uniform_scores(value: int) -> dict[str, int]:
    """All seven dimensions scored ``value``."""
    return dict.fromkeys(DIMENSION_NAMES, value)


Script = Callable[[str, int], Reply]


class JudgeServer:
    """``with JudgeServer(script) as server:`` then point a judge at ``server.base_url``."""

    def __init__(
        self, script: Script | None = None, latency_s: float = 0.0, max_hang_s: float = 30.0
    ) -> None:
        self.script: Script = script or (lambda sentence, attempt: Reply(scores=uniform_scores(7)))
        self.latency_s = latency_s
        self.max_hang_s = max_hang_s
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being answered at once
        self.authorization: set[str] = set()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reset_counts(self) -> None:
        with self.lock:
            self.attempts.clear()
            self.requests = 0
            self.max_in_flight = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                with contextlib.suppress(OSError):  # the client may have given up (timeout)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                user = body["messages"][-1]["content"]
                match = _SENTENCE.search(user)
                sentence = match.group(1) if match else ""
                with owner.lock:
                    attempt = owner.attempts[sentence]
                    owner.attempts[sentence] += 1
                    owner.requests += 1
                    owner.authorization.add(self.headers.get("Authorization", ""))
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    self._answer(body, sentence, attempt)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _answer(self, body: dict[str, Any], sentence: str, attempt: int) -> None:
                reply = owner.script(sentence, attempt)
                if reply.hang:
                    owner._stop.wait(owner.max_hang_s)
                    return
                time.sleep(owner.latency_s + reply.delay_s)
                if reply.status != 200:
                    error = {
                        "error": {"message": f"scripted {reply.status}", "type": "scripted", "code": None}
                    }
                    self._send(reply.status, error, reply.headers)
                    return
                content = reply.content if reply.content is not None else json.dumps(reply.scores)
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{attempt}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                    reply.headers,
                )

        return Handler

    def __enter__(self) -> JudgeServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 256  # many concurrent connects (the default backlog is 5)
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
