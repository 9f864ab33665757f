"""The trust reward end to end: OpenAIJudge against a scripted OpenAI-compatible server on 127.0.0.1
(slow, hanging, 429, 5xx, 400, malformed and out-of-range replies), its cache, its time bound, the
API key's safety; and TransformersJudge on tiny:qwen2 against an unpadded hand computation."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time

import openai  # noqa: F401 - imported once per process (about 2 s here): not part of the timed steps
import pytest
import torch

from multimood.data.prompt import OUTPUT_FIELDS
from multimood.rewards.judge_prompt import DIMENSION_NAMES, dimension_messages
from multimood.rewards.trust import OpenAIJudge, TransformersJudge, TrustReward
from multimood.tiny.judge_server import JudgeServer, Reply, uniform_scores

pytestmark = pytest.mark.usefixtures("loopback_network")

KEY_ENV = "MM_TEST_JUDGE_KEY"
KEY = "sk-test-DISTINCTIVE-3b7e91f0c2"


@pytest.fixture(autouse=True)
def _judge_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def answer(response: str) -> str:
    client, therapist, strategy, resp = OUTPUT_FIELDS
    return f"{client}: sadness\n{therapist}: neutral\n{strategy}: Open question\n{resp}: {response}"


def judge_for(server: JudgeServer, **overrides) -> OpenAIJudge:
    options = {
        "max_concurrency": 16,
        "timeout_s": 0.5,
        "max_retries": 2,
        "backoff_s": 0.05,
        "max_backoff_s": 0.3,
        "max_parse_retries": 1,
        "seed": 0,
        **overrides,
    }
    return OpenAIJudge("judge-model", base_url=server.base_url, api_key_env=KEY_ENV, **options)


def scripted(sentence: str, attempt: int) -> Reply:
    """One behaviour per sentence (attempt: the 0-based request number for that sentence)."""
    if sentence == "That sounds hard.":
        return Reply(scores=uniform_scores(7), delay_s=0.3)  # slow but in time
    if sentence == "Rate limited once.":
        return (
            Reply(status=429, headers={"Retry-After": "0.2"})
            if attempt == 0
            else Reply(scores=uniform_scores(4))
        )
    if sentence == "Server error twice.":
        return Reply(status=500) if attempt < 2 else Reply(scores=uniform_scores(1))
    if sentence == "Malformed first.":
        return Reply(content="Truthfulness: 7/10") if attempt == 0 else Reply(scores=uniform_scores(9))
    if sentence == "Always out of range.":
        return Reply(scores=uniform_scores(11))
    if sentence in ("Never replies.", "Silent forever."):
        return Reply(hang=True)
    if sentence == "Bad request.":
        return Reply(status=400)
    if sentence == "Request timeout once.":
        return Reply(status=408) if attempt == 0 else Reply(scores=uniform_scores(6))
    return Reply(scores=uniform_scores(10))


COMPLETIONS = [
    answer("I hear you. That sounds hard."),  # 10 and 7 -> 8.5 -> 7.5/9
    answer("Rate limited once."),  # 429 then 4 -> 3/9
    answer("Server error twice."),  # 500, 500, then 1 -> 0
    answer("Malformed first."),  # unparsable, then 9 -> 8/9
    answer("Always out of range."),  # 11 twice -> missing
    answer("Never replies."),  # three timeouts -> missing
    answer("Bad request."),  # 400, not retried -> missing
    answer("Fine. Silent forever."),  # one sentence missing -> the response is missing
    "no answer lines at all",  # unparsed -> missing
    answer("Request timeout once."),  # 408 (retried, unlike other 4xx) then 6 -> 5/9
]
EXPECTED_PRESENT = [True, True, True, True, False, False, False, False, False, True]
EXPECTED_VALUES = [7.5 / 9, 3 / 9, 0.0, 8 / 9, 0, 0, 0, 0, 0, 5 / 9]
# requests per sentence: retries of timeouts/429/5xx up to max_retries=2, parse retries 1, no retry of 400
EXPECTED_ATTEMPTS = {
    "I hear you.": 1,
    "That sounds hard.": 1,
    "Rate limited once.": 2,
    "Server error twice.": 3,
    "Malformed first.": 2,
    "Always out of range.": 2,
    "Never replies.": 3,
    "Bad request.": 1,
    "Fine.": 1,
    "Silent forever.": 3,
    "Request timeout once.": 2,
}


def test_one_step_with_every_failure(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # openai, httpx and ours, at their most verbose
    with JudgeServer(scripted) as server:
        reward = TrustReward(judge_for(server))
        start = time.perf_counter()
        out = reward(COMPLETIONS, ["reference"] * len(COMPLETIONS))
        seconds = time.perf_counter() - start

    # bound: 3 timeouts of 0.5 s + backoffs (<= 0.05 + 0.1) on the slowest path, plus client start-up
    assert 1.5 <= seconds < 3.0, seconds
    assert out.present.tolist() == EXPECTED_PRESENT
    assert torch.isfinite(out.values).all()
    torch.testing.assert_close(out.values, torch.tensor(EXPECTED_VALUES, dtype=torch.float32))
    assert dict(server.attempts) == EXPECTED_ATTEMPTS
    stats = out.stats
    assert stats["judge_calls"] == server.requests == sum(EXPECTED_ATTEMPTS.values())
    assert stats["failures"] == 4  # out of range, never replies, bad request, silent forever
    assert (stats["missing"], stats["missing_judge"], stats["missing_unparsed"]) == (5, 4, 1)
    assert stats["cache_hits"] == 0
    assert stats["judge_retries"] == 1 + 2 + 2 + 2 + 1  # 429, two 500s, two hanging sentences x 2, 408
    assert stats["judge_parse_failures"] == 1 + 2  # malformed once, out of range twice
    assert all(v == v for v in stats.values())  # no NaN

    # the missing judgements are reported, with reasons
    warnings = [r.getMessage() for r in caplog.records if r.name == "multimood.rewards.trust"]
    assert any("4 of 11 judgement(s) missing" in w and "HTTP 400 (not retried)" in w for w in warnings)
    # the key was used (sent to the server) and appears in no log line, repr or output
    assert server.authorization == {f"Bearer {KEY}"}
    assert KEY not in caplog.text
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err
    assert KEY not in repr(reward.judge) and KEY not in repr(vars(reward.judge))


def test_deadline_bounds_the_step() -> None:
    completions = [answer("Never replies."), answer("I hear you.")]
    with JudgeServer(scripted) as server:
        judge = judge_for(server, timeout_s=5.0, max_retries=4, deadline_s=0.8)
        start = time.perf_counter()
        out = TrustReward(judge)(completions, ["r", "r"])
        seconds = time.perf_counter() - start
    assert seconds < 0.8 + 1.0, seconds  # the deadline plus client start-up and cancellation
    assert out.present.tolist() == [False, True]
    torch.testing.assert_close(out.values, torch.tensor([0.0, 1.0]))
    assert out.stats["failures"] == 1 and out.stats["missing_judge"] == 1


def test_concurrency_and_its_limit() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(12)]
    with JudgeServer(latency_s=0.4) as server:
        judge = judge_for(server, max_concurrency=12, timeout_s=5.0)
        start = time.perf_counter()
        one = judge.judge([("Warm up.", "Warm up.")])
        single = time.perf_counter() - start
        start = time.perf_counter()
        many = judge.judge([(s, s) for s in sentences])
        parallel = time.perf_counter() - start
        assert server.max_in_flight == 12
        assert one.scores == [(7.0,) * 7] and many.scores == [(7.0,) * 7] * 12
        assert parallel < single + 0.8, (single, parallel)  # one at a time would take 12 x 0.4 s

        server.reset_counts()
        limited = judge_for(server, max_concurrency=3, timeout_s=5.0)
        limited.judge([(s, "other context") for s in sentences[:9]])
        assert server.max_in_flight == 3


def test_cache_second_run_makes_no_calls(tmp_path) -> None:
    completions = [
        answer("I hear you. That sounds hard."),
        answer("Rate limited once."),
        answer("Bad request."),
    ]
    with JudgeServer(scripted) as server:
        first = TrustReward(judge_for(server, cache_dir=str(tmp_path)))(completions, ["r"] * 3)
        assert server.requests == 5 and first.present.tolist() == [True, True, False]

        server.reset_counts()
        # a new judge object over the same folder: as a later run, or another DDP rank
        second = TrustReward(judge_for(server, cache_dir=str(tmp_path)))(completions, ["r"] * 3)
        # only the failed judgement (not cached) is asked again
        assert dict(server.attempts) == {"Bad request.": 1}
        assert second.stats["cache_hits"] == 3
        torch.testing.assert_close(second.values, first.values)
        assert second.present.tolist() == first.present.tolist()

        server.reset_counts()
        cached = TrustReward(judge_for(server, cache_dir=str(tmp_path)))(completions[:2], ["r"] * 2)
        assert server.requests == 0 and cached.stats["judge_calls"] == 0

        # another judge model is another key
        other = OpenAIJudge(
            "other-model", base_url=server.base_url, api_key_env=KEY_ENV, cache_dir=str(tmp_path)
        )
        TrustReward(other)(completions[:1], ["r"])
        assert server.requests == 2


def test_called_from_a_running_event_loop() -> None:
    # A notebook runs an event loop in the main thread; the judge must still work from sync code.
    with JudgeServer(scripted) as server:
        reward = TrustReward(judge_for(server))

        async def inside_a_loop():
            return reward([answer("I hear you.")], ["r"])

        out = asyncio.run(inside_a_loop())
    assert out.present.tolist() == [True] and out.values.tolist() == [1.0]


def test_key_stays_out_of_pickles_and_hparams(tmp_path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    class RewardModule(pl.LightningModule):
        def __init__(self, judge: OpenAIJudge, judge_config: dict) -> None:
            super().__init__()
            self.save_hyperparameters()

    judge = OpenAIJudge("gpt-4o", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    assert judge._api_key() == KEY  # the key is there to be found, in the environment
    module = RewardModule(judge, judge.config())
    path = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(path, module.hparams)
    text = path.read_text()
    assert KEY_ENV in text and KEY not in text
    torch.save(dict(module.hparams), tmp_path / "hparams.pt")
    assert KEY.encode() not in (tmp_path / "hparams.pt").read_bytes()
    assert KEY.encode() not in pickle.dumps(TrustReward(judge))


# --- the local transformers judge -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_judge() -> TransformersJudge:
    return TransformersJudge("tiny:qwen2", batch_size=5)


def _hand_expected_score(judge: TransformersJudge, dimension: str, sentence: str, context: str) -> float:
    """The G-Eval expected score for one prompt, unpadded, in plain probabilities."""
    tokenizer, model = judge._load()
    text = tokenizer.apply_chat_template(
        dimension_messages(dimension, sentence, context), add_generation_prompt=True, tokenize=False
    )
    one, zero = (
        tokenizer.encode("1", add_special_tokens=False),
        tokenizer.encode("0", add_special_tokens=False),
    )
    ids = tokenizer.encode(text, add_special_tokens=False) + one
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    first = torch.softmax(logits[-2], -1)
    q = torch.softmax(logits[-1], -1)[zero[0]]
    p = [first[tokenizer.encode(str(d), add_special_tokens=False)[0]] for d in range(1, 10)]
    probs = [p[0] * (1 - q), *p[1:], p[0] * q]
    return float(sum(s * w for s, w in zip(range(1, 11), probs, strict=True)) / sum(probs))


def test_transformers_judge_on_tiny_qwen2(tiny_judge: TransformersJudge, tmp_path) -> None:
    items = [
        ("I hear you.", "I hear you. That sounds really hard."),
        ("That sounds really hard.", "I hear you. That sounds really hard."),
        ("Ok.", "Ok."),
    ]
    result = tiny_judge.judge(items)
    assert result.stats["judge_calls"] == 3 * 7 and result.stats["failures"] == 0
    for scores in result.scores:
        assert scores is not None and len(scores) == 7
        assert all(1.0 <= s <= 10.0 and s == s for s in scores)
    # padded, batched rows equal the unpadded hand computation
    for i, dimension in [(0, "Truthfulness"), (1, "Empathy"), (2, "Ethical Guidance")]:
        expected = _hand_expected_score(tiny_judge, dimension, *items[i])
        assert result.scores[i][DIMENSION_NAMES.index(dimension)] == pytest.approx(expected, abs=1e-4)
    # random weights still spread probability: the scores are not all the same
    assert len({round(s, 6) for scores in result.scores for s in scores}) > 1

    cached = TransformersJudge("tiny:qwen2", batch_size=5, cache_dir=str(tmp_path))
    cached._loaded = tiny_judge._loaded  # share the loaded weights
    reward = TrustReward(cached)
    out = reward([answer("I hear you. That sounds really hard.")], ["r"])
    assert out.present.tolist() == [True] and 0.0 <= float(out.values[0]) <= 1.0
    mean = sum(result.scores[0] + result.scores[1]) / 14
    assert float(out.values[0]) == pytest.approx((mean - 1) / 9, abs=1e-5)
    again = reward([answer("I hear you. That sounds really hard.")], ["r"])
    assert again.stats["judge_calls"] == 0 and again.stats["cache_hits"] == 2
    assert pickle.loads(pickle.dumps(cached))._loaded is None


def test_loopback_fixture_keeps_the_rest_blocked() -> None:
    import socket

    from tests.conftest import NetworkBlocked

    with pytest.raises(NetworkBlocked, match="only loopback"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(NetworkBlocked, match="only loopback"):
        socket.create_connection(("10.1.2.3", 80), timeout=0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlocked):
        sock.connect(("192.0.2.1", 80))
    assert socket.getaddrinfo("localhost", 80)  # the loopback name resolves
