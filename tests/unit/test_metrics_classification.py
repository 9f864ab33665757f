"""Classification metrics: hand-computed cases, and sklearn as the oracle with unparsed predictions as -1."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from multimood.data.answer import MISSING
from multimood.data.labels import DFEW_LABELS, EMOTIONS, STRATEGIES
from multimood.metrics import DFEWClassification, TaskClassification


def test_hand_computed_accuracy_and_weighted_f1() -> None:
    # class 0: TP 1, FP 1 (true 1 predicted 0), FN 1 (the unparsed one) -> F1 = 2/(2+1+1) = 1/2
    # class 1: TP 1, FP 0, FN 1 -> F1 = 2/3;  class 2: TP 1 -> F1 = 1
    # weighted by support (2, 2, 1) over 5 samples: (2 * 1/2 + 2 * 2/3 + 1) / 5 = 2/3
    metric = TaskClassification(EMOTIONS)
    metric.update(torch.tensor([0, MISSING, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 2]))
    result = metric.compute()
    assert result["accuracy"].item() == pytest.approx(3 / 5, abs=1e-12)
    assert result["weighted_f1"].item() == pytest.approx(2 / 3, abs=1e-12)
    confusion = metric.confusion_matrix()
    assert confusion.shape == (len(EMOTIONS), len(EMOTIONS) + 1)
    assert confusion[0, len(EMOTIONS)] == 1  # the unparsed prediction has its own column
    assert confusion[1, 0] == 1 and confusion.sum() == 5


def test_all_unparsed_scores_zero_not_nan() -> None:
    metric = TaskClassification(STRATEGIES)
    metric.update([MISSING, MISSING, MISSING], [0, 3, 3])
    assert metric.compute()["accuracy"].item() == 0.0
    assert metric.compute()["weighted_f1"].item() == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("labels", [EMOTIONS, STRATEGIES], ids=["emotions", "strategies"])
def test_equals_sklearn_with_unparsed_as_minus_one(seed: int, labels: tuple[str, ...]) -> None:
    g = torch.Generator().manual_seed(seed)
    size = len(labels)
    # skewed targets (some classes never occur), predictions with ~20% unparsed
    target = torch.randint(0, size - 2, (300,), generator=g)
    preds = torch.where(
        torch.rand(300, generator=g) < 0.5, target, torch.randint(0, size, (300,), generator=g)
    )
    preds[torch.rand(300, generator=g) < 0.2] = MISSING
    metric = TaskClassification(labels)
    for start in range(0, 300, 70):  # several updates accumulate
        metric.update(preds[start : start + 70], target[start : start + 70])
    result = metric.compute()
    y_true, y_pred = target.tolist(), preds.tolist()
    assert result["accuracy"].item() == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    expected = f1_score(y_true, y_pred, average="weighted", zero_division=0)
    assert result["weighted_f1"].item() == pytest.approx(expected, abs=1e-12)
    # dropping the unparsed samples (the authors' scorer) gives a different, higher number
    kept = [i for i, p in enumerate(y_pred) if p != MISSING]
    dropped = f1_score([y_true[i] for i in kept], [y_pred[i] for i in kept], average="weighted")
    assert dropped > result["weighted_f1"].item() + 0.05


def test_dfew_uar_war_and_per_class_recall_hand_computed() -> None:
    # Happy: 2 of 3 right; Sad: 1 of 2 (one unparsed); Neutral: 1 of 1; the other four never occur.
    metric = DFEWClassification()
    metric.update([0, 0, 1, 1, MISSING, 2], [0, 0, 0, 1, 1, 2])
    result = metric.compute()
    assert result["war"].item() == pytest.approx(4 / 6)
    assert result["uar"].item() == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["recall/Happy"].item() == pytest.approx(2 / 3)
    assert result["recall/Sad"].item() == pytest.approx(1 / 2)
    assert math.isnan(result["recall/Fear"].item())  # no Fear sample: undefined, not 0
    assert set(result) == {"uar", "war", *(f"recall/{label}" for label in DFEW_LABELS)}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_dfew_equals_sklearn() -> None:
    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 7, (500,), generator=g)
    preds = torch.where(torch.rand(500, generator=g) < 0.6, target, torch.randint(0, 7, (500,), generator=g))
    preds[torch.rand(500, generator=g) < 0.1] = MISSING
    metric = DFEWClassification()
    metric.update(preds, target)
    result = metric.compute()
    y_true, y_pred = target.tolist(), preds.tolist()
    assert result["war"].item() == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert result["uar"].item() == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    recalls = recall_score(y_true, y_pred, labels=list(range(7)), average=None, zero_division=0)
    for i, label in enumerate(DFEW_LABELS):
        assert result[f"recall/{label}"].item() == pytest.approx(recalls[i], abs=1e-12)


@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        ([0, 1], [0], "preds has 2 values but target has 1"),
        ([0], [7], r"target class 7 outside 0\.\.6"),
        ([0], [-1], r"target class -1 outside 0\.\.6"),
        ([-2], [0], r"predicted class -2 outside 0\.\.6 and not -1"),
        ([7], [0], r"predicted class 7 outside"),
    ],
)
def test_bad_indices_are_named(preds: list[int], target: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TaskClassification(EMOTIONS).update(preds, target)


def test_float_input_and_empty_compute_refused() -> None:
    metric = TaskClassification(EMOTIONS)
    with pytest.raises(TypeError, match="integer class indices"):
        metric.update(torch.tensor([0.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()
    with pytest.raises(ValueError, match="distinct"):
        TaskClassification(["a", "a"])
