"""Stage D (GRPO) on the tiny multimodal model through a real Trainer: only the LoRA adapter moves,
every documented metric is logged and finite, missing rewards are left out, bad setups are refused."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import MESCDataModule
from lit_modules.grpo import GRPOModule
from multimood.models import (
    AudioProjector,
    AudioTower,
    LanguageModel,
    MambaHistoryCompressor,
    MultiMoodModel,
    STCConnector,
    VisionTower,
)
from multimood.rewards.base import RewardOutput
from multimood.rewards.combine import CombinedReward
from multimood.rewards.format import FormatReward
from multimood.rewards.similarity import SimilarityReward
from multimood.rl.rollout import TransformersRollout

pytestmark = pytest.mark.usefixtures("one_thread")


class LengthReward:
    """Varies with the completion (so groups have a spread); every third completion is missing."""

    name = "length"

    def __init__(self, missing_every: int = 0) -> None:
        self.missing_every = missing_every
        self.calls = 0

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        self.calls += 1
        values = torch.tensor([min(len(c), 200) / 200 for c in completions])
        present = torch.ones(len(completions), dtype=torch.bool)
        if self.missing_every:
            present[:: self.missing_every] = False
        return RewardOutput(values, present, {"calls": 1.0})


def _fused(llm: str = "lora", connector: str = "frozen") -> MultiMoodModel:
    torch.manual_seed(0)
    model = MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable=llm, lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=lambda c, d: STCConnector(c, d, depth=1, trainable=connector),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=lambda c, d: AudioProjector(c, d, trainable="frozen"),
        history_compressor=lambda d: MambaHistoryCompressor(
            d, backbone="tiny:mamba", backbone_trainable="frozen", projector_trainable="frozen"
        ),
    )
    with torch.no_grad():  # LoRA B starts at 0: give it values so that A moves in the first step too
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model


def _data(root: Path) -> MESCDataModule:
    return MESCDataModule(
        str(root),
        clips_dir="clips",
        batch_size=2,
        limit_samples=4,
        num_frames=2,
        max_audio_seconds=1.0,
        seed=1,
    )


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().view(torch.uint8).clone()


def test_grpo_trains_the_adapter_only_and_logs_every_metric(tmp_path: Path, synthetic_mesc: Path) -> None:
    model = _fused()
    before = {n: _bits(p) for n, p in model.named_parameters()}
    length = LengthReward(missing_every=3)
    reward = CombinedReward(
        {"length": length, "similarity": SimilarityReward("tiny:bge-m3"), "format": FormatReward()},
        weights={"length": 1.0, "similarity": 1.0, "format": 0.0},
    )
    module = GRPOModule(
        model,
        reward,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        rollout=TransformersRollout(max_new_tokens=8),
        num_generations=3,
        beta=0.1,
        updates_per_generation=2,
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=4,  # 2 batches x 2 updates
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(module, datamodule=_data(synthetic_mesc))
    assert length.calls == 2  # one reward call per generation batch, all completions at once
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], _bits(p))}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all("lora_" in n and n.startswith("llm.") for n in changed)
    logged = trainer.callback_metrics
    for key in (
        "train/loss",
        "train/reward",
        "train/reward_std",
        "train/reward_missing_fraction",
        "train/zero_std_group_fraction",
        "train/completion_length",
        "train/parse_failure_rate",
        "train/kl",
        "train/clip_fraction",
        "time/generate_seconds",
        "time/reward_seconds",
        "reward/length/mean",
        "reward/length/missing_fraction",
        "reward/similarity/missing_fraction",
        "reward/total/mean",
    ):
        assert key in logged, key
        assert math.isfinite(float(logged[key])), key
    # The random tiny LLM writes nothing that parses: similarity is missing everywhere, and the
    # combined reward is the length reward where it is present (renormalised over what is present).
    assert float(logged["reward/similarity/missing_fraction"]) == 1.0
    assert float(logged["train/reward_missing_fraction"]) == pytest.approx(2 / 6)
    assert 1 <= float(logged["train/completion_length"]) <= 8


def test_a_group_without_rewards_moves_nothing(tmp_path: Path, synthetic_mesc: Path) -> None:
    class Nothing:
        name = "judge"

        def __call__(self, completions, references):
            return RewardOutput.missing(len(completions), {"failures": float(len(completions))})

    model = _fused()
    before = {n: _bits(p) for n, p in model.named_parameters()}
    module = GRPOModule(
        model,
        CombinedReward({"judge": Nothing()}),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        rollout=TransformersRollout(max_new_tokens=4),
        num_generations=2,
        beta=0.5,
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=_data(synthetic_mesc))
    # Every reward missing: no advantage, every completion out of the loss (not scored 0): the
    # loss is exactly 0 and nothing moves.
    assert float(trainer.callback_metrics["train/loss"]) == 0.0
    assert float(trainer.callback_metrics["train/reward_missing_fraction"]) == 1.0
    assert "train/reward" not in trainer.callback_metrics  # no reward to average: not logged as a number
    assert all(torch.equal(before[n], _bits(p)) for n, p in model.named_parameters())


def test_bad_grpo_setups_are_refused() -> None:
    reward = CombinedReward({"length": LengthReward()})
    with pytest.raises(ValueError, match="LoRA adapter"):
        GRPOModule(_fused(llm="full"), reward, beta=0.5)
    with pytest.raises(ValueError, match="video_connector"):
        GRPOModule(_fused(connector="full"), reward)
    with pytest.raises(ValueError, match="num_generations"):
        GRPOModule(_fused(), reward, num_generations=1)
