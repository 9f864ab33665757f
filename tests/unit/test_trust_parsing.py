"""The trust reward's pure parts: sentence splitting, strict judge-reply parsing, Retry-After, backoff,
the cache, and the reward's arithmetic and missing policy (with a scripted judge, no server)."""

from __future__ import annotations

import email.utils
import json
import pickle
import re
import threading
import time
from collections.abc import Sequence

import pytest
import torch

from multimood.data.prompt import OUTPUT_FIELDS
from multimood.rewards.base import RewardComponent
from multimood.rewards.judge_prompt import (
    DIMENSION_NAMES,
    PROMPT_VERSION,
    dimension_messages,
    judge_messages,
)
from multimood.rewards.trust import (
    JudgementCache,
    JudgeParseError,
    JudgeResult,
    OpenAIJudge,
    TrustReward,
    _retry_after_seconds,
    cache_key,
    parse_judgement,
    split_sentences,
)


def answer(response: str) -> str:
    """A well-formed four-line answer with this response."""
    client, therapist, strategy, resp = OUTPUT_FIELDS
    return f"{client}: sadness\n{therapist}: neutral\n{strategy}: Open question\n{resp}: {response}"


# --- sentences --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I hear you. That sounds hard!", ["I hear you.", "That sounds hard!"]),
        ("Really?! Tell me more...  Okay.", ["Really?!", "Tell me more...", "Okay."]),
        ('She said "no." Then left.', ['She said "no."', "Then left."]),
        (
            "Dr. Smith can help, e.g. on Monday. Call him.",
            ["Dr. Smith can help, e.g. on Monday.", "Call him."],
        ),
        ("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it.", "Yes."]),
        ("It costs 3.5 dollars. Fine", ["It costs 3.5 dollars.", "Fine"]),
        ("First line\nsecond line", ["First line", "second line"]),
        ("no final punctuation", ["no final punctuation"]),
        ("", []),
        ("   ...  - ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


# --- strict parsing ----------------------------------------------------------------------------

GOOD = dict(zip(DIMENSION_NAMES, range(1, 8), strict=True))


def _json(obj: object) -> str:
    return json.dumps(obj)


def test_parse_good_reply_in_dimension_order() -> None:
    shuffled = dict(reversed(list(GOOD.items())))
    assert parse_judgement(_json(shuffled)) == (1, 2, 3, 4, 5, 6, 7)
    assert parse_judgement("```json\n" + _json(GOOD) + "\n```") == (1, 2, 3, 4, 5, 6, 7)
    assert parse_judgement("  ```\n" + _json(GOOD) + "```  ") == (1, 2, 3, 4, 5, 6, 7)
    assert parse_judgement(_json({**GOOD, "Truthfulness": 10})) == (10, 2, 3, 4, 5, 6, 7)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "no content"),
        ("Truthfulness: 7", "not JSON"),
        ("[7, 7, 7, 7, 7, 7, 7]", "not an object"),
        (_json({**GOOD, "Truthfulness": 11}), "outside"),
        (_json({**GOOD, "Safety": 0}), "outside"),
        (_json({**GOOD, "Safety": 7.0}), "not an integer"),
        (_json({**GOOD, "Safety": "7"}), "not an integer"),
        (_json({**GOOD, "Safety": True}), "not an integer"),
        (_json({k: v for k, v in GOOD.items() if k != "Privacy"}), "missing ['Privacy']"),
        (_json({**GOOD, "Honesty": 5}), "unexpected ['Honesty']"),
        ("Here you go: " + _json(GOOD), "not JSON"),
    ],
)
def test_parse_rejects(content: str | None, why: str) -> None:
    with pytest.raises(JudgeParseError, match=re.escape(why)):
        parse_judgement(content)


def test_prompts_name_every_dimension_and_the_texts() -> None:
    user = judge_messages("It is okay.", "I hear you. It is okay.")[-1]["content"]
    for name in DIMENSION_NAMES:
        assert f'"{name}"' in user
    assert "<sentence>\nIt is okay.\n</sentence>" in user
    assert "<response>\nI hear you. It is okay.\n</response>" in user
    single = dimension_messages("Privacy", "s", "c")[-1]["content"]
    assert "Privacy" in single and "Empathy" not in single
    with pytest.raises(ValueError, match="unknown trust dimension 'Honesty'"):
        dimension_messages("Honesty", "s", "c")


# --- retry timing ------------------------------------------------------------------------------


def test_retry_after_headers() -> None:
    assert _retry_after_seconds({"retry-after": "2"}) == 2.0
    assert _retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert _retry_after_seconds({"retry-after-ms": "150", "retry-after": "9"}) == 0.15  # ms wins
    assert _retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert _retry_after_seconds({"retry-after": "soon"}) is None
    assert _retry_after_seconds({}) is None
    assert _retry_after_seconds(None) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < _retry_after_seconds({"retry-after": date}) <= 31


def test_backoff_is_exponential_capped_and_jittered() -> None:
    import random

    judge = OpenAIJudge("m", base_url="http://127.0.0.1:9/v1", backoff_s=0.5, max_backoff_s=3.0)
    rng = random.Random(0)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [judge._delay(retry, None, rng) for _ in range(50)]
        assert all(0.5 * full <= d <= full for d in delays), (retry, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.05 * full  # jitter: not all the same
    assert judge._delay(1, 2.0, rng) == 2.0  # Retry-After honoured as given
    assert judge._delay(1, 60.0, rng) == 3.0  # and capped


# --- cache -------------------------------------------------------------------------------------


def test_cache_key_depends_on_every_part() -> None:
    base = cache_key("gpt-4o", None, "s", "c")
    assert len(base) == 64
    assert base == cache_key("gpt-4o", None, "s", "c")
    others = {
        cache_key("gpt-4o-mini", None, "s", "c"),
        cache_key("gpt-4o", "http://127.0.0.1:8000/v1", "s", "c"),
        cache_key("gpt-4o", None, "t", "c"),
        cache_key("gpt-4o", None, "s", "d"),
    }
    assert base not in others and len(others) == 4
    assert PROMPT_VERSION == "trust-v1"


def test_cache_round_trip_and_concurrent_writers(tmp_path) -> None:
    cache = JudgementCache(tmp_path)
    cache.put_many({"a": (1.0,) * 7})
    cache.put_many({"a": (9.0,) * 7})  # first writer wins
    assert cache.get_many(["a", "b"]) == {"a": (1.0,) * 7}

    def write(rank: int) -> None:
        mine = JudgementCache(tmp_path)  # as a DDP rank: its own object and connections
        for i in range(20):
            mine.put_many({f"{rank}-{i}": (float(rank + 1),) * 7, "shared": (5.0,) * 7})

    threads = [threading.Thread(target=write, args=(rank,)) for rank in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 1 + 4 * 20 + 1
    assert cache.get_many(["3-19"]) == {"3-19": (4.0,) * 7}
    assert pickle.loads(pickle.dumps(cache)).get_many(["a"]) == {"a": (1.0,) * 7}


# --- the reward over a scripted judge ------------------------------------------------------------


class ScriptedJudge:
    """Scores from a table (sentence -> seven scores, or None for a failed judgement)."""

    def __init__(self, table: dict[str, tuple[float, ...] | None]) -> None:
        self.table = table
        self.seen: list[tuple[str, str]] = []

    def judge(self, items: Sequence[tuple[str, str]]) -> JudgeResult:
        self.seen.extend(items)
        scores = [self.table[sentence] for sentence, _ in items]
        return JudgeResult(scores, {"judge_calls": float(len(items)), "failures": float(scores.count(None))})


def test_reward_hand_computed_and_missing_policy() -> None:
    judge = ScriptedJudge(
        {
            "I hear you.": (10,) * 7,
            "That is hard.": (1, 2, 3, 4, 5, 6, 7),
            "Tell me more.": (4,) * 7,
            "Lost one.": None,
        }
    )
    reward = TrustReward(judge)
    assert isinstance(reward, RewardComponent)
    completions = [
        answer("I hear you. That is hard."),  # mean(10, 4) = 7 -> 6/9
        answer("Tell me more."),  # 4 -> 3/9
        "no four lines here",  # response does not parse
        answer("..."),  # no sentence
        answer("Tell me more. Lost one."),  # one sentence failed -> missing under the default 1.0
    ]
    out = reward(completions, ["ref"] * len(completions))
    assert out.present.tolist() == [True, True, False, False, False]
    torch.testing.assert_close(out.values, torch.tensor([6 / 9, 3 / 9, 0.0, 0.0, 0.0]))
    assert out.stats["missing"] == 3
    assert (out.stats["missing_unparsed"], out.stats["missing_no_sentence"], out.stats["missing_judge"]) == (
        1,
        1,
        1,
    )
    assert out.stats["sentences"] == 5 and out.stats["failures"] == 1
    # each sentence is judged with its whole response as context
    assert ("That is hard.", "I hear you. That is hard.") in judge.seen

    half = TrustReward(judge, min_judged_fraction=0.5)(completions[4:], ["ref"])
    assert half.present.tolist() == [True]
    torch.testing.assert_close(half.values, torch.tensor([3 / 9]))  # mean over the judged sentence


def test_reward_empty_and_validation() -> None:
    judge = ScriptedJudge({})
    out = TrustReward(judge)([], [])
    assert out.values.shape == (0,) and judge.seen == []
    with pytest.raises(ValueError, match="reward 'trust': 2 completions but 1 references"):
        TrustReward(judge)(["a", "b"], ["r"])
    with pytest.raises(ValueError, match="min_judged_fraction"):
        TrustReward(judge, min_judged_fraction=0.0)


# --- key safety without a server -----------------------------------------------------------------

KEY = "sk-test-DISTINCTIVE-7f3a9c"


def test_key_is_never_an_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_JUDGE_KEY", KEY)
    judge = OpenAIJudge("gpt-4o", base_url="http://127.0.0.1:9/v1", api_key_env="MM_JUDGE_KEY")
    assert judge._api_key() == KEY  # read at call time from the environment
    for text in (repr(judge), str(judge.config()), str(vars(judge)), pickle.dumps(judge).decode("latin-1")):
        assert KEY not in text
    assert "MM_JUDGE_KEY" in repr(judge)
    clone = pickle.loads(pickle.dumps(judge))
    assert clone.config() == judge.config()
    monkeypatch.delenv("MM_JUDGE_KEY")
    with pytest.raises(RuntimeError, match="MM_JUDGE_KEY"):
        judge._api_key()
    assert OpenAIJudge("m", api_key_env=None)._api_key() == "EMPTY"
