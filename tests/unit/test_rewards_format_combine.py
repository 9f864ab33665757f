"""FormatReward and CombinedReward: values by hand, the missing policies, and the YAML route."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from jsonargparse import ArgumentParser

from multimood.data.answer import format_answer
from multimood.rewards.base import RewardComponent, RewardOutput
from multimood.rewards.combine import CombinedOutput, CombinedReward
from multimood.rewards.format import FormatReward

GOOD = format_answer("sadness", "neutral", "Restatement", "You feel alone since the move.")
ONE_BAD_LABEL = GOOD.replace("Restatement", "Guessing")
ONLY_RESPONSE = "Therapist's response: tell me more."


class Fixed:
    """A component that returns the values and presence it was built with (None = missing)."""

    def __init__(self, values: Sequence[float | None], name: str = "fixed") -> None:
        self.values = list(values)
        self.name = name
        self.calls = 0

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        self.calls += 1
        present = [v is not None for v in self.values]
        return RewardOutput(
            torch.tensor([v or 0.0 for v in self.values]), torch.tensor(present), {"calls": 1.0}
        )


class LengthReward:
    """A user's own reward, defined outside the package: shorter responses score higher."""

    def __init__(self, max_chars: int = 100, name: str = "length") -> None:
        self.max_chars = max_chars
        self.name = name

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        values = [max(0.0, 1.0 - len(text) / self.max_chars) for text in completions]
        return RewardOutput(torch.tensor(values), torch.ones(len(values), dtype=torch.bool))


def test_format_reward_all_or_nothing_and_partial() -> None:
    completions = [GOOD, ONE_BAD_LABEL, ONLY_RESPONSE, "no answer at all"]
    refs = [GOOD] * 4
    strict = FormatReward()(completions, refs)
    assert strict.values.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert strict.present.all()
    partial = FormatReward(partial=True)(completions, refs)
    assert partial.values.tolist() == [1.0, 0.75, 0.25, 0.0]
    assert partial.present.all()
    assert strict.stats["strategy_failed"] == 0.75 and strict.stats["response_failed"] == 0.25


def test_components_keep_the_protocol() -> None:
    assert isinstance(FormatReward(), RewardComponent)
    assert isinstance(LengthReward(), RewardComponent)
    assert isinstance(CombinedReward([FormatReward()]), RewardComponent)


def test_default_is_the_equal_weight_mean_of_eq7() -> None:
    trust, sim = Fixed([0.2, 0.9, 0.5], "trust"), Fixed([0.6, 0.1, 0.5], "similarity")
    out = CombinedReward([trust, sim])(["a"] * 3, ["r"] * 3)
    assert isinstance(out, CombinedOutput)
    torch.testing.assert_close(out.values, torch.tensor([0.4, 0.5, 0.5]))
    assert out.present.all()
    assert out.stats["trust/mean"] == pytest.approx((0.2 + 0.9 + 0.5) / 3)
    assert out.stats["similarity/calls"] == 1.0 and trust.calls == 1 and sim.calls == 1
    assert out.stats["total/mean"] == pytest.approx(1.4 / 3)


def test_weights_are_normalised_by_their_sum() -> None:
    a, b = Fixed([1.0, 0.0], "a"), Fixed([0.0, 0.5], "b")
    out = CombinedReward({"a": a, "b": b}, weights={"a": 3.0, "b": 1.0})(["x", "y"], ["r", "r"])
    torch.testing.assert_close(out.values, torch.tensor([0.75, 0.125]))


def test_renormalise_averages_over_the_present_components() -> None:
    a = Fixed([0.2, None, None, 0.8], "a")
    b = Fixed([0.4, 0.6, None, None], "b")
    out = CombinedReward([a, b], weights={"a": 1.0, "b": 3.0})(["x"] * 4, ["r"] * 4)
    assert out.present.tolist() == [True, True, False, True]
    torch.testing.assert_close(out.values, torch.tensor([(0.2 + 3 * 0.4) / 4, 0.6, 0.0, 0.8]))
    assert out.stats["a/missing_fraction"] == 0.5 and out.stats["b/missing_fraction"] == 0.5
    assert out.stats["total/missing_fraction"] == 0.25
    assert out.components["a"].present.tolist() == [True, False, False, True]


def test_drop_makes_a_completion_missing_when_any_component_is() -> None:
    a = Fixed([0.2, None, 0.5], "a")
    b = Fixed([0.4, 0.6, 0.5], "b")
    out = CombinedReward([a, b], missing="drop")(["x"] * 3, ["r"] * 3)
    assert out.present.tolist() == [True, False, True]
    torch.testing.assert_close(out.values, torch.tensor([0.3, 0.0, 0.5]))


def test_zero_weight_components_are_logged_but_decide_nothing() -> None:
    a, logged = Fixed([0.2, None], "a"), Fixed([None, 1.0], "logged")
    out = CombinedReward([a, logged], weights={"a": 1.0, "logged": 0.0}, missing="drop")(["x"] * 2, ["r"] * 2)
    assert out.present.tolist() == [True, False]
    assert out.values[0].item() == pytest.approx(0.2)
    assert out.stats["logged/mean"] == 1.0


def test_no_component_present_gives_no_nan_and_no_mean() -> None:
    out = CombinedReward([Fixed([None, None], "a")])(["x"] * 2, ["r"] * 2)
    assert not out.present.any() and torch.isfinite(out.values).all()
    assert "total/mean" not in out.stats and out.stats["total/missing_fraction"] == 1.0


def test_bad_configurations_fail_with_the_names() -> None:
    with pytest.raises(ValueError, match=r"without a weight: \['b'\]"):
        CombinedReward([Fixed([1.0], "a"), Fixed([1.0], "b")], weights={"a": 1.0})
    with pytest.raises(ValueError, match=r"unknown: \['c'\]"):
        CombinedReward([Fixed([1.0], "a")], weights={"a": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match="two reward components are named 'a'"):
        CombinedReward([Fixed([1.0], "a"), Fixed([1.0], "a")])
    with pytest.raises(ValueError, match="non-negative"):
        CombinedReward([Fixed([1.0], "a")], weights={"a": -1.0})
    with pytest.raises(ValueError, match="missing='skip'"):
        CombinedReward([Fixed([1.0], "a")], missing="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'a' returned \\(2,\\) values for 3"):
        CombinedReward([Fixed([1.0, 1.0], "a")])(["x"] * 3, ["r"] * 3)


YAML = """
reward:
  class_path: multimood.rewards.combine.CombinedReward
  init_args:
    components:
      length:
        class_path: tests.unit.test_rewards_format_combine.LengthReward
        init_args: {max_chars: 40}
      format:
        class_path: multimood.rewards.format.FormatReward
        init_args: {partial: true}
    weights: {length: 1.0, format: 3.0}
    missing: drop
"""


def test_a_yaml_builds_a_combination_with_a_user_component() -> None:
    parser = ArgumentParser()
    parser.add_argument("--reward", type=CombinedReward)
    config = parser.parse_string(YAML)
    reward = parser.instantiate(config).reward
    assert isinstance(reward, CombinedReward) and reward.missing == "drop"
    assert isinstance(reward.components["length"], LengthReward)
    assert reward.components["length"].max_chars == 40
    assert reward.components["format"].partial is True
    out = reward([ONLY_RESPONSE], [GOOD])
    length = 1.0 - len(ONLY_RESPONSE) / 40
    assert out.values[0].item() == pytest.approx((length + 3 * 0.25) / 4)
