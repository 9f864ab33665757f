"""What the stage tests share: the tiny fused model, a small MESC data module, a quiet CPU trainer,
and bit-exact parameter snapshots (to assert exactly which parameters a stage moved)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from datamodules import MESCDataModule
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


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes: equal only when every value is bit-identical."""
    return tensor.detach().contiguous().view(torch.uint8).clone()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: bits(p) for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Names of the parameters whose bits differ from ``before``."""
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], bits(p))}


def lora_b_nonzero(model: MultiMoodModel) -> None:
    """LoRA B starts at zero (the adapter is a no-op and A gets no gradient): give it values, as after SFT."""
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)


def fused_model(
    llm: str = "lora", projectors: str = "frozen", media: bool = True, seed: int = 0, lora_b: bool = False
) -> MultiMoodModel:
    """The tiny fused model: LLM (``llm`` trainable mode, LoRA r4), SigLIP + STC and BEATs + projector
    (``projectors`` mode) when ``media``, and the frozen Mamba compressor."""
    torch.manual_seed(seed)
    parts = {}
    if media:
        parts = {
            "vision_tower": VisionTower("tiny:siglip"),
            "video_connector": lambda c, d: STCConnector(c, d, depth=1, trainable=projectors),
            "audio_tower": AudioTower("tiny:beats"),
            "audio_projector": lambda c, d: AudioProjector(c, d, trainable=projectors),
        }
    model = MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable=llm, lora_r=4, lora_alpha=8),
        history_compressor=lambda d: MambaHistoryCompressor(
            d, backbone="tiny:mamba", backbone_trainable="frozen", projector_trainable="frozen"
        ),
        **parts,
    )
    if lora_b:
        lora_b_nonzero(model)
    return model


def mesc_data(root: Path, media: bool = True, **overrides) -> MESCDataModule:
    """A MESC data module over a few samples with short media."""
    options = dict(batch_size=2, limit_samples=4, num_frames=2, max_audio_seconds=1.0, seed=1)
    options.update(overrides)
    return MESCDataModule(str(root), clips_dir="clips" if media else None, **options)


def cpu_trainer(root: Path, steps: int, **overrides) -> L.Trainer:
    """A deterministic CPU trainer with no logger, progress bar, summary, checkpoints or validation."""
    options = dict(
        default_root_dir=root,
        max_steps=steps,
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    options.update(overrides)
    return L.Trainer(**options)


def sgd(params):
    return torch.optim.SGD(params, lr=0.05)


class LengthReward:
    """A cheap reward that varies with the completion (so GRPO groups have a spread): its length in
    characters over 200, capped at 1. ``missing_every=k`` reports every k-th value missing. Module
    level, so that spawned DDP ranks can unpickle it; ``calls`` counts the calls."""

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
