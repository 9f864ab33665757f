"""r_format: does the completion keep the four-line answer format (SPEC section 3)?

Off by default (the paper's reward is eq. 7: similarity and trust only). When it is part of the
combination it is the documented way to *score* an unparsable completion, instead of leaving it
missing: the similarity and trust components mark a completion whose response does not parse as
missing, and a missing completion drops out of its GRPO group (advantage 0), so without this
component such a completion is neither rewarded nor punished. With it, it gets 0 here while the
completions that parse get 1, and the group's advantages push towards the format.

``partial=True`` gives per-field credit instead: the fraction of the four fields (client emotion,
therapist emotion, strategy, response) that parse, so an answer with one bad label still beats
prose. The value is always present.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from multimood.data.answer import FIELDS, parse_answer
from multimood.rewards.base import RewardOutput, check_lengths


class FormatReward:
    """1 when all four answer fields parse, else 0 (or, with ``partial``, the fraction that parse).

    Args:
        partial: per-field credit, ``(fields that parse) / 4``, instead of all-or-nothing.
        name: the component's name in the combination and in logged metrics.
    """

    def __init__(self, partial: bool = False, name: str = "format") -> None:
        self.partial = partial
        self.name = name

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        check_lengths(self.name, completions, references)
        parsed = [parse_answer(text) for text in completions]
        if self.partial:
            values = [(len(FIELDS) - len(answer.errors)) / len(FIELDS) for answer in parsed]
        else:
            values = [float(answer.ok) for answer in parsed]
        stats: dict[str, float] = {}
        if parsed:
            for field in FIELDS:
                stats[f"{field}_failed"] = sum(answer.failed(field) for answer in parsed) / len(parsed)
        return RewardOutput(torch.tensor(values), torch.ones(len(values), dtype=torch.bool), stats)
