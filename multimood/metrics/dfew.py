"""DFEW from answer texts: the generated ``Emotion: <class>`` answers scored as paper table 3."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from multimood.data.answer import parse_dfew_answer
from multimood.metrics.classification import DFEWClassification


class DFEWAnswerMetrics(DFEWClassification):
    """UAR, WAR and per-class recall from generated answers, plus the parse-failure rate.

    ``update(predictions, references)`` takes answer texts; a prediction that does not parse counts
    wrong (the confusion matrix's unparsed column), a reference that does not parse is an error.
    ``compute()`` adds ``parse_failure_rate`` and ``num_samples`` to :class:`DFEWClassification`'s
    ``uar``, ``war`` and ``recall/<Class>``.
    """

    higher_is_better = None

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:  # type: ignore[override]
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        targets = []
        for i, reference in enumerate(references):
            parsed = parse_dfew_answer(reference)
            if not parsed.ok:
                raise ValueError(f"reference answer {i} of the batch does not parse: {parsed.error}")
            targets.append(parsed.index)
        super().update([parse_dfew_answer(p).index for p in predictions], targets)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        result = super().compute()
        total = self.confusion.sum()
        result["parse_failure_rate"] = self.confusion[:, -1].sum().double() / total
        result["num_samples"] = total.double()
        return result

    def confusion_matrices(self) -> dict[str, Tensor]:
        """``{"emotion": (C, C + 1) counts}`` (last column: unparsed), as MESCMetrics gives per task."""
        return {"emotion": self.confusion_matrix()}


def confusion_image(counts: Tensor, cell: int = 16) -> Tensor:
    """A (1, H, W) grey image of a confusion matrix, each row scaled by its true-class count
    (white = all of the row), for TensorBoard's ``add_image`` without a plotting library."""
    counts = counts.detach().double().cpu()
    rows = counts.sum(dim=1, keepdim=True).clamp(min=1)
    image = (counts / rows).float()
    return image.repeat_interleave(cell, 0).repeat_interleave(cell, 1).unsqueeze(0)


__all__ = ["DFEWAnswerMetrics", "confusion_image"]
