"""torchmetrics metrics for the four MESC tasks (paper table 4) and DFEW (paper table 3).

- :mod:`.classification`: accuracy, weighted F1, UAR/WAR/per-class recall over a confusion matrix
  with a column for unparsed predictions.
- :mod:`.text`: corpus BLEU, the authors' mean sentence BLEU, ROUGE-L, BERTScore.
- :mod:`.mesc`: :class:`MESCMetrics`, all of table 4 from answer texts.
- :mod:`.score`: ``multimood score PREDICTIONS.jsonl``.

Definitions and differences from the authors' scorer: docs/design/metrics.md.
"""

from multimood.metrics.classification import (
    ConfusionCounts,
    DFEWClassification,
    TaskClassification,
    accuracy,
    per_class_recall,
    unweighted_average_recall,
    weighted_f1,
)
from multimood.metrics.dfew import DFEWAnswerMetrics, confusion_image
from multimood.metrics.mesc import TASKS, MESCMetrics
from multimood.metrics.text import (
    AUTHORS_BLEU2_WEIGHTS,
    ROUGEL,
    STANDARD_BLEU2_WEIGHTS,
    BERTScoreF1,
    CorpusBLEU,
    MeanSentenceBLEU,
    bleu_from_statistics,
    bleu_statistics,
    tokenize,
)

__all__ = [
    "AUTHORS_BLEU2_WEIGHTS",
    "ROUGEL",
    "STANDARD_BLEU2_WEIGHTS",
    "TASKS",
    "BERTScoreF1",
    "ConfusionCounts",
    "CorpusBLEU",
    "DFEWAnswerMetrics",
    "DFEWClassification",
    "MESCMetrics",
    "MeanSentenceBLEU",
    "TaskClassification",
    "accuracy",
    "bleu_from_statistics",
    "bleu_statistics",
    "confusion_image",
    "per_class_recall",
    "tokenize",
    "unweighted_average_recall",
    "weighted_f1",
]
