"""Stage C: supervised fine-tuning of the fused model (paper appendix B.2), on MESC or DFEW.

The paper: "we fine-tune the LLM with QLoRA ... while keeping the pre-trained audio-visual
projectors and ConvCom frozen" (appendix B.2). What trains is the model config's business (each
component's ``trainable`` option); this module trains whatever does, checks it is a sensible SFT
set, and evaluates by generating answers:

- training: teacher-forced cross-entropy on the answer tokens (``train/loss``);
- validation and test: the same loss (``val/loss``), then greedy (by default) batched generation
  from the left-padded prompt, parsed into the tasks and scored with the data module's metrics
  (MESC: the four tasks of paper table 4; DFEW: UAR, WAR, per-class recall). Results go to
  ``<run>/<split>/predictions.jsonl`` (the authors' ``label``/``predict`` lines plus ``sample_id``)
  and ``<run>/<split>/metrics.json``, and to the logger (``val/...``, ``test/...``).
"""

from __future__ import annotations

import logging
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
from lit_modules.evaluation import AnswerEvaluation
from multimood.models import MultiMoodModel

log = logging.getLogger(__name__)

# Parts that SFT may train. Towers are left out: the paper keeps both encoders frozen throughout.
SFT_TRAINABLE = ("llm", "video_connector", "audio_projector", "history_compressor")


class SFTModule(L.LightningModule):
    """Stage C: (Q)LoRA SFT of the fused model on the four-task answer (or DFEW's emotion).

    Args:
        model: The fused model; its components' ``trainable`` options say what trains (paper: LoRA
            on the LLM, every other part frozen).
        optimizer: Optimizer factory over the trainable parameters (paper: AdamW, lr 2e-5,
            weight decay 0).
        lr_schedule: Decay after warmup: ``cosine`` (VideoLLaMA2's and the authors' scripts),
            ``linear`` or ``constant``.
        warmup_ratio: Fraction of the run's optimizer steps spent warming up linearly (paper 0.03).
        init_from: Earlier stages' weights to start from (stage A's ``history_compressor``, stage
            B's ``video_connector``/``audio_projector``); a resume is ``--ckpt_path`` instead.
        generate_on_validation: Generate and score answers in the validation loops of a fit (test
            always does, and so does ``--run validate``); off keeps them to the teacher-forced loss.
        max_new_tokens: Longest generated answer (MESC answers reach ~390 tokens).
        num_beams: Beam width (1: greedy, as the authors' inference).
        bertscore_model: Local model (path or name) for BERTScore F1 of the responses; None
            leaves BERTScore out.
        log_generations: Generated answers (with their references) written to the logger as text
            per evaluation; 0 for none. Prompts and dialogue histories are never logged.
    """

    def __init__(
        self,
        model: MultiMoodModel,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = "cosine",
        warmup_ratio: float = 0.03,
        init_from: list[InitFrom] | None = None,
        generate_on_validation: bool = True,
        max_new_tokens: int = 400,
        num_beams: int = 1,
        bertscore_model: str | None = None,
        log_generations: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "init_from"])
        check_stage_trains("SFTModule", model, allowed=SFT_TRAINABLE)
        self.model = model
        self.optimizer_factory = optimizer
        store_init_from(self, init_from)
        # Checkpoints hold only what trains; frozen parts come back from the config.
        self.strict_loading = False
        self.evaluation = AnswerEvaluation(max_new_tokens, num_beams, bertscore_model, log_generations)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        setup_stage(self)

    def configure_optimizers(self) -> dict[str, Any]:
        return warmup_optimizers(self)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch).loss
        self.log("train/loss", loss, batch_size=len(batch["sample_ids"]), prog_bar=True)
        return loss

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, "val", generate=self._generates_in_validation())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, "test", generate=True)

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def on_validation_epoch_end(self) -> None:
        if self._generates_in_validation() and not self.trainer.sanity_checking:
            self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _generates_in_validation(self) -> bool:
        return self.hparams.generate_on_validation or self.trainer.state.fn == "validate"

    def _start_evaluation(self) -> None:
        self.evaluation.start()

    def _evaluate_batch(self, batch: dict[str, Any], split: str, generate: bool) -> None:
        size = len(batch["sample_ids"])
        self.log(f"{split}/loss", self.model(batch).loss, batch_size=size, sync_dist=True)
        if generate and not self.trainer.sanity_checking:
            self.evaluation.update(self, batch)

    def _finish_evaluation(self, split: str) -> None:
        self.evaluation.finish(self, split)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)
