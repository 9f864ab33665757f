"""All MESC test metrics of paper table 4 from answer texts, in one metric.

``MESCMetrics.update(predictions, references)`` takes the generated and the reference answers
(the four-line format of paper figure 4, as text or already parsed), parses each once with
:func:`multimood.data.answer.parse_answer`, and feeds the task metrics. ``compute()`` returns one
flat dict (fractions in [0, 1], float64 scalars):

``client_emotion/accuracy``, ``client_emotion/weighted_f1``, ``therapist_emotion/accuracy``,
``therapist_emotion/weighted_f1``, ``strategy/accuracy``, ``strategy/weighted_f1``,
``response/bleu2`` (corpus BLEU-2), ``response/bleu2_authors`` (the authors' near-BLEU-1 mean),
``response/rouge_l``, ``response/bertscore_f1`` (only with a BERTScore model),
``parse_failure_rate`` (share of predictions with any field unparsed) and ``num_samples``.

A prediction field that does not parse is wrong for its task, never dropped (see
:mod:`multimood.metrics.classification` and :mod:`multimood.metrics.text`). A reference answer
must parse completely: a gold answer that does not is a data error and raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from multimood.data.answer import ParsedAnswer, parse_answer
from multimood.data.labels import EMOTIONS, STRATEGIES
from multimood.metrics.classification import TaskClassification
from multimood.metrics.text import ROUGEL, BERTScoreF1, CorpusBLEU, MeanSentenceBLEU

# task name in the metric keys -> (answer field, its vocabulary)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "client_emotion": ("client_emotion", EMOTIONS),
    "therapist_emotion": ("therapist_emotion", EMOTIONS),
    "strategy": ("strategy", STRATEGIES),
}


def _parsed(answer: str | ParsedAnswer, what: str, index: int) -> ParsedAnswer:
    if isinstance(answer, ParsedAnswer):
        return answer
    if not isinstance(answer, str):
        raise TypeError(
            f"{what} {index} of the batch is a {type(answer).__name__}, not a string or ParsedAnswer"
        )
    return parse_answer(answer)


class MESCMetrics(Metric):
    """Paper table 4 in one metric: three classification tasks, the response metrics and the parse-failure rate.

    Children (each a torchmetrics metric, synchronised on its own under DDP): ``tasks`` (one
    :class:`~multimood.metrics.classification.TaskClassification` per task), ``bleu2``,
    ``bleu2_authors``, ``rouge_l`` and, with a model, ``bertscore``. :meth:`confusion_matrices`
    gives the counts behind the classification scores.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: scores go up, parse_failure_rate goes down
    full_state_update = False
    num_samples: Tensor
    num_failed: Tensor

    def __init__(
        self,
        bertscore_model: str | None = None,
        bertscore_layers: int | None = None,
        bertscore_batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            bertscore_model: encoder for BERTScore F1 (hub id, local folder, or ``tiny:``/``packaged:``
                name). None leaves ``response/bertscore_f1`` out. The paper's is ``roberta-large``.
            bertscore_layers: hidden layer BERTScore compares; None takes bert_score's tuned layer
                for known hub ids (17 for roberta-large); a local folder needs it set.
            bertscore_batch_size: sentences per BERTScore encoder batch.
            kwargs: passed to :class:`torchmetrics.Metric` and to every child metric.
        """
        super().__init__(**kwargs)
        self.tasks = torch.nn.ModuleDict(
            {name: TaskClassification(labels, **kwargs) for name, (_, labels) in TASKS.items()}
        )
        self.bleu2 = CorpusBLEU(**kwargs)
        self.bleu2_authors = MeanSentenceBLEU(**kwargs)
        self.rouge_l = ROUGEL(**kwargs)
        self.bertscore: BERTScoreF1 | None = None
        if bertscore_model is not None:
            self.bertscore = BERTScoreF1(
                bertscore_model, num_layers=bertscore_layers, batch_size=bertscore_batch_size, **kwargs
            )
        self.add_state("num_samples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_failed", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _children(self) -> list[Metric]:
        children: list[Metric] = [*self.tasks.values(), self.bleu2, self.bleu2_authors, self.rouge_l]  # type: ignore[list-item]
        return children + ([self.bertscore] if self.bertscore is not None else [])

    def update(
        self, predictions: Sequence[str | ParsedAnswer], references: Sequence[str | ParsedAnswer]
    ) -> None:
        """Add a batch of generated answers and their reference answers (texts or parsed)."""
        if isinstance(predictions, str) or isinstance(references, str):
            raise TypeError("predictions and references must be sequences of answers, not one string")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        preds = [_parsed(p, "prediction", i) for i, p in enumerate(predictions)]
        refs = [_parsed(r, "reference", i) for i, r in enumerate(references)]
        for i, ref in enumerate(refs):
            if not ref.ok:
                raise ValueError(f"reference answer {i} of the batch does not parse ({ref.reason})")
        if not preds:
            return
        for name, (field, _) in TASKS.items():
            self.tasks[name].update(
                [getattr(p, f"{field}_index") for p in preds], [getattr(r, f"{field}_index") for r in refs]
            )
        hypotheses = [p.response for p in preds]
        gold = [r.response for r in refs]
        for metric in (self.bleu2, self.bleu2_authors, self.rouge_l, self.bertscore):
            if metric is not None:
                metric.update(hypotheses, gold)
        self.num_samples += len(preds)
        self.num_failed += sum(not p.ok for p in preds)

    def compute(self) -> dict[str, Tensor]:
        """The flat dict of the module docstring (float64 scalars; ``num_samples`` an integer)."""
        if int(self.num_samples) == 0:
            raise ValueError("MESCMetrics.compute() with no samples: call update() first")
        result: dict[str, Tensor] = {}
        for name, metric in self.tasks.items():
            for key, value in metric.compute().items():
                result[f"{name}/{key}"] = value
        result["response/bleu2"] = self.bleu2.compute()
        result["response/bleu2_authors"] = self.bleu2_authors.compute()
        result["response/rouge_l"] = self.rouge_l.compute()
        if self.bertscore is not None:
            result["response/bertscore_f1"] = self.bertscore.compute()
        result["parse_failure_rate"] = self.num_failed.double() / self.num_samples
        result["num_samples"] = self.num_samples.clone()
        return result

    def confusion_matrices(self) -> dict[str, Tensor]:
        """Per task, the ``(C, C + 1)`` counts (rows true, columns predicted, last column unparsed).

        Labels in index order are ``TASKS[task][1]``; synchronised across processes under DDP.
        """
        return {name: metric.confusion_matrix() for name, metric in self.tasks.items()}

    def forward(
        self, predictions: Sequence[str | ParsedAnswer], references: Sequence[str | ParsedAnswer]
    ) -> None:
        """Calling the metric only accumulates (as :meth:`update`): a per-batch value of every
        response metric would cost a second BERTScore pass, and torchmetrics' batch-value path
        resets state that lives in the children. Read the scores with :meth:`compute`."""
        self.update(predictions, references)

    def reset(self) -> None:
        """Clear this metric and every child."""
        super().reset()
        for child in self._children():
            child.reset()
