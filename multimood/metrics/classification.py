"""Classification metrics over a fixed label vocabulary, with unparsable predictions counted as wrong.

Every metric here keeps one confusion matrix of counts, rows = true class, columns = predicted
class, with one extra last column for predictions that did not parse (class index
:data:`multimood.data.answer.MISSING`, -1). Counts add up exactly across processes, so the
values under DDP are those of one process over the union of the shards.

Definitions (paper 4.1, tables 3 and 4), on that matrix ``M`` with ``C`` vocabulary classes:

- accuracy (DFEW: WAR) = trace / number of samples; an unparsed prediction is a miss.
- weighted F1 = sum over classes of support_c * F1_c / number of samples, F1_c = 2 TP / (2 TP +
  FP + FN), 0 when a class is neither true nor predicted. This is sklearn's
  ``f1_score(y_true, y_pred, average="weighted")`` with every unparsed prediction written as -1, a
  label outside the vocabulary: that label has no support, so it carries no weight, and each -1
  is a false negative of its true class and a false positive of no vocabulary class.
- recall_c = TP_c / support_c; UAR = mean recall over the classes that occur as targets (sklearn's
  ``balanced_accuracy_score`` with the same -1 mapping); a class that never occurs has recall NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from multimood.data.answer import MISSING
from multimood.data.labels import DFEW_LABELS


def _as_index_tensor(values: Tensor | Sequence[int], name: str) -> Tensor:
    tensor = values if isinstance(values, Tensor) else torch.as_tensor(list(values), dtype=torch.long)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {tensor.dtype}")
    return tensor.reshape(-1).long()


class ConfusionCounts(Metric):
    """Counts of (true class, predicted class) over ``labels``, plus a column for unparsed predictions.

    ``update(preds, target)`` takes class indices: ``target`` in ``0..C-1``, ``preds`` in
    ``0..C-1`` or -1 (:data:`~multimood.data.answer.MISSING`) for an answer that did not parse.
    ``compute()`` returns the ``(C, C + 1)`` count matrix; subclasses turn it into scores.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: Tensor

    def __init__(self, labels: Sequence[str], **kwargs: Any) -> None:
        """
        Args:
            labels: the class names, in class-index order (e.g. ``labels.EMOTIONS``).
            kwargs: passed to :class:`torchmetrics.Metric` (``dist_sync_on_step``, ``process_group``, ...).
        """
        super().__init__(**kwargs)
        if len(labels) < 1 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct and non-empty, got {list(labels)!r}")
        self.labels: tuple[str, ...] = tuple(labels)
        size = len(self.labels)
        self.add_state("confusion", torch.zeros(size, size + 1, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def num_classes(self) -> int:
        """Number of vocabulary classes ``C``."""
        return len(self.labels)

    def update(self, preds: Tensor | Sequence[int], target: Tensor | Sequence[int]) -> None:
        """Add samples: predicted and true class indices (predictions -1 when unparsed)."""
        preds = _as_index_tensor(preds, "preds").to(self.confusion.device)
        target = _as_index_tensor(target, "target").to(self.confusion.device)
        if preds.shape != target.shape:
            raise ValueError(f"preds has {preds.numel()} values but target has {target.numel()}")
        size = self.num_classes
        if target.numel() and (target.min() < 0 or target.max() >= size):
            bad = target[(target < 0) | (target >= size)][0].item()
            raise ValueError(f"target class {bad} outside 0..{size - 1} ({', '.join(self.labels)})")
        if preds.numel() and (preds.min() < MISSING or preds.max() >= size):
            bad = preds[(preds < MISSING) | (preds >= size)][0].item()
            raise ValueError(f"predicted class {bad} outside 0..{size - 1} and not {MISSING} (unparsed)")
        columns = torch.where(preds == MISSING, size, preds)
        flat = torch.bincount(target * (size + 1) + columns, minlength=size * (size + 1))
        self.confusion += flat.view(size, size + 1)

    def compute(self) -> Tensor:
        """The ``(C, C + 1)`` counts: rows true class, columns predicted class, last column unparsed."""
        return self.confusion.clone()

    def confusion_matrix(self) -> Tensor:
        """The ``(C, C + 1)`` counts (last column: unparsed), synchronised across processes."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self.confusion.clone()


def accuracy(confusion: Tensor) -> Tensor:
    """Share of samples predicted right; unparsed predictions are misses (float64 scalar)."""
    confusion = confusion.double()
    return confusion.diagonal().sum() / confusion.sum()


def per_class_recall(confusion: Tensor) -> Tensor:
    """Recall of each vocabulary class (float64, NaN for a class with no true sample)."""
    confusion = confusion.double()
    support = confusion.sum(dim=1)
    return torch.where(support > 0, confusion.diagonal() / support.clamp(min=1), torch.nan)


def unweighted_average_recall(confusion: Tensor) -> Tensor:
    """UAR: mean recall over the classes that occur as targets (float64 scalar)."""
    return per_class_recall(confusion).nanmean()


def weighted_f1(confusion: Tensor) -> Tensor:
    """Support-weighted mean of per-class F1 over the vocabulary (float64 scalar; module docstring)."""
    confusion = confusion.double()
    size = confusion.shape[0]
    true_positive = confusion.diagonal()
    support = confusion.sum(dim=1)
    predicted = confusion[:, :size].sum(dim=0)  # the unparsed column is nobody's positive
    denominator = support + predicted  # 2 TP + FP + FN
    f1 = torch.where(denominator > 0, 2 * true_positive / denominator.clamp(min=1), 0.0)
    return (support * f1).sum() / support.sum()


def _check_not_empty(confusion: Tensor, name: str) -> None:
    if int(confusion.sum()) == 0:
        raise ValueError(f"{name}.compute() with no samples: call update() first")


class TaskClassification(ConfusionCounts):
    """Accuracy and weighted F1 of one MESC task (client emotion, therapist emotion or strategy).

    ``compute()`` gives ``{"accuracy", "weighted_f1"}`` as float64 scalars in [0, 1]; the counts
    behind them are :meth:`confusion_matrix`.
    """

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"accuracy": ..., "weighted_f1": ...}`` over every sample seen (unparsed = wrong)."""
        _check_not_empty(self.confusion, type(self).__name__)
        return {"accuracy": accuracy(self.confusion), "weighted_f1": weighted_f1(self.confusion)}


class DFEWClassification(ConfusionCounts):
    """DFEW video emotion: UAR, WAR and per-class recall (paper table 3).

    Predictions come from :func:`multimood.data.answer.parse_dfew_answer` (``.index``, -1 when
    unparsed); targets are 0-based (official label minus 1). ``compute()`` gives ``uar``, ``war``
    and ``recall/<Class>`` for each class (NaN for a class with no sample).
    """

    def __init__(self, labels: Sequence[str] = DFEW_LABELS, **kwargs: Any) -> None:
        """
        Args:
            labels: the class names in index order; DFEW's seven by default.
            kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(labels, **kwargs)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"uar", "war", "recall/<Class>"...}`` as float64 scalars."""
        _check_not_empty(self.confusion, type(self).__name__)
        recall = per_class_recall(self.confusion)
        result = {"uar": recall.nanmean(), "war": accuracy(self.confusion)}
        result.update({f"recall/{label}": recall[i] for i, label in enumerate(self.labels)})
        return result
