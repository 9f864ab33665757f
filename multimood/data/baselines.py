"""Trivial baselines for MESC tasks 1-3: the floor any model must beat, per split and task.

* ``majority``: the train split's most frequent label of the task (ties: the first to occur),
  predicted for every sample of every split.
* ``copy-last``: the label of the most recent history turn of the task's role (the client for
  task 1, the therapist for tasks 2 and 3), i.e. the label the prompt's history shows last. A
  sample whose history has no turn of that role gets the majority label; how often that happened
  is reported (``fallbacks``).

Scores are accuracy and weighted F1, the metrics of paper table 4 (section 4.1: "For
classification of the MESC dataset ..., we use Accuracy and Weighted-F1 as metrics"), from
torchmetrics' functional multiclass metrics, so they agree with torchmetrics-based evaluation. Per-utterance samples show the label leak here: their copy-last strategy accuracy
is far above the merged-turn one (``docs/design/mesc-samples.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from multimood.data import labels
from multimood.data.mesc import Sample, Turn, most_frequent


@dataclass(frozen=True)
class Task:
    """One classification task: whose turn it reads, its vocabulary, and how to get the labels."""

    name: str
    role: str
    vocabulary: tuple[str, ...]
    gold: Callable[[Sample], str]
    of_turn: Callable[[Turn], str | None]


TASKS: tuple[Task, ...] = (
    Task("client_emotion", labels.CLIENT, labels.EMOTIONS, lambda s: s.client_emotion, lambda t: t.emotion),
    Task(
        "therapist_emotion",
        labels.THERAPIST,
        labels.EMOTIONS,
        lambda s: s.therapist_emotion,
        lambda t: t.emotion,
    ),
    Task("strategy", labels.THERAPIST, labels.STRATEGIES, lambda s: s.strategy, lambda t: t.strategy),
)
BASELINES: tuple[str, ...] = ("majority", "copy-last")


@dataclass(frozen=True)
class BaselineScore:
    """One row: a baseline's accuracy and weighted F1 (fractions in [0, 1]) on one split and task."""

    split: str
    task: str
    baseline: str
    accuracy: float
    weighted_f1: float
    samples: int
    fallbacks: int = 0  # copy-last: samples with no history turn of the role (majority predicted)


def score(predictions: Sequence[str], gold: Sequence[str], vocabulary: Sequence[str]) -> tuple[float, float]:
    """``(accuracy, weighted F1)`` of label strings, through torchmetrics."""
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} labels")
    if not gold:
        return float("nan"), float("nan")
    index = {label: i for i, label in enumerate(vocabulary)}
    preds = torch.tensor([index[p] for p in predictions])
    target = torch.tensor([index[g] for g in gold])
    n = len(vocabulary)
    accuracy = multiclass_accuracy(preds, target, num_classes=n, average="micro")
    f1 = multiclass_f1_score(preds, target, num_classes=n, average="weighted")
    return float(accuracy), float(f1)


def majority_label(train: Sequence[Sample], task: Task) -> str:
    """The most frequent label of ``task`` among the train samples (ties: the first to occur)."""
    if not train:
        raise ValueError("the majority baseline needs train samples")
    return most_frequent(task.gold(s) for s in train)


def copy_last(sample: Sample, task: Task) -> str | None:
    """The label of the most recent history turn of ``task.role``, None when there is none."""
    for turn in reversed(sample.history):
        if turn.speaker == task.role:
            return task.of_turn(turn)
    return None


def mesc_baselines(samples: Mapping[str, Sequence[Sample]]) -> list[BaselineScore]:
    """Both baselines on every split of ``samples`` (which must include ``train``), for tasks 1-3."""
    rows: list[BaselineScore] = []
    for task in TASKS:
        majority = majority_label(samples["train"], task)
        for split, items in samples.items():
            gold = [task.gold(s) for s in items]
            acc, f1 = score([majority] * len(items), gold, task.vocabulary)
            rows.append(BaselineScore(split, task.name, "majority", acc, f1, len(items)))
            copied = [copy_last(s, task) for s in items]
            fallbacks = sum(label is None for label in copied)
            predictions = [majority if label is None else label for label in copied]
            acc, f1 = score(predictions, gold, task.vocabulary)
            rows.append(BaselineScore(split, task.name, "copy-last", acc, f1, len(items), fallbacks))
    order = {split: i for i, split in enumerate(samples)}
    return sorted(rows, key=lambda r: (order[r.split], [t.name for t in TASKS].index(r.task)))


def format_baselines(rows: Sequence[BaselineScore]) -> str:
    """A table for the terminal (percentages)."""
    lines = [
        "Trivial baselines (majority: the train split's most frequent label; copy-last: the label of the "
        "most recent history turn of that role, majority when the history has none)",
        f"  {'split':<6}{'task':<19}{'baseline':<11}{'acc %':>7}{'w-F1 %':>8}  fallbacks",
    ]
    for r in rows:
        fallback = ""
        if r.baseline == "copy-last":
            share = 100 * r.fallbacks / r.samples if r.samples else 0.0
            fallback = f"{r.fallbacks:,}/{r.samples:,} ({share:.1f}%)"
        lines.append(
            f"  {r.split:<6}{r.task:<19}{r.baseline:<11}{100 * r.accuracy:>7.2f}{100 * r.weighted_f1:>8.2f}  {fallback}"
        )
    return "\n".join(lines)


def baselines_to_dicts(rows: Sequence[BaselineScore]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
