"""The contract every reward component keeps, so that components, their weights and their
combination are replaceable from a config (``class_path``).

A component is any object with a ``name`` and a call::

    component(completions: Sequence[str], references: Sequence[str]) -> RewardOutput

- ``completions``: the generated answers, whole (the four lines of SPEC section 3), one per
  completion; a GRPO step passes all ``prompts x G`` completions of the step in one call, so a
  component can batch its work (one embedding call, concurrent judge requests).
- ``references``: the reference answer of each completion's prompt (same length, repeated per
  completion of a group).
- The result: ``values`` (N,) float32, meant to lie in [0, 1], and ``present`` (N,) bool. A value
  that could not be computed (a judge that failed after its retries, a response that did not parse
  for a component that needs it) has ``present`` False; its entry in ``values`` is 0 and must not be
  read. The combination decides what a missing value does (see :mod:`multimood.rewards.combine`);
  a component never turns a failure into a score. ``stats`` carries numbers to log (call counts,
  cache hits, failures, seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from multimood.data.answer import parse_answer


@dataclass
class RewardOutput:
    """One component's rewards for N completions (see the module docstring)."""

    values: torch.Tensor
    present: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = torch.as_tensor(self.values, dtype=torch.float32)
        self.present = torch.as_tensor(self.present, dtype=torch.bool)
        if self.values.ndim != 1 or self.values.shape != self.present.shape:
            raise ValueError(
                f"RewardOutput: values {tuple(self.values.shape)} and present "
                f"{tuple(self.present.shape)} must be the same 1-D shape"
            )
        if not torch.isfinite(self.values[self.present]).all():
            raise ValueError("RewardOutput: a present reward is NaN or infinite")
        # Missing entries hold 0 so that no NaN travels anywhere; `present` says they are missing.
        self.values = self.values.masked_fill(~self.present, 0.0)

    @classmethod
    def missing(cls, n: int, stats: dict[str, float] | None = None) -> RewardOutput:
        """N missing rewards."""
        return cls(torch.zeros(n), torch.zeros(n, dtype=torch.bool), dict(stats or {}))


@runtime_checkable
class RewardComponent(Protocol):
    """What a reward component is: a ``name`` and ``__call__(completions, references)``."""

    name: str

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput: ...


def check_lengths(name: str, completions: Sequence[str], references: Sequence[str]) -> None:
    """Fail, naming the component, when completions and references do not pair up."""
    if len(completions) != len(references):
        raise ValueError(f"reward {name!r}: {len(completions)} completions but {len(references)} references")


def responses(texts: Sequence[str]) -> list[str | None]:
    """The response field of each answer (None where it did not parse)."""
    return [parse_answer(text).response for text in texts]
