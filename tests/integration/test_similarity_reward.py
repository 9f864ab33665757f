"""SimilarityReward on the tiny BGE-M3: FlagEmbedding's own combination, one encode per call, missing."""

from __future__ import annotations

import pytest
import torch

from multimood.data.answer import format_answer
from multimood.rewards.similarity import SimilarityReward

pytestmark = pytest.mark.usefixtures("one_thread")


def answer(response: str) -> str:
    return format_answer("sadness", "neutral", "Restatement", response)


RESPONSES = [
    "It sounds like the move left you feeling alone.",
    "Have you talked to your sister about this?",
    "I feel sad today",
    "That must have been frightening for you.",
]
REFERENCES = [
    "It sounds like the move left you feeling alone.",
    "Trains run late when it snows in the mountains.",
    "I am sad",
    "You were scared when he shouted at you.",
]


@pytest.fixture(scope="module")
def reward() -> SimilarityReward:
    return SimilarityReward("tiny:bge-m3", device="cpu", batch_size=3)


def test_the_model_loads_lazily() -> None:
    lazy = SimilarityReward("tiny:bge-m3")
    assert lazy._model is None  # building the object (a config, hparams) loads nothing


def test_scores_equal_flagembedding_compute_score(reward: SimilarityReward) -> None:
    out = reward([answer(r) for r in RESPONSES], [answer(r) for r in REFERENCES])
    assert out.present.all()
    # FlagEmbedding's own pipeline on the same (query = reference, passage = response) pairs, one
    # pair per batch (its batched ColBERT term sees padding vectors; see the module docstring).
    theirs = reward.model.compute_score(
        list(zip(REFERENCES, RESPONSES, strict=True)),
        batch_size=1,
        weights_for_different_modes=[1.0, 0.3, 1.0],
    )
    expected = torch.tensor(theirs["colbert+sparse+dense"], dtype=torch.float64)
    assert ((expected > 0) & (expected < 1)).all()  # inside the clamp: the comparison means something
    torch.testing.assert_close(out.values.double(), expected.clamp(0, 1), atol=1e-5, rtol=0)
    ours = reward.scores(REFERENCES, RESPONSES)
    for part in ("dense", "sparse", "colbert"):
        torch.testing.assert_close(
            ours[part], torch.tensor(theirs[part], dtype=torch.float64), atol=1e-5, rtol=0
        )
    torch.testing.assert_close(ours["combined"], expected, atol=1e-5, rtol=0)
    # The weights are FlagEmbedding's (1, 0.3, 1) / 2.3, checked by hand on one pair.
    hand = (ours["dense"][0] + 0.3 * ours["sparse"][0] + ours["colbert"][0]) / 2.3
    assert ours["combined"][0].item() == pytest.approx(hand.item(), abs=1e-12)


def test_identical_responses_score_higher_than_unrelated(reward: SimilarityReward) -> None:
    reference = answer("It sounds like the move left you feeling alone.")
    out = reward(
        [reference, answer("Trains run late when it snows in the mountains.")],
        [reference, reference],
    )
    assert out.values[0] > out.values[1]
    assert ((out.values >= 0) & (out.values <= 1)).all()


def test_one_batched_encode_per_call_with_unique_texts(reward: SimilarityReward, monkeypatch) -> None:
    model = reward.model
    real_encode = model.encode
    calls: list[list[str]] = []

    def counting_encode(sentences, **kwargs):
        calls.append(list(sentences))
        return real_encode(sentences, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    reference = answer("You were scared when he shouted at you.")
    completions = [answer(r) for r in RESPONSES] * 2  # G = 8 completions of one prompt
    out = reward(completions, [reference] * len(completions))
    assert len(calls) == 1
    # The reference once and each distinct response once.
    assert sorted(calls[0]) == sorted({"You were scared when he shouted at you.", *RESPONSES})
    assert out.present.all() and out.values[:4].tolist() == out.values[4:].tolist()


def test_an_unparsable_response_is_missing_not_zero(reward: SimilarityReward, monkeypatch) -> None:
    reference = answer("You were scared when he shouted at you.")
    out = reward([answer("Tell me more."), "no fields here", "Client's emotion: sadness"], [reference] * 3)
    assert out.present.tolist() == [True, False, False]
    assert out.stats["unparsed_fraction"] == pytest.approx(2 / 3)
    monkeypatch.setattr(reward.model, "encode", lambda *a, **k: pytest.fail("nothing to encode"))
    none = reward(["prose only"], [reference])
    assert not none.present.any() and none.values.tolist() == [0.0]


def test_the_combined_score_is_clamped_to_the_unit_interval(reward: SimilarityReward, monkeypatch) -> None:
    def fake_scores(queries, passages):
        combined = torch.tensor([-0.2, 0.4, 1.3], dtype=torch.float64)
        return {"dense": combined, "sparse": combined, "colbert": combined, "combined": combined}

    monkeypatch.setattr(reward, "scores", fake_scores)
    out = reward([answer("a"), answer("b"), answer("c")], [answer("r")] * 3)
    assert out.values.tolist() == pytest.approx([0.0, 0.4, 1.0])
    assert out.stats["clamped_fraction"] == pytest.approx(2 / 3)
    assert out.stats["unscaled"] == pytest.approx(0.5)


def test_references_must_be_answers(reward: SimilarityReward) -> None:
    with pytest.raises(ValueError, match=r"reference answers at positions \[1\]"):
        reward([answer("a"), answer("b")], [answer("a"), "just text"])
