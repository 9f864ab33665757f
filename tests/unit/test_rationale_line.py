"""A ``Rationale:`` line (the rationale reward's, asked for by ``rationale: true``) is never answer text:
the parser, the MESC metrics and the similarity and trust rewards see the same answer with or without it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from multimood.data.answer import format_answer, parse_answer
from multimood.metrics import MESCMetrics
from multimood.rewards.base import responses
from multimood.rewards.similarity import SimilarityReward
from multimood.rewards.trust import JudgeResult, TrustReward

pytestmark = pytest.mark.usefixtures("one_thread")

FOUR = format_answer(
    "sadness", "neutral", "Restatement", "It sounds like the move left you alone. That is hard."
)
# The rationale mentions field names with colons on purpose: they must not become fields.
RATIONALE = "Rationale: Her voice breaks; the client's emotion: joy is unlikely, therapist's response: calm."
FIRST = f"{RATIONALE}\n{FOUR}"  # as the prompt asks
LAST = f"{FOUR}\n{RATIONALE}"  # a model that puts it after the response
BOLD_LAST = f"{FOUR}\n**Rationale:** she cries every night."
REFERENCE = format_answer("sadness", "sadness", "Approval", "You did well to tell me. Moving is hard.")


@pytest.mark.parametrize("text", [FIRST, LAST, BOLD_LAST], ids=["first", "last", "bold-last"])
def test_the_parser_ignores_the_rationale_line(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.ok, parsed.reason
    assert parsed == parse_answer(FOUR)
    assert parsed.response == "It sounds like the move left you alone. That is hard."
    assert parsed.client_emotion == "sadness"  # not the "joy" written inside the rationale


def test_without_the_blanking_the_rationale_would_reach_the_response() -> None:
    # What the blanking guards against: any other trailing line is read as part of the response.
    assert parse_answer(f"{FOUR}\nReason: she cries.").response.endswith("Reason: she cries.")
    # A response that merely contains the word keeps it.
    text = format_answer("joy", "joy", "Approval", "Your rationale: sound, and brave.")
    assert parse_answer(text).response == "Your rationale: sound, and brave."


def test_the_metrics_score_the_same_with_and_without_the_rationale() -> None:
    scores = []
    for answers in ([FOUR, FOUR], [FIRST, LAST]):
        metrics = MESCMetrics()
        metrics.update(answers, [REFERENCE, REFERENCE])
        scores.append(metrics.compute())
    assert scores[0].keys() == scores[1].keys()
    for key in scores[0]:
        torch.testing.assert_close(scores[1][key], scores[0][key], msg=key)
    assert float(scores[1]["parse_failure_rate"]) == 0.0


class RecordingJudge:
    """Scores every sentence 10 on every dimension and remembers what it was asked."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def judge(self, items: Sequence[tuple[str, str]]) -> JudgeResult:
        self.items.extend(items)
        return JudgeResult([(10,) * 7 for _ in items], {"judge_calls": float(len(items))})


def test_the_trust_reward_judges_only_the_response() -> None:
    assert responses([FIRST, LAST]) == responses([FOUR, FOUR])
    judge = RecordingJudge()
    out = TrustReward(judge)([FIRST, LAST], [REFERENCE, REFERENCE])
    assert out.present.tolist() == [True, True] and out.values.tolist() == [1.0, 1.0]
    response = "It sounds like the move left you alone. That is hard."
    assert (
        judge.items
        == [
            ("It sounds like the move left you alone.", response),
            ("That is hard.", response),
        ]
        * 2
    )
    assert not any("ationale" in s or "ationale" in c for s, c in judge.items)


def test_the_similarity_reward_scores_only_the_response() -> None:
    reward = SimilarityReward("tiny:bge-m3", device="cpu")
    polluted = FOUR.replace("That is hard.", "That is hard. " + RATIONALE.removeprefix("Rationale: "))
    out = reward([FIRST, LAST, FOUR, polluted], [REFERENCE] * 4)
    assert out.present.all()
    torch.testing.assert_close(out.values[:2], out.values[2:3].expand(2))
    # The scorer does see the response: the rationale's words inside it change the score.
    assert abs(out.values[3] - out.values[2]) > 1e-4
