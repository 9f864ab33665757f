"""The GRPO reward: a weighted mean of reward components (paper eq. 7).

The paper's reward is ``r = (r_trust + r_sim) / 2``: equal weights normalised by their sum. Here
the components and their weights are constructor arguments, so a config replaces or adds any of
them by import path (``class_path``/``init_args``), the user's own classes included::

    reward:
      class_path: multimood.rewards.combine.CombinedReward
      init_args:
        components:
          similarity: {class_path: multimood.rewards.similarity.SimilarityReward}
          trust: {class_path: multimood.rewards.trust.TrustReward, init_args: {...}}
          mine: {class_path: my_package.rewards.Politeness, init_args: {threshold: 0.5}}
        weights: {similarity: 1.0, trust: 1.0, mine: 0.5}

A user's reward class needs only a ``name`` attribute and this call (the
:class:`~multimood.rewards.base.RewardComponent` protocol; no base class to inherit)::

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput

``completions`` are the whole generated answers of the step (prompts x G), ``references`` the
reference answer of each completion's prompt; return values in [0, 1] with ``present`` False
where the value could not be computed (its ``values`` entry is then ignored). The key in
``components`` becomes the component's name in the logged metrics.

Missing values (``missing``):

- ``"renormalise"`` (default): a completion's reward is the weighted mean over the components
  present for it, ``sum_k w_k r_k / sum_k w_k`` over those k. A completion with no component
  present (or only zero-weight ones) is itself missing.
- ``"drop"``: a completion missing any component of non-zero weight is missing.

A missing completion (``present`` False in the result) is left out of its GRPO group: advantage 0,
and not counted in the group's mean and std (see :mod:`multimood.rl`). Zero-weight components are
still computed and logged but never decide a value or presence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from multimood.rewards.base import RewardComponent, RewardOutput, check_lengths

MissingPolicy = Literal["renormalise", "drop"]
MISSING_POLICIES: tuple[str, ...] = ("renormalise", "drop")
TOTAL = "total"  # prefix of the combined reward's own stats; no component may take this name


@dataclass
class CombinedOutput(RewardOutput):
    """The combined reward (``values``, ``present``, flattened ``stats``) and each component's output.

    ``stats`` holds ``<component>/<stat>`` for every stat a component reported, plus
    ``<component>/mean``, ``<component>/std`` (over its present values; left out when none is
    present) and ``<component>/missing_fraction``, and the same three for ``total/``.
    Being a :class:`RewardOutput`, a :class:`CombinedReward` can itself be a component.
    """

    components: dict[str, RewardOutput] = field(default_factory=dict)


def _summary(prefix: str, output: RewardOutput) -> dict[str, float]:
    """Mean, std (population, so one value gives 0, never NaN) and missing fraction."""
    n = output.values.numel()
    stats = {f"{prefix}/missing_fraction": float((~output.present).sum()) / n if n else 0.0}
    if output.present.any():
        present = output.values[output.present].double()
        stats[f"{prefix}/mean"] = float(present.mean())
        stats[f"{prefix}/std"] = float(present.std(unbiased=False))
    return stats


class CombinedReward:
    """Weighted mean of reward components with a policy for missing values (module docstring).

    Args:
        components: ``{name: component}``, or a list of components named by their ``name``.
        weights: ``{name: weight}`` (non-negative, positive sum); None weighs all components
            equally (paper eq. 7). Every name must be a component's and every component needs a
            weight.
        missing: ``"renormalise"`` (mean over the components present) or ``"drop"`` (any missing
            component makes the completion missing).
        name: this combination's name when it is itself a component.
    """

    def __init__(
        self,
        components: dict[str, RewardComponent] | list[RewardComponent],
        weights: dict[str, float] | None = None,
        missing: MissingPolicy = "renormalise",
        name: str = "reward",
    ) -> None:
        self.components = self._named(components)
        if weights is None:
            weights = {key: 1.0 for key in self.components}
        unknown = sorted(set(weights) - set(self.components))
        unweighted = sorted(set(self.components) - set(weights))
        if unknown or unweighted:
            raise ValueError(
                f"CombinedReward weights must name exactly the components {sorted(self.components)}; "
                f"unknown: {unknown}, without a weight: {unweighted}"
            )
        self.weights = {key: float(weights[key]) for key in self.components}
        negative = {key: w for key, w in self.weights.items() if not w >= 0}
        if negative or sum(self.weights.values()) <= 0:
            raise ValueError(
                f"CombinedReward weights must be non-negative with a positive sum, got {self.weights}"
            )
        if missing not in MISSING_POLICIES:
            raise ValueError(f"CombinedReward missing={missing!r}; expected one of {MISSING_POLICIES}")
        self.missing = missing
        self.name = name

    @staticmethod
    def _named(
        components: Mapping[str, RewardComponent] | Sequence[RewardComponent],
    ) -> dict[str, RewardComponent]:
        if isinstance(components, Mapping):
            named = dict(components)
        else:
            named = {}
            for component in components:
                key = getattr(component, "name", None)
                if not isinstance(key, str) or not key:
                    raise ValueError(
                        f"reward component {component!r} has no 'name'; give components as a dict"
                    )
                if key in named:
                    raise ValueError(f"two reward components are named {key!r}; give components as a dict")
                named[key] = component
        if not named:
            raise ValueError("CombinedReward needs at least one component")
        for key, component in named.items():
            if key == TOTAL or "/" in key:
                raise ValueError(f"reward component name {key!r} is reserved or holds '/'")
            if not callable(component):
                raise TypeError(
                    f"reward component {key!r} ({type(component).__name__}) is not callable as "
                    "component(completions, references) -> RewardOutput"
                )
        return named

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> CombinedOutput:
        """Call every component once on the whole batch and combine (module docstring)."""
        check_lengths(self.name, completions, references)
        n = len(completions)
        outputs: dict[str, RewardOutput] = {}
        for key, component in self.components.items():
            output = component(completions, references)
            if not isinstance(output, RewardOutput):
                raise TypeError(
                    f"reward component {key!r} returned {type(output).__name__}, not a RewardOutput"
                )
            if output.values.shape != (n,):
                raise ValueError(
                    f"reward component {key!r} returned {tuple(output.values.shape)} values for {n} completions"
                )
            outputs[key] = output

        weighted = torch.zeros(n, dtype=torch.float64)
        weight_present = torch.zeros(n, dtype=torch.float64)
        all_present = torch.ones(n, dtype=torch.bool)
        for key, output in outputs.items():
            weight = self.weights[key]
            if weight == 0:
                continue
            present = output.present
            weighted += weight * output.values.double() * present
            weight_present += weight * present
            all_present &= present
        present = weight_present > 0
        if self.missing == "drop":
            present &= all_present
        values = torch.where(present, weighted / weight_present.clamp_min(1e-12), 0.0).float()

        stats: dict[str, float] = {}
        for key, output in outputs.items():
            stats.update({f"{key}/{stat}": float(value) for stat, value in output.stats.items()})
            stats.update(_summary(key, output))
        result = CombinedOutput(values, present, stats, components=outputs)
        result.stats.update(_summary(TOTAL, result))
        return result
