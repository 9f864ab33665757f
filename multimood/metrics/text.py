"""Response-text metrics (paper task 4, table 4): BLEU (corpus and the authors' per-sample mean),
ROUGE-L and BERTScore.

Every metric takes ``update(hypotheses, references)``: generated responses (None for an answer
whose response did not parse) and reference responses. A None hypothesis is scored as wrong,
never dropped: it is an empty token sequence for BLEU (0 matches, its reference length still
counts toward the brevity penalty) and a score of 0 for the per-sample metrics.

The states are per-sample statistics in ``cat`` states (one flat float64 vector per metric,
float64 holds token counts exactly), so under DDP the corpus values are computed on the union of
all processes' samples, exactly as on one process.

BLEU follows NLTK's ``corpus_bleu`` to the letter (it is re-derived here from per-sample counts so
that the sums can be gathered): clipped n-gram matches over ``max(1, hypothesis n-grams)``
summed over samples, closest-reference-length brevity penalty, no smoothing (a zero precision
becomes ``sys.float_info.min``, NLTK's ``method0``), 0 when no unigram matches. Tokens are
:func:`tokenize`. See docs/design/metrics.md for how this differs from the authors' scorer.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

STANDARD_BLEU2_WEIGHTS: tuple[float, float] = (0.5, 0.5)
# The authors' evaluation script calls this "BLEU-2": unigram precision to the power 0.99 times
# bigram precision to the power 0.01, so it is close to BLEU-1 whenever a bigram matches.
AUTHORS_BLEU2_WEIGHTS: tuple[float, float] = (0.99, 0.01)


def tokenize(text: str) -> list[str]:
    """BLEU tokens: NLTK's Treebank-style word tokenizer on the lowercased text, as one line.

    ``preserve_line=True`` skips NLTK's punkt sentence splitter (its data is a download): a full
    stop is split off only at the end of the text, so inside a multi-sentence response it stays on
    its word (``"okay."``), where the authors' ``word_tokenize`` would split it off.
    """
    import nltk

    return nltk.word_tokenize(text.lower(), preserve_line=True)


def _ngrams(tokens: Sequence[str], order: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def bleu_statistics(hypothesis: Sequence[str], reference: Sequence[str], max_order: int) -> list[int]:
    """One sample's BLEU counts: ``[hyp_len, ref_len, matches_1, total_1, ..., matches_n, total_n]``.

    ``matches_k`` is the clipped count of hypothesis k-grams found in the reference, ``total_k`` is
    ``max(1, number of hypothesis k-grams)`` (NLTK's ``modified_precision`` denominator).
    """
    stats = [len(hypothesis), len(reference)]
    for order in range(1, max_order + 1):
        hyp, ref = _ngrams(hypothesis, order), _ngrams(reference, order)
        stats += [sum(min(count, ref[gram]) for gram, count in hyp.items()), max(1, sum(hyp.values()))]
    return stats


def bleu_from_statistics(stats: Sequence[float] | Tensor, weights: Sequence[float]) -> float:
    """BLEU from summed :func:`bleu_statistics` (one sample's or a corpus's), as NLTK computes it."""
    values = [float(v) for v in (stats.tolist() if isinstance(stats, Tensor) else stats)]
    if len(values) != 2 + 2 * len(weights):
        raise ValueError(
            f"{len(values)} statistics do not fit {len(weights)} weights (need {2 + 2 * len(weights)})"
        )
    hyp_len, ref_len = values[0], values[1]
    matches, totals = values[2::2], values[3::2]
    if matches[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        brevity = 1.0
    elif hyp_len == 0:
        brevity = 0.0
    else:
        brevity = math.exp(1 - ref_len / hyp_len)
    # NLTK's method0: a zero precision becomes the smallest float, so log() stays finite.
    logs = [
        math.log(m / t) if m > 0 else math.log(sys.float_info.min)
        for m, t in zip(matches, totals, strict=True)
    ]
    return brevity * math.exp(math.fsum(w * log for w, log in zip(weights, logs, strict=True)))


def _check_pairs(hypotheses: Sequence[str | None], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be sequences of strings, not one string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    for i, reference in enumerate(references):
        if not isinstance(reference, str) or not reference.strip():
            raise ValueError(
                f"reference {i} of the batch is empty or not a string: {type(reference).__name__}"
            )
    for i, hypothesis in enumerate(hypotheses):
        if hypothesis is not None and not isinstance(hypothesis, str):
            raise TypeError(
                f"hypothesis {i} of the batch is a {type(hypothesis).__name__}, not a string or None"
            )


class _PerSampleMetric(Metric):
    """Base: one flat float64 ``cat`` state ``values`` holding ``width`` numbers per sample."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    width = 1

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def _append(self, rows: list[list[float]]) -> None:
        if rows:
            self.values.append(torch.tensor(rows, dtype=torch.float64, device=self.device).reshape(-1))

    def per_sample(self) -> Tensor:
        """The ``(N, width)`` per-sample values: this process's, or all processes' inside ``compute``."""
        # a list of per-update tensors, or one tensor once torchmetrics has gathered the processes
        if isinstance(self.values, list) and not self.values:
            return torch.zeros(0, self.width, dtype=torch.float64)
        return dim_zero_cat(self.values).double().reshape(-1, self.width)

    def _rows(self) -> Tensor:
        rows = self.per_sample()
        if rows.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.compute() with no samples: call update() first")
        return rows


class _BLEUBase(_PerSampleMetric):
    def __init__(self, weights: Sequence[float], **kwargs: Any) -> None:
        if not weights or any(w < 0 for w in weights):
            raise ValueError(f"weights must be non-negative, one per n-gram order, got {tuple(weights)!r}")
        super().__init__(**kwargs)
        self.weights: tuple[float, ...] = tuple(float(w) for w in weights)
        self.width = 2 + 2 * len(self.weights)

    def update(self, hypotheses: Sequence[str | None], references: Sequence[str]) -> None:
        """Add samples: generated responses (None = unparsed, scored as empty) and references."""
        _check_pairs(hypotheses, references)
        order = len(self.weights)
        rows = [
            bleu_statistics(tokenize(h) if h is not None else [], tokenize(r), order)
            for h, r in zip(hypotheses, references, strict=True)
        ]
        self._append(rows)


class CorpusBLEU(_BLEUBase):
    """Corpus BLEU (NLTK ``corpus_bleu``, no smoothing) on :func:`tokenize` tokens; standard BLEU-2 by default."""

    def __init__(self, weights: Sequence[float] = STANDARD_BLEU2_WEIGHTS, **kwargs: Any) -> None:
        """
        Args:
            weights: one weight per n-gram order; (0.5, 0.5) is BLEU-2.
            kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(weights, **kwargs)

    def compute(self) -> Tensor:
        """BLEU of all samples together, in [0, 1] (float64 scalar)."""
        return torch.tensor(bleu_from_statistics(self._rows().sum(dim=0), self.weights), dtype=torch.float64)


class MeanSentenceBLEU(_BLEUBase):
    """Mean over samples of NLTK ``sentence_bleu`` (no smoothing); the authors' "BLEU-2" by default.

    With weights (0.99, 0.01) a sample scores about ``BP * p1^0.99 * p2^0.01``: any bigram
    precision above 1% costs less than 5%, so this is nearly sentence BLEU-1; but a sample with no
    matching bigram gets ``p2 = sys.float_info.min`` and its score is multiplied by about 8.4e-4.
    """

    def __init__(self, weights: Sequence[float] = AUTHORS_BLEU2_WEIGHTS, **kwargs: Any) -> None:
        """
        Args:
            weights: one weight per n-gram order; (0.99, 0.01) reproduces the authors' evaluation.
            kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(weights, **kwargs)

    def per_sample_scores(self) -> Tensor:
        """Each sample's sentence BLEU on this process (float64, not synchronised)."""
        rows = self.per_sample()
        return torch.tensor([bleu_from_statistics(row, self.weights) for row in rows], dtype=torch.float64)

    def compute(self) -> Tensor:
        """Mean sentence BLEU in [0, 1] (float64 scalar)."""
        rows = self._rows()
        scores = [bleu_from_statistics(row, self.weights) for row in rows]
        return torch.tensor(math.fsum(scores) / len(scores), dtype=torch.float64)


class _MeanScore(_PerSampleMetric):
    """Mean of one per-sample score; unparsed hypotheses score 0."""

    def _scores(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def update(self, hypotheses: Sequence[str | None], references: Sequence[str]) -> None:
        """Add samples: generated responses (None = unparsed, scores 0) and references."""
        _check_pairs(hypotheses, references)
        parsed = [i for i, h in enumerate(hypotheses) if h is not None and h.strip()]
        scores = [0.0] * len(hypotheses)
        if parsed:
            for i, score in zip(
                parsed,
                self._scores([hypotheses[i] for i in parsed], [references[i] for i in parsed]),
                strict=True,
            ):  # type: ignore[misc]
                scores[i] = score
        self._append([[s] for s in scores])

    def compute(self) -> Tensor:
        """Mean per-sample score in [0, 1] (float64 scalar)."""
        rows = self._rows()
        return torch.tensor(math.fsum(rows[:, 0].tolist()) / rows.shape[0], dtype=torch.float64)


class ROUGEL(_MeanScore):
    """Mean ROUGE-L F1 (``rouge_score``'s ``rougeL``, Porter stemming on) over samples."""

    def __init__(self, use_stemmer: bool = True, **kwargs: Any) -> None:
        """
        Args:
            use_stemmer: Porter-stem tokens before matching (the paper's and the authors' setting).
            kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        from rouge_score import rouge_scorer

        self.use_stemmer = use_stemmer
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)

    def _scores(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        return [
            self._scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)
        ]


class BERTScoreF1(_MeanScore):
    """Mean BERTScore F1 (``bert_score``, no idf weighting, no baseline rescaling) over samples.

    The model loads on the first ``update``, onto the metric's device, and is kept outside the
    module tree, so it is neither in checkpoints nor moved by ``.to()`` afterwards.
    """

    def __init__(
        self,
        model: str = "roberta-large",
        num_layers: int | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model: hub id or local folder of the encoder (``roberta-large`` is bert_score's English
                default and the paper's); ``tiny:``/``packaged:`` names are resolved by ``multimood.hub``.
            num_layers: which hidden layer's embeddings to compare. None takes bert_score's tuned
                layer for known hub ids (17 for roberta-large); a local folder needs it set.
            batch_size: sentences per encoder batch.
            kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        from bert_score.utils import model2layers

        if num_layers is None:
            if model not in model2layers:
                raise ValueError(
                    f"BERTScore model {model!r} has no tuned layer in bert_score's table: set num_layers "
                    "(e.g. the model's number of hidden layers to use its last layer)"
                )
            num_layers = model2layers[model]
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.model_name = model
        self.num_layers = num_layers
        self.batch_size = batch_size
        self._holder: list[Any] = []  # the scorer, outside nn.Module registration

    def _scorer(self) -> Any:
        if not self._holder:
            from bert_score import BERTScorer

            from multimood.hub import resolve

            self._holder.append(
                BERTScorer(
                    model_type=resolve(self.model_name),
                    num_layers=self.num_layers,
                    batch_size=self.batch_size,
                    device=str(self.device),
                )
            )
        return self._holder[0]

    def _scores(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        _, _, f1 = self._scorer().score(list(hypotheses), list(references), batch_size=self.batch_size)
        return f1.double().tolist()
