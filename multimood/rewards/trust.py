"""The trust reward (paper eq. 6): a judge LLM scores each sentence of the response on the seven
dimensions of paper table 5, 1-10; the reward is the mean over sentences and dimensions, scaled
``(score - 1) / 9`` to [0, 1].

Parts:

- :func:`split_sentences`: a small documented regex splitter (no nltk punkt data offline).
- Judges: anything with ``judge(items) -> JudgeResult`` where ``items`` are ``(sentence, context)``
  pairs; a judgement is seven scores in :data:`DIMENSION_NAMES` order or ``None`` (failed).

  - :class:`OpenAIJudge`: any OpenAI-compatible chat endpoint (GPT-4o as in the paper, a vLLM
    server). Requests go out concurrently under a semaphore, with our own explicit retry policy
    (the client's retries are off), strict JSON parsing and an optional whole-call deadline.
  - :class:`TransformersJudge`: a local causal LM read G-Eval style (expected score under the
    next-token probabilities of the score tokens); it never needs free-form generation to succeed.

  Both can keep an on-disk cache (:class:`JudgementCache`, sqlite) keyed by the judge, the prompt
  version and the texts, so a second pass over the same texts makes no calls.
- :class:`TrustReward`: the :class:`~multimood.rewards.base.RewardComponent`.

Policy (docs/design/trust-reward.md): a failed judgement is retried, then missing; a completion
whose response does not parse, has no sentence, or has fewer judged sentences than
``min_judged_fraction`` (default 1.0: all of them) is missing (``present`` False), never scored 0
and never NaN. The API key is read from the environment at call time and is never stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import sqlite3
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from multimood.rewards.base import RewardOutput, check_lengths, responses
from multimood.rewards.judge_prompt import (
    DIMENSION_NAMES,
    PROMPT_VERSION,
    dimension_messages,
    judge_messages,
    plain_prompt,
)

log = logging.getLogger(__name__)

MIN_SCORE, MAX_SCORE = 1, 10
Scores = tuple[float, ...]  # one judgement: seven scores in DIMENSION_NAMES order
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Sentences

# A sentence ends at . ! ? or … (repeated, e.g. "?!" or "..."), optionally followed by closing
# quotes/brackets, then whitespace; a line break always ends a sentence.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|\s*\n\s*")
# A boundary after one of these words is not a sentence end ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie", "no", "approx"}
)
_WORD = re.compile(r"\w")


def split_sentences(text: str) -> list[str]:
    """Split a response into sentences with a simple regex (see ``_BOUNDARY``).

    A boundary is sentence-final punctuation followed by whitespace, or a line break; it is skipped
    when the word before a single ``.`` is a common abbreviation (``Dr.``, ``e.g.``) or a single
    capital letter (an initial). Pieces without any letter or digit ("...", "-") are dropped, so an
    empty or punctuation-only response has no sentence. Decimal numbers ("3.5") never split, since
    no whitespace follows the dot.
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        piece = text[start : match.start()]
        punctuation = match.group().strip()
        if punctuation.startswith(".") and not punctuation.startswith(".."):  # one dot: "Dr." or an end
            last_word = piece.rsplit(None, 1)[-1].lower() if piece.split() else ""
            if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
                continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if _WORD.search(sentence)]


# ---------------------------------------------------------------------------------------------
# Parsing an OpenAI judge's reply

_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```$", re.DOTALL)


class JudgeParseError(ValueError):
    """A judge reply that is not the strict JSON object of seven integer scores."""


def parse_judgement(content: str | None) -> tuple[int, ...]:
    """The seven scores of a judge reply, in :data:`DIMENSION_NAMES` order.

    Strict: a JSON object (optionally inside a ```json fence) with exactly the seven dimension
    names as keys, each an integer from 1 to 10 (``7.0``, ``"7"`` and ``true`` are not integers).
    Anything else raises :class:`JudgeParseError` saying what was wrong.
    """
    if content is None:
        raise JudgeParseError("the reply has no content")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise JudgeParseError(
            f"the reply is not JSON ({error.msg} at char {error.pos}): {text[:80]!r}"
        ) from None
    if not isinstance(data, dict):
        raise JudgeParseError(f"the reply is JSON {type(data).__name__}, not an object")
    missing = [name for name in DIMENSION_NAMES if name not in data]
    extra = sorted(set(data) - set(DIMENSION_NAMES))
    if missing or extra:
        raise JudgeParseError(f"the reply's keys are wrong: missing {missing}, unexpected {extra}")
    scores = []
    for name in DIMENSION_NAMES:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise JudgeParseError(f"{name} is {value!r}, not an integer")
        if not MIN_SCORE <= value <= MAX_SCORE:
            raise JudgeParseError(f"{name} is {value}, outside {MIN_SCORE}..{MAX_SCORE}")
        scores.append(value)
    return tuple(scores)


# ---------------------------------------------------------------------------------------------
# Cache


def cache_key(model: str, base_url: str | None, sentence: str, context: str) -> str:
    """sha256 of (judge model, endpoint, PROMPT_VERSION, sentence, context): what a judgement depends on."""
    payload = json.dumps([model, base_url, PROMPT_VERSION, sentence, context], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgementCache:
    """Judgements on disk: one sqlite file, safe for several processes (DDP ranks) at once.

    sqlite serialises writers with a file lock; ``timeout_s`` is how long a writer waits for
    another's transaction. A key is written once (``INSERT OR IGNORE``): two ranks that judged the
    same text race harmlessly. Only successful judgements are stored; failures are retried next time.
    The object holds the path only (connections are opened per operation), so it pickles.
    """

    FILENAME = "trust-judgements.sqlite"

    def __init__(self, cache_dir: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(cache_dir).expanduser() / self.FILENAME
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, scores TEXT NOT NULL)")

    @contextlib.contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=self.timeout_s)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def get_many(self, keys: Sequence[str]) -> dict[str, Scores]:
        """The cached judgements among ``keys``."""
        found: dict[str, Scores] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):  # stay under sqlite's variable limit
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, scores in db.execute(
                    f"SELECT key, scores FROM judgements WHERE key IN ({marks})", chunk
                ):
                    found[key] = tuple(float(s) for s in json.loads(scores))
        return found

    def put_many(self, judgements: dict[str, Scores]) -> None:
        """Store judgements (one transaction)."""
        if not judgements:
            return
        with self._connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO judgements (key, scores) VALUES (?, ?)",
                [(key, json.dumps(list(scores))) for key, scores in judgements.items()],
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])


# ---------------------------------------------------------------------------------------------
# Judges


@dataclass
class JudgeResult:
    """Judgements of N ``(sentence, context)`` items: ``scores[i]`` is seven scores or None (failed).

    ``stats``: ``judge_calls`` (requests or model rows actually run, retries included),
    ``cache_hits`` (distinct items served from the cache), ``failures`` (distinct items left without
    a judgement), ``seconds``.
    """

    scores: list[Scores | None]
    stats: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class TrustJudge(Protocol):
    """What :class:`TrustReward` needs from a judge."""

    def judge(self, items: Sequence[tuple[str, str]]) -> JudgeResult: ...


class _CachedJudge:
    """Shared by the judges: de-duplication, the cache, timing; subclasses judge the rest."""

    model: str
    cache_dir: str | None

    def _endpoint(self) -> str | None:
        raise NotImplementedError

    def _judge_uncached(self, items: list[tuple[str, str]]) -> tuple[list[Scores | None], dict[str, float]]:
        raise NotImplementedError

    def judge(self, items: Sequence[tuple[str, str]]) -> JudgeResult:
        """Judge ``(sentence, context)`` items; identical items are judged once, cached ones not at all."""
        start = time.perf_counter()
        keys = [cache_key(self.model, self._endpoint(), sentence, context) for sentence, context in items]
        unique: dict[str, tuple[str, str]] = {}
        for key, item in zip(keys, items, strict=True):
            unique.setdefault(key, (item[0], item[1]))
        cache = JudgementCache(self.cache_dir) if self.cache_dir else None
        known: dict[str, Scores | None] = dict(cache.get_many(list(unique))) if cache is not None else {}
        hits = len(known)
        todo = [key for key in unique if key not in known]
        stats: dict[str, float] = {"judge_calls": 0.0}
        if todo:
            scores, stats = self._judge_uncached([unique[key] for key in todo])
            fresh = dict(zip(todo, scores, strict=True))
            if cache is not None:
                cache.put_many({key: value for key, value in fresh.items() if value is not None})
            known.update(fresh)
        results = [known[key] for key in keys]
        failures = sum(1 for key in unique if known[key] is None)
        return JudgeResult(
            results,
            {
                **stats,
                "cache_hits": float(hits),
                "failures": float(failures),
                "seconds": time.perf_counter() - start,
            },
        )


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    With no event loop running in this thread (a training script), a private loop runs it
    (``asyncio.run``). When one is running (a notebook, or code called from async code), blocking it
    with ``asyncio.run`` is impossible, so a worker thread runs the private loop and we wait for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="trust-judge") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds asked by ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class OpenAIJudge(_CachedJudge):
    """A judge behind an OpenAI-compatible chat endpoint (the paper used GPT-4o).

    Each sentence is one request (:func:`~multimood.rewards.judge_prompt.judge_messages`); all the
    requests of a call go out concurrently, at most ``max_concurrency`` in flight.

    Retry policy (ours; the client's own retries are off so that this is the whole policy): a request
    that times out (``timeout_s``), cannot connect, or is answered 429, 408 or 5xx is retried up to
    ``max_retries`` times after an exponential backoff ``backoff_s * 2**(n-1)`` capped at
    ``max_backoff_s``, with jitter (x0.5-1.0); a 429's ``retry-after-ms`` / ``retry-after`` is
    honoured instead, capped at ``max_backoff_s``. Other 4xx (bad request, bad key) are not retried.
    A reply that is not the strict JSON of seven integer scores (:func:`parse_judgement`) is asked
    again up to ``max_parse_retries`` times. Then the judgement is missing.
    ``deadline_s`` bounds the whole call: requests still running then are cancelled and missing.

    Args:
        model: the judge model name sent to the endpoint (e.g. ``gpt-4o``).
        base_url: the endpoint (e.g. ``http://localhost:8000/v1`` for vLLM); None for OpenAI's.
        api_key_env: the environment variable holding the API key, read at each call and never
            stored; None for a local server that needs no key (sends ``EMPTY``).
        max_concurrency: requests in flight at once.
        timeout_s: the limit of one request, seconds.
        max_retries: retries of a request after a timeout, connection error, 429, 408 or 5xx.
        backoff_s: first backoff, seconds; doubled at each retry.
        max_backoff_s: cap of a backoff and of a server's Retry-After.
        cache_dir: a folder for the judgement cache (sqlite); None: no cache.
        temperature: sampling temperature of the judge (0: as deterministic as the endpoint allows).
        max_parse_retries: new requests after a reply that does not parse.
        deadline_s: a bound on one whole call, seconds; None: bounded only by the retry policy.
        seed: seed of the backoff jitter (None: random).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        cache_dir: str | None = None,
        temperature: float = 0.0,
        max_parse_retries: int = 1,
        deadline_s: float | None = None,
        seed: int | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"OpenAIJudge: max_concurrency must be >= 1, got {max_concurrency}")
        for name, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if value is not None and not value > 0:
                raise ValueError(f"OpenAIJudge: {name} must be > 0, got {value}")
        for name, value in (("max_retries", max_retries), ("max_parse_retries", max_parse_retries)):
            if value < 0:
                raise ValueError(f"OpenAIJudge: {name} must be >= 0, got {value}")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache_dir = cache_dir
        self.temperature = temperature
        self.max_parse_retries = max_parse_retries
        self.deadline_s = deadline_s
        self.seed = seed

    def config(self) -> dict[str, Any]:
        """The init arguments (what a config or hparams holds): the key's variable name, never the key."""
        return {
            name: getattr(self, name)
            for name in (
                "model",
                "base_url",
                "api_key_env",
                "max_concurrency",
                "timeout_s",
                "max_retries",
                "backoff_s",
                "max_backoff_s",
                "cache_dir",
                "temperature",
                "max_parse_retries",
                "deadline_s",
                "seed",
            )
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __getstate__(self) -> dict[str, Any]:
        # Only the configuration travels (there is no key to leave out: it is never an attribute).
        return self.config()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _endpoint(self) -> str | None:
        return self.base_url

    def _api_key(self) -> str:
        if self.api_key_env is None:
            return "EMPTY"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"OpenAIJudge: the environment variable {self.api_key_env} (api_key_env) is not set; "
                "set it to the judge endpoint's API key, or pass api_key_env=None for a local server "
                "that needs none"
            )
        return key

    def _delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        return min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1)) * rng.uniform(0.5, 1.0)

    def _judge_uncached(self, items: list[tuple[str, str]]) -> tuple[list[Scores | None], dict[str, float]]:
        return _run_coroutine(self._judge_all(items, self._api_key(), time.monotonic()))

    async def _judge_all(
        self, items: list[tuple[str, str]], api_key: str, started: float
    ) -> tuple[list[Scores | None], dict[str, float]]:
        import openai  # here, not at module level: it takes seconds and TransformersJudge needs none of it

        counters = {"judge_calls": 0.0, "retries": 0.0, "parse_failures": 0.0, "deadline_cancelled": 0.0}
        reasons: list[str] = []
        semaphore = asyncio.Semaphore(self.max_concurrency)
        rng = random.Random(self.seed)
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        try:
            tasks = [
                asyncio.create_task(self._judge_one(client, semaphore, s, c, counters, reasons, rng))
                for s, c in items
            ]
            # the deadline counts from the call's start (the client's import and set-up included)
            remaining = (
                None if self.deadline_s is None else max(0.0, self.deadline_s - (time.monotonic() - started))
            )
            done, pending = await asyncio.wait(tasks, timeout=remaining)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            counters["deadline_cancelled"] = float(len(pending))
            if pending:
                reasons.append(
                    f"{len(pending)} judgement(s) still running at the deadline ({self.deadline_s} s)"
                )
            scores = [task.result() if task in done else None for task in tasks]
        finally:
            await client.close()
        failed = sum(score is None for score in scores)
        if failed:
            log.warning(
                "OpenAIJudge(%s): %d of %d judgement(s) missing after retries; first reasons: %s",
                self.model,
                failed,
                len(items),
                "; ".join(reasons[:3]),
            )
        return scores, counters

    async def _judge_one(
        self,
        client: Any,
        semaphore: asyncio.Semaphore,
        sentence: str,
        context: str,
        counters: dict[str, float],
        reasons: list[str],
        rng: random.Random,
    ) -> Scores | None:
        import openai

        messages = judge_messages(sentence, context)
        retries = parse_failures = 0
        while True:
            retry_after: float | None = None
            async with semaphore:
                counters["judge_calls"] += 1
                try:
                    # wait_for bounds the whole request (the client's timeout bounds each read)
                    response = await asyncio.wait_for(
                        client.chat.completions.create(
                            model=self.model, messages=messages, temperature=self.temperature
                        ),
                        self.timeout_s,
                    )
                except (asyncio.TimeoutError, openai.APIConnectionError) as error:  # includes APITimeoutError
                    reason = f"{type(error).__name__}"
                except openai.APIStatusError as error:
                    status = error.status_code
                    if status == 429:
                        retry_after = _retry_after_seconds(error.response.headers)
                    elif status != 408 and status < 500:
                        reasons.append(f"HTTP {status} (not retried)")
                        return None
                    reason = f"HTTP {status}"
                except openai.OpenAIError as error:  # e.g. a body that is not a chat completion
                    reasons.append(f"{type(error).__name__} (not retried)")
                    return None
                else:
                    choices = getattr(response, "choices", None) or []
                    content = choices[0].message.content if choices else None
                    try:
                        return tuple(float(s) for s in parse_judgement(content))
                    except JudgeParseError as error:
                        parse_failures += 1
                        counters["parse_failures"] += 1
                        if parse_failures > self.max_parse_retries:
                            reasons.append(f"unparsable reply: {error}")
                            return None
                        continue  # the endpoint answered: ask again at once
            retries += 1
            if retries > self.max_retries:
                reasons.append(f"{reason} after {self.max_retries} retries")
                return None
            counters["retries"] += 1
            await asyncio.sleep(self._delay(retries, retry_after, rng))


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersJudge(_CachedJudge):
    """A local causal LM as the judge, read G-Eval style: no free-form generation has to succeed.

    For each sentence and each dimension the model gets
    :func:`~multimood.rewards.judge_prompt.dimension_messages` (through the tokenizer's chat
    template when it has one and ``use_chat_template``, else as plain text ending in a newline), and
    the score is the expected value under its next-token probabilities over the scores 1..10,
    renormalised over those scores::

        score = sum_s s * P(s) / sum_s P(s)

    "10": when the tokenizer has a single token for "10" it is a candidate of the first token like
    "1".."9". When it splits numbers into digits (Qwen2 does), the first token "1" means 1 or 10: we
    append "1" to the prompt and read, in the same forward pass, ``q = P("0" | prompt + "1")``;
    then ``P(10) = P("1") q`` and ``P(1) = P("1") (1 - q)`` (anything after "1" other than "0" reads
    as the score 1). The score is always in [1, 10], also for random weights (``tiny:qwen2``).

    Args:
        model_name_or_path: a hub id, a local folder or a built-in name (``tiny:qwen2``), through
            :func:`multimood.hub.resolve`.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        batch_size: prompts (sentence x dimension) per forward pass.
        max_length: longest prompt in tokens; a longer one is a failed judgement.
        use_chat_template: use the tokenizer's chat template when it has one.
        cache_dir: a folder for the judgement cache (sqlite); None: no cache.
    """

    def __init__(
        self,
        model_name_or_path: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        max_length: int = 2048,
        use_chat_template: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"TransformersJudge: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"TransformersJudge: batch_size must be >= 1, got {batch_size}")
        self.model = model_name_or_path
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.cache_dir = cache_dir
        self._loaded: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded"] = None  # the weights reload where the judge is unpickled
        return state

    def __repr__(self) -> str:
        return (
            f"TransformersJudge(model_name_or_path={self.model!r}, device={self.device!r}, "
            f"dtype={self.dtype!r}, batch_size={self.batch_size})"
        )

    def _endpoint(self) -> str | None:
        return "transformers:expected-score"

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from multimood.hub import resolve

            path = resolve(self.model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[self.dtype])
            model.to(self.device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def _token(self, tokenizer: Any, text: str) -> int | None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def _prompt_ids(self, tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = plain_prompt(messages)
        return tokenizer.encode(text, add_special_tokens=False)

    @torch.no_grad()
    def _judge_uncached(self, items: list[tuple[str, str]]) -> tuple[list[Scores | None], dict[str, float]]:
        tokenizer, model = self._load()
        digits = [self._token(tokenizer, str(d)) for d in range(10)]
        if any(d is None for d in digits):
            raise ValueError(
                f"TransformersJudge({self.model}): the digits 0-9 must each be one token of the tokenizer"
            )
        ten = self._token(tokenizer, "10")
        rows: list[list[int]] = []
        for sentence, context in items:
            for dimension in DIMENSION_NAMES:
                rows.append(self._prompt_ids(tokenizer, dimension_messages(dimension, sentence, context)))
        # Rows end with "1" when "10" is two tokens: the second-to-last logits give the first score
        # token, the last ones P("0" | "1").
        suffix = [] if ten is not None else [digits[1]]
        expected = torch.full((len(rows),), float("nan"))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        runnable = [i for i, row in enumerate(rows) if len(row) + len(suffix) <= self.max_length]
        too_long = len(rows) - len(runnable)
        for start in range(0, len(runnable), self.batch_size):
            batch = [rows[i] + suffix for i in runnable[start : start + self.batch_size]]
            width = max(len(row) for row in batch)
            # left padding: the last positions of all rows line up
            ids = torch.tensor([[pad] * (width - len(row)) + row for row in batch], device=self.device)
            mask = torch.tensor(
                [[0] * (width - len(row)) + [1] * len(row) for row in batch], device=self.device
            )
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=2
            ).logits[:, -2:, :]
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # (B, 2, V)
            first = logp[:, 0] if ten is None else logp[:, 1]
            candidates = [first[:, digits[d]] for d in range(1, 10)]  # log P(1..9) at the first token
            if ten is None:
                log_q = logp[:, 1, digits[0]]  # log P("0" | "1")
                log_not_q = torch.log1p(-log_q.exp().clamp(max=1 - 1e-7))
                candidates = [candidates[0] + log_not_q, *candidates[1:], candidates[0] + log_q]
            else:
                candidates.append(first[:, ten])
            probs = torch.softmax(torch.stack(candidates, dim=-1), dim=-1)  # (B, 10) over scores 1..10
            values = (probs * torch.arange(1, 11, dtype=probs.dtype)).sum(-1)
            expected[runnable[start : start + self.batch_size]] = values
        per_item = expected.view(len(items), len(DIMENSION_NAMES))
        scores: list[Scores | None] = []
        for row in per_item:
            ok = bool(torch.isfinite(row).all())
            scores.append(tuple(float(v) for v in row) if ok else None)
        if too_long:
            log.warning(
                "TransformersJudge(%s): %d prompt(s) longer than max_length=%d were not judged",
                self.model,
                too_long,
                self.max_length,
            )
        return scores, {"judge_calls": float(len(runnable))}


# ---------------------------------------------------------------------------------------------
# The reward


class TrustReward:
    """r_trust (paper eq. 6) as a :class:`~multimood.rewards.base.RewardComponent`.

    Each completion's response (the fourth answer line) is split into sentences; the sentences of all
    completions are judged in one judge call (concurrent requests or batched forward passes), each
    with its whole response as context. The reward is the mean over sentences and the seven
    dimensions, scaled ``(score - 1) / 9`` to [0, 1].

    Missing (``present`` False, counted in ``stats``): a response that does not parse
    (``missing_unparsed``), one with no sentence (``missing_no_sentence``), and one where fewer than
    ``min_judged_fraction`` of its sentences were judged (``missing_judge``). With the default 1.0 a
    response is never scored on part of its sentences: a failed sentence could be the one that
    would lower the score. A lower fraction averages over the judged sentences only.

    Args:
        judge: the judge (:class:`OpenAIJudge`, :class:`TransformersJudge` or any :class:`TrustJudge`).
        name: the component's name in logs and in the combination.
        min_judged_fraction: the share of a response's sentences that must be judged, in (0, 1].
    """

    def __init__(self, judge: TrustJudge, name: str = "trust", min_judged_fraction: float = 1.0) -> None:
        if not 0.0 < min_judged_fraction <= 1.0:
            raise ValueError(f"TrustReward: min_judged_fraction must be in (0, 1], got {min_judged_fraction}")
        self.judge = judge
        self.name = name
        self.min_judged_fraction = min_judged_fraction

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        check_lengths(self.name, completions, references)
        start = time.perf_counter()
        texts = responses(completions)
        sentences = [split_sentences(text) if text is not None else [] for text in texts]
        items = [
            (sentence, text)
            for text, group in zip(texts, sentences, strict=True)
            if text is not None
            for sentence in group
        ]
        result = self.judge.judge(items) if items else JudgeResult([], {"judge_calls": 0.0})
        values = torch.zeros(len(completions))
        present = torch.zeros(len(completions), dtype=torch.bool)
        counts = {"missing_unparsed": 0, "missing_no_sentence": 0, "missing_judge": 0}
        offset = 0
        for i, (text, group) in enumerate(zip(texts, sentences, strict=True)):
            judged = [s for s in result.scores[offset : offset + len(group)] if s is not None]
            offset += len(group)
            if text is None:
                counts["missing_unparsed"] += 1
            elif not group:
                counts["missing_no_sentence"] += 1
            elif not judged or len(judged) < self.min_judged_fraction * len(group) - 1e-9:
                counts["missing_judge"] += 1
            else:
                mean = sum(sum(s) for s in judged) / (len(judged) * len(DIMENSION_NAMES))
                values[i] = (mean - MIN_SCORE) / (MAX_SCORE - MIN_SCORE)
                present[i] = True
        stats = {
            "judge_calls": float(result.stats.get("judge_calls", 0.0)),
            "cache_hits": float(result.stats.get("cache_hits", 0.0)),
            "failures": float(result.stats.get("failures", 0.0)),
            "missing": float(sum(counts.values())),
            **{k: float(v) for k, v in counts.items()},
            "sentences": float(len(items)),
            "seconds": time.perf_counter() - start,
            # the judge's own counts (retries, parse failures, deadline cancellations, its seconds)
            **{
                f"judge_{k}": float(v)
                for k, v in result.stats.items()
                if k not in ("judge_calls", "cache_hits", "failures")
            },
        }
        if not all(math.isfinite(v) for v in stats.values()):  # pragma: no cover - a judge bug
            raise ValueError(f"TrustReward: non-finite stats {stats}")
        return RewardOutput(values, present, stats)
