"""Preference pairs for the PPO baseline's reward model (paper appendix, SPEC section 6 row D').

The paper's reward model is "trained on sentence pairs (<chosen>, <rejected>)": chosen is the
reference answer, rejected an answer the SFT model generated whose response has ROUGE-L < 0.3
against the reference response. This module builds those pairs from batches of the data modules
(plain torch: the caller gives the batches, see ``reward_pairs.py`` for the command) and reads and
writes them as JSON lines ``{sample_id, split, chosen, rejected, rouge_l}``.

Data hygiene (SPEC "Data hygiene"): the authors' PPO script trained on ``test.jsonl``. Pairs are
built from the train split; ``test`` is always refused, and ``val`` only with ``for_selection=True``
(held-out pairs for the reward model's validation accuracy, never trained on: the reward model
refuses to train on a file whose pairs are not from train).

ROUGE-L is ``rouge_score``'s ``rougeL`` F1 with Porter stemming, as the response metric
(:class:`multimood.metrics.text.ROUGEL`). A generated answer whose response does not parse scores
0 against the reference, as the metrics count it, and so becomes a rejected answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from multimood.data.answer import parse_answer

log = logging.getLogger(__name__)

__all__ = ["RewardPair", "RewardPairs", "build_reward_pairs", "check_pair_split", "rouge_l", "write_pairs"]


@dataclass(frozen=True)
class RewardPair:
    """One preference pair: the reference answer above a generated one (whole four-line answers)."""

    sample_id: str
    split: str
    chosen: str
    rejected: str
    rouge_l: float


def check_pair_split(split: str, for_selection: bool = False) -> None:
    """Refuse splits that must not feed the reward model (see the module docstring)."""
    if split == "train":
        return
    if split == "val" and for_selection:
        return
    if split == "val":
        raise ValueError(
            "reward pairs from 'val': val selects models and must not train the reward model; "
            "build training pairs from 'train' (for held-out validation pairs pass for_selection=True)"
        )
    raise ValueError(
        f"reward pairs from {split!r} refused: only 'train' trains the reward model (the authors' PPO "
        "script trained on test.jsonl; we touch test only to report, SPEC 'Data hygiene')"
    )


class _RougeL:
    """ROUGE-L F1 with Porter stemming (the response metric's settings)."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def __call__(self, hypothesis: str | None, reference: str) -> float:
        if hypothesis is None or not hypothesis.strip():
            return 0.0
        return float(self._scorer.score(reference, hypothesis)["rougeL"].fmeasure)


def rouge_l(hypothesis: str | None, reference: str) -> float:
    """ROUGE-L F1 of one response against its reference (0 for a missing or empty response)."""
    return _RougeL()(hypothesis, reference)


def build_reward_pairs(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    split: str = "train",
    threshold: float = 0.3,
    max_samples: int | None = None,
    max_new_tokens: int = 400,
    do_sample: bool = False,
    for_selection: bool = False,
) -> tuple[list[RewardPair], dict[str, int]]:
    """Generate an answer per sample with ``model`` (the SFT model) and keep the poor ones as pairs.

    Args:
        model: The fused SFT model (:class:`multimood.models.MultiMoodModel`).
        batches: Batches of ``split`` from a data module (``sample_ids``, ``answers``, ``references``
            and the generation prompt with its media and history).
        split: Which split the batches are from; must be ``train`` (see :func:`check_pair_split`).
        threshold: Keep a pair when the generated response's ROUGE-L F1 against the reference
            response is below this (paper: 0.3).
        max_samples: Stop after this many samples (None: all).
        max_new_tokens: Longest generated answer.
        do_sample: Sample instead of greedy decoding.
        for_selection: Allow ``split="val"`` (held-out pairs for validation only).

    Returns:
        ``(pairs, counts)``; counts: ``samples`` (answers generated), ``pairs`` (kept),
        ``unparsed`` (generated responses that did not parse, ROUGE-L 0), ``above_threshold``.
        Only counts are logged: no dialogue text leaves this function except in the pairs.
    """
    check_pair_split(split, for_selection)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    score = _RougeL()
    pairs: list[RewardPair] = []
    counts = {"samples": 0, "pairs": 0, "unparsed": 0, "above_threshold": 0}
    for batch in batches:
        if not batch.get("sample_ids"):
            continue
        generated = model.generate(batch, max_new_tokens=max_new_tokens, do_sample=do_sample)
        rows = zip(batch["sample_ids"], batch["answers"], batch["references"], generated, strict=True)
        for sample_id, answer, reference, text in rows:
            if max_samples is not None and counts["samples"] >= max_samples:
                break
            counts["samples"] += 1
            response = parse_answer(text).response
            counts["unparsed"] += response is None
            value = score(response, reference)
            if value < threshold:
                pairs.append(RewardPair(str(sample_id), split, answer, text, value))
            else:
                counts["above_threshold"] += 1
        if max_samples is not None and counts["samples"] >= max_samples:
            break
    counts["pairs"] = len(pairs)
    log.info(
        "reward pairs (%s): %d samples generated, %d pairs kept (ROUGE-L < %g), %d above, %d unparsed",
        split,
        counts["samples"],
        counts["pairs"],
        threshold,
        counts["above_threshold"],
        counts["unparsed"],
    )
    return pairs, counts


def write_pairs(pairs: Iterable[RewardPair], path: str | Path) -> Path:
    """Write pairs as JSON lines, one per pair."""
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for pair in pairs:
            f.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
    return out


class RewardPairs(Mapping[str, RewardPair]):
    """A pairs file by ``sample_id``; refuses a malformed line (naming file and line), a duplicate
    sample, or pairs of a split other than ``split``."""

    FIELDS = ("sample_id", "split", "chosen", "rejected", "rouge_l")

    def __init__(self, path: str | Path, split: str = "train") -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"reward pairs file {self.path} not found (make it with reward_pairs.py)")
        self._pairs: dict[str, RewardPair] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number}: not JSON ({error.msg})") from None
            missing = [k for k in self.FIELDS if k not in row]
            if missing:
                raise ValueError(f"{self.path}:{number}: missing {missing}")
            if row["split"] != split:
                raise ValueError(
                    f"{self.path}:{number}: a pair from split {row['split']!r} where {split!r} pairs are "
                    "expected (the reward model trains on train pairs only)"
                )
            if row["sample_id"] in self._pairs:
                raise ValueError(f"{self.path}:{number}: sample {row['sample_id']!r} has a pair already")
            self._pairs[row["sample_id"]] = RewardPair(**{k: row[k] for k in self.FIELDS})
        if not self._pairs:
            raise ValueError(f"{self.path} holds no pairs")

    def __getitem__(self, sample_id: str) -> RewardPair:
        return self._pairs[sample_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)
