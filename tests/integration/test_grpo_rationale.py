"""Stage D (GRPO) with the rationale reward: the data option asks for the rationale in the prompt, the
emotion verifier trained with ``train_verifier`` scores it, and the component is logged, missing
where the model writes no rationale, never NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from datamodules import MESCDataModule
from lit_modules.grpo import GRPOModule
from multimood.data.answer import format_answer
from multimood.data.prompt import RATIONALE_INSTRUCTION
from multimood.models import (
    AudioProjector,
    AudioTower,
    LanguageModel,
    MambaHistoryCompressor,
    MultiMoodModel,
    STCConnector,
    VisionTower,
)
from multimood.rewards.combine import CombinedReward
from multimood.rewards.emotion_verifier import EmotionVerifier, train_verifier
from multimood.rewards.rationale import RationaleReward
from multimood.rl.rollout import RolloutOutput, TransformersRollout, completion_mask, eos_token_ids
from tests.tiny_stages import LengthReward, cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

GROUP = 3
FEAR = "She says she is scared and terrified when he shouts."
# One group's completions: a rationale agreeing with its prediction, the same rationale with another
# prediction, and an answer without a rationale (the rationale reward is missing for it).
SCRIPT = (
    f"Rationale: {FEAR}\n" + format_answer("fear", "neutral", "Restatement", "That sounds frightening."),
    f"Rationale: {FEAR}\n" + format_answer("joy", "neutral", "Approval", "Good for you."),
    format_answer("fear", "neutral", "Open question", "What happened then?"),
)


class RecordingRollout:
    """Records the decoded prompts; samples with the tiny LLM, or returns :data:`SCRIPT` per group."""

    def __init__(self, scripted: bool) -> None:
        self.scripted = scripted
        self.sampler = TransformersRollout(max_new_tokens=8)
        self.max_new_tokens = self.sampler.max_new_tokens
        self.prompts: list[str] = []
        self.completions: list[str] = []

    def __call__(self, model, prompt_ids, prompt_mask, blocks) -> RolloutOutput:
        tok = model.tokenizer
        self.prompts += [
            tok.decode(ids[mask.bool()]) for ids, mask in zip(prompt_ids, prompt_mask, strict=True)
        ]
        if not self.scripted:
            out = self.sampler(model, prompt_ids, prompt_mask, blocks)
        else:
            rows = [tok(text + tok.eos_token, add_special_tokens=False)["input_ids"] for text in SCRIPT]
            width = max(map(len, rows))
            padded = torch.tensor([row + [model.pad_token_id] * (width - len(row)) for row in rows])
            ids = padded.repeat(len(prompt_ids) // GROUP, 1).to(prompt_ids.device)
            out = RolloutOutput(ids, completion_mask(ids, eos_token_ids(model)))
        self.completions += tok.batch_decode(out.completion_ids, skip_special_tokens=True)
        return out


def _fused() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=lambda c, d: STCConnector(c, d, depth=1, trainable="frozen"),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=lambda c, d: AudioProjector(c, d, trainable="frozen"),
        history_compressor=lambda d: MambaHistoryCompressor(
            d, backbone="tiny:mamba", backbone_trainable="frozen", projector_trainable="frozen"
        ),
    )


@pytest.fixture(scope="module")
def verifier_dir(synthetic_mesc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verifier")
    train_verifier(synthetic_mesc, out, epochs=5, lr=0.3, seed=0)
    return out


def _run(
    root: Path, verifier: Path, scripted: bool, tmp_path: Path
) -> tuple[dict[str, float], RecordingRollout]:
    rollout = RecordingRollout(scripted)
    reward = CombinedReward({"rationale": RationaleReward(str(verifier)), "length": LengthReward()})
    module = GRPOModule(
        _fused(),
        reward,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        rollout=rollout,
        num_generations=GROUP,
        beta=0.1,
    )
    data = MESCDataModule(
        str(root),
        clips_dir="clips",
        batch_size=2,
        limit_samples=2,
        num_frames=2,
        max_audio_seconds=1.0,
        seed=1,
        rationale=True,
    )
    trainer = cpu_trainer(tmp_path, steps=1)
    trainer.fit(module, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert not [k for k, v in logged.items() if not math.isfinite(v)]
    # The prompts asked for the rationale, as their last line; the references did not get one.
    assert len(rollout.prompts) == 2 * GROUP
    assert all(f"{RATIONALE_INSTRUCTION}<|im_end|>" in p for p in rollout.prompts)
    assert all("Rationale" not in data.datasets["train"][i]["answer"] for i in range(2))
    return logged, rollout


def test_the_random_tiny_llm_writes_no_rationale_and_it_is_reported_missing(
    synthetic_mesc: Path, verifier_dir: Path, tmp_path: Path
) -> None:
    logged, rollout = _run(synthetic_mesc, verifier_dir, scripted=False, tmp_path=tmp_path)
    assert not any("ationale:" in c.lower() for c in rollout.completions)
    assert logged["reward/rationale/missing_fraction"] == 1.0
    assert logged["reward/rationale/no_rationale_fraction"] == 1.0
    assert "reward/rationale/mean" not in logged  # nothing present: not logged as a number
    # The length reward carries the step alone (renormalised over what is present).
    assert logged["train/reward_missing_fraction"] == 0.0
    assert logged["reward/total/mean"] == pytest.approx(logged["reward/length/mean"])
    assert "train/loss" in logged


def test_scripted_rationales_are_scored_by_the_verifier(
    synthetic_mesc: Path, verifier_dir: Path, tmp_path: Path
) -> None:
    logged, rollout = _run(synthetic_mesc, verifier_dir, scripted=True, tmp_path=tmp_path)
    assert rollout.completions == list(SCRIPT) * 2
    verifier = EmotionVerifier.load(verifier_dir)
    probabilities = verifier.probabilities([FEAR])[0]
    p_fear, p_joy = (probabilities[verifier.labels.index(e)].item() for e in ("fear", "joy"))
    assert logged["reward/rationale/missing_fraction"] == pytest.approx(1 / 3)
    assert logged["reward/rationale/no_rationale_fraction"] == pytest.approx(1 / 3)
    assert logged["reward/rationale/mean"] == pytest.approx((p_fear + p_joy) / 2, abs=1e-6)
    top = verifier.labels[int(probabilities.argmax())]
    assert logged["reward/rationale/agreement"] == pytest.approx(((top == "fear") + (top == "joy")) / 2)
    # Total: the mean of both components where the rationale is present, the length alone elsewhere.
    lengths = [min(len(c), 200) / 200 for c in SCRIPT]
    totals = [(p_fear + lengths[0]) / 2, (p_joy + lengths[1]) / 2, lengths[2]]
    assert logged["reward/total/mean"] == pytest.approx(sum(totals) / 3, abs=1e-6)
    # The answers parse (the rationale line is not part of them).
    assert logged["train/parse_failure_rate"] == 0.0
