"""Evaluation by generation, shared by the stages that write answers (C: SFT, D: GRPO and PPO).

Validation and test generate answers from the left-padded prompt (greedy by default), parse and
score them with the data module's metrics (MESC: the four tasks of paper table 4; DFEW: UAR, WAR,
per-class recall), and write ``<run>/<split>/predictions.jsonl`` (the authors' ``label``/``predict``
lines plus ``sample_id``) and ``<run>/<split>/metrics.json``; the logger gets the scalars,
confusion matrices as images and a few generations (never prompts or dialogue histories).

A plain object the stage owns (``self.evaluation = AnswerEvaluation(...)``), not a base class: each
stage still reads top to bottom and calls ``start`` / ``update`` / ``finish`` from its own hooks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lit_modules.common import gather_rows, run_folder, write_results
from multimood.metrics import confusion_image

log = logging.getLogger(__name__)


class AnswerEvaluation:
    """Generated answers of one evaluation loop: metrics, rows, result files, logger output.

    Args:
        max_new_tokens: Longest generated answer.
        num_beams: Beam width (1: greedy, as the authors' inference).
        bertscore_model: Local model (path or name) for BERTScore F1 of the responses; None leaves
            BERTScore out.
        log_generations: Generated answers (with their references) written to the logger as text
            per evaluation; 0 for none.
    """

    def __init__(
        self,
        max_new_tokens: int = 400,
        num_beams: int = 1,
        bertscore_model: str | None = None,
        log_generations: int = 3,
    ) -> None:
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.bertscore_model = bertscore_model
        self.log_generations = log_generations
        self.metrics: Any = None
        self.rows: list[dict[str, Any]] = []

    def start(self) -> None:
        self.rows = []
        if self.metrics is not None:
            self.metrics.reset()

    def task_metrics(self, module: Any) -> Any:
        """The data decides the task, and so the metrics (built on first use, on the module's device)."""
        if self.metrics is None:
            self.metrics = module.trainer.datamodule.make_metrics(bertscore_model=self.bertscore_model)
            self.metrics.to(module.device)
        return self.metrics

    def update(self, module: Any, batch: dict[str, Any]) -> list[str]:
        """Generate this batch's answers, score them and keep their rows. No collective in here:
        evaluation shards may differ by one batch across ranks."""
        predictions = module.model.generate(
            batch, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=False
        )
        self.task_metrics(module).update(predictions, batch["answers"])
        self.rows += [
            {"sample_id": sid, "label": label, "predict": predict}
            for sid, label, predict in zip(batch["sample_ids"], batch["answers"], predictions, strict=True)
        ]
        return predictions

    def finish(self, module: Any, split: str) -> dict[str, float]:
        """Synchronised metrics, result files (rank 0) and logger output; returns the metrics."""
        values = {k: float(v) for k, v in self.task_metrics(module).compute().items()}  # synchronised
        # Collectives on every rank: the rows, the run folder (trainer.log_dir broadcasts it) and
        # the confusion matrices (synchronised again when read).
        rows = gather_rows(self.rows)
        trainer = module.trainer
        folder = run_folder(trainer)
        matrices = getattr(self.metrics, "confusion_matrices", None)
        confusion = matrices() if callable(matrices) else {}
        if trainer.is_global_zero:
            predictions, _ = write_results(folder, split, rows, values)
            log.info("%s: %d answers scored, written to %s", split, len(rows), predictions)
            experiment = getattr(module.logger, "experiment", None)
            self._log_generations(experiment, split, rows, module.global_step)
            self._log_confusion(experiment, split, confusion, module.global_step)
        module.log_dict({f"{split}/{k}": v for k, v in values.items()}, rank_zero_only=True)
        return values

    def _log_generations(self, experiment: Any, split: str, rows: list[dict[str, Any]], step: int) -> None:
        if not self.log_generations or not hasattr(experiment, "add_text"):
            return
        for row in rows[: self.log_generations]:
            text = f"**predicted**\n\n    {row['predict']}\n\n**reference**\n\n    {row['label']}"
            experiment.add_text(f"{split}/generation/{row['sample_id']}", text, step)

    @staticmethod
    def _log_confusion(experiment: Any, split: str, confusion: dict[str, torch.Tensor], step: int) -> None:
        if not hasattr(experiment, "add_image"):
            return
        for task, counts in confusion.items():  # rows: true class; last column: unparsed
            experiment.add_image(f"{split}/confusion/{task}", confusion_image(counts), step)
