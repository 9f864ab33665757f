"""Stage A: ConvCompressor pretraining by history reconstruction (paper 3.2, appendix B.2).

Paper 3.2: the ConvCompressor "is pre-trained with a frozen language model on a reconstruction
task to regenerate the original dialogue history from compressed ``<MEM>`` representations".
Appendix B.2: "Training was performed for 3 epochs on single utterances (learning rate: 2.5e-5)
and 1 epoch on full conversations (learning rate: 1e-4), using AdamW with a weight decay of 0.01.
To stabilize training, we applied a reduce-on-plateau scheduler (factor: 0.5, patience: 1)."

The two phases are two runs of this module (``configs/compressor/*_utterances.yaml``, then
``*_conversations.yaml`` with ``init_from`` the first run's checkpoint), fed by
:class:`datamodules.MESCHistoryDataModule` with ``unit: utterance`` and ``unit: conversation``.
The learning rates live in the YAMLs. Only the compressor (Mamba backbone, ``<MEM>`` vector, P_H)
trains; the LLM is frozen and only carries the gradient back to the memory embeddings.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities.model_helpers import is_overridden
from torchmetrics import MeanMetric

from lit_modules.common import (
    InitFrom,
    check_stage_trains,
    load_stage_checkpoint,
    save_stage_checkpoint,
    setup_stage,
    store_init_from,
    trainable_parameters,
)
from multimood.constants import IGNORE_INDEX
from multimood.models.multimood import MultiMoodModel

log = logging.getLogger(__name__)

STAGE = "stage A (ConvCompressor pretraining)"
VAL_MONITOR = "val/loss"
TRAIN_MONITOR = "train/loss"


def supervised_token_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, total)`` next-token predictions on supervised positions.

    logits (B, S, V) and labels (B, S) are aligned as the LM's input (the loss shifts them): the
    prediction at position t is scored against the label at t + 1, where that label is not ignored.
    """
    predicted = logits[:, :-1].argmax(dim=-1)  # (B, S-1)
    target = labels[:, 1:]  # (B, S-1)
    supervised = target != IGNORE_INDEX
    correct = (predicted == target) & supervised
    return correct.sum(), supervised.sum()


def validates_every_epoch(trainer: L.Trainer) -> bool:
    """Whether a ``fit`` run validates at the end of every training epoch (what ``val/loss``
    plateau scheduling needs); False when it does not validate at all.

    Raises ``ValueError`` when it validates only every few epochs: a plateau scheduler on
    ``val/loss`` would find no value at the other epochs' ends.
    """
    if trainer.limit_val_batches == 0:
        return False
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    if not source.is_defined():
        return False
    module = trainer.lightning_module
    if not is_overridden("validation_step", module):
        return False
    every = trainer.check_val_every_n_epoch
    if every is not None and every != 1:
        raise ValueError(
            f"{STAGE}: check_val_every_n_epoch={every}, but the reduce-on-plateau scheduler steps on "
            f"{VAL_MONITOR} at every epoch end; use check_val_every_n_epoch=1, or limit_val_batches=0 to "
            f"schedule on {TRAIN_MONITOR}"
        )
    return True


class CompressorPretrainModule(L.LightningModule):
    """ConvCompressor pretraining: a frozen LLM writes the history back from ``<MEM>`` embeddings.

    The loss is the LLM's cross-entropy on the reconstruction text (the prompt and the spliced
    memory positions are not supervised). Logged: ``train/loss``, ``val/loss`` (weighted by
    supervised tokens over the whole validation set) and ``train/token_accuracy``,
    ``val/token_accuracy`` (argmax of the shifted logits on supervised tokens). No text is logged.

    Args:
        model: The fused MultiMoodModel with only ``llm`` and ``history_compressor`` (no towers).
            The LLM must be frozen and the compressor must train (Mamba in full or with LoRA, and
            P_H); anything else is refused before training starts.
        optimizer: Optimizer factory over the trainable parameters. Paper: AdamW, weight decay
            0.01, lr 2.5e-5 (utterances) then 1e-4 (conversations); set them in the YAML.
        plateau_factor: ReduceLROnPlateau factor (paper: 0.5).
        plateau_patience: ReduceLROnPlateau patience in epochs (paper: 1). The scheduler steps at
            every epoch end on ``val/loss``, or on ``train/loss`` when the run has no validation
            (``limit_val_batches: 0``); the choice is logged.
        init_from: Weights of an earlier run to start from, by value (phase 2 starts from phase 1:
            ``[{path: .../last.ckpt, components: [history_compressor]}]``). Not a resume: optimizer,
            scheduler and step start fresh. Resuming an interrupted run is ``--ckpt_path``.
    """

    def __init__(
        self,
        model: MultiMoodModel,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        plateau_factor: float = 0.5,
        plateau_patience: int = 1,
        init_from: list[InitFrom] | None = None,
    ) -> None:
        super().__init__()
        towers = [name for name in ("vision_tower", "audio_tower") if getattr(model, name, None) is not None]
        if towers:
            raise ValueError(
                f"{STAGE}: the model carries {towers}; this stage reads no media, give the MultiMoodModel "
                "only llm and history_compressor"
            )
        if model.history_compressor is None:
            raise ValueError(f"{STAGE}: the model has no history_compressor to pretrain")
        check_stage_trains(STAGE, model, allowed={"history_compressor"}, required={"history_compressor"})
        if not 0 < plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {plateau_factor}")
        if plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {plateau_patience}")
        self.save_hyperparameters(ignore=["model", "optimizer", "init_from"])
        self.model = model
        self.optimizer_factory = optimizer
        self.plateau_factor = plateau_factor
        self.plateau_patience = plateau_patience
        store_init_from(self, init_from)
        # Checkpoints hold only the compressor; the frozen LLM is rebuilt from the config.
        self.strict_loading = False
        self.val_loss = MeanMetric()
        self.val_token_accuracy = MeanMetric()
        self.plateau_monitor: str | None = None

    # ------------------------------------------------------------------ setup and checkpoints
    def setup(self, stage: str) -> None:
        setup_stage(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)

    # ------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (mean over supervised tokens), correct predictions and supervised tokens."""
        # The spliced labels, not the batch's: the memory embeddings shift every position.
        inputs = self.model.prepare_inputs(batch, padding_side="right")
        out = self.model.llm(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            labels=inputs.labels,
        )
        correct, total = supervised_token_counts(out.logits.detach(), inputs.labels)
        return out.loss, correct, total

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, correct, total = self._step(batch)
        size = batch["input_ids"].shape[0]
        self.log(TRAIN_MONITOR, loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        accuracy = correct.float() / total.clamp(min=1)
        self.log("train/token_accuracy", accuracy, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, correct, total = self._step(batch)
        size = batch["input_ids"].shape[0]
        # Weighted by supervised tokens, so the epoch value is the loss over all validation tokens
        # whatever the batch composition (and the same on any number of processes).
        weight = total.float()
        self.val_loss.update(loss.detach().float(), weight)
        self.val_token_accuracy.update(correct.float() / total.clamp(min=1), weight)
        self.log(VAL_MONITOR, self.val_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("val/token_accuracy", self.val_token_accuracy, on_step=False, on_epoch=True, batch_size=size)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(trainable_parameters(self.model))
        self.plateau_monitor = VAL_MONITOR if validates_every_epoch(self.trainer) else TRAIN_MONITOR
        log.info(
            "%s: ReduceLROnPlateau(factor=%s, patience=%s) steps on %s at every epoch end",
            STAGE,
            self.plateau_factor,
            self.plateau_patience,
            self.plateau_monitor,
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.plateau_monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }
