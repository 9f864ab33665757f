"""Stage B: projector alignment (paper appendix B.2).

Only the projections train: "the visual and audio encoders remain frozen during training" and the
alignment stage trains "only the projection layers" (the STC connector and the audio projector;
the history compressor's memory projector P_H when asked), with the LLM frozen. The objective is a
data setting, not this module's (``MESCDataModule(target=...)``): ``descriptions`` makes the labels
the clips' generated face/voice descriptions under a media-only prompt (needs them in the train
split: a ``train.json``), ``answer`` (default) the SFT answer.

The paper's config can skip this stage and start stage C from VideoLLaMA2.1-AV's aligned
projectors instead (:func:`multimood.models.checkpoints.load_videollama2_av`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

from lit_modules.common import (
    InitFrom,
    LRSchedule,
    check_stage_trains,
    load_stage_checkpoint,
    save_stage_checkpoint,
    setup_stage,
    store_init_from,
    warmup_optimizers,
)
from multimood.models import MultiMoodModel

PROJECTORS = ("video_connector", "audio_projector")


class ProjectorAlignModule(L.LightningModule):
    """Stage B: train the STC connector and the audio projector (and P_H when asked); all else frozen.

    Args:
        model: The fused model. Its towers, LLM and compressor backbone must be frozen; the
            connector and audio projector must train (their ``trainable`` options).
        optimizer: Optimizer factory over the projections (VideoLLaMA2's alignment: AdamW,
            lr 1e-3, no weight decay).
        lr_schedule: Decay after warmup: ``cosine``, ``linear`` or ``constant``.
        warmup_ratio: Fraction of the optimizer steps spent warming up linearly.
        train_memory_projector: Also train the history compressor's memory projector P_H (its
            backbone stays frozen).
        init_from: Earlier weights to start from (e.g. a stage-A compressor).
    """

    def __init__(
        self,
        model: MultiMoodModel,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = "cosine",
        warmup_ratio: float = 0.03,
        train_memory_projector: bool = False,
        init_from: list[InitFrom] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "init_from"])
        present = [p for p in PROJECTORS if getattr(model, p, None) is not None]
        allowed = present + (["history_compressor"] if train_memory_projector else [])
        check_stage_trains("ProjectorAlignModule", model, allowed=allowed, required=allowed)
        if train_memory_projector:
            backbone = [
                name
                for name, p in model.history_compressor.named_parameters()
                if p.requires_grad and not name.startswith("projector.")
            ]
            if backbone:
                raise ValueError(
                    "ProjectorAlignModule: train_memory_projector trains only the compressor's memory "
                    f"projector, but {backbone[:4]} train too; set the compressor backbone to 'frozen'"
                )
        self.model = model
        self.optimizer_factory = optimizer
        store_init_from(self, init_from)
        self.strict_loading = False

    def setup(self, stage: str) -> None:
        setup_stage(self)

    def configure_optimizers(self) -> dict[str, Any]:
        return warmup_optimizers(self)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch).loss
        self.log("train/loss", loss, batch_size=len(batch["sample_ids"]), prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss = self.model(batch).loss
        self.log("val/loss", loss, batch_size=len(batch["sample_ids"]), sync_dist=True, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)
