"""benchmarks/grpo_step.py at toy sizes: one alternating block of 2 steps per side runs end to end,
the row has every key the README quotes, both sides did the same work, and our GRPO loss equals
TRL's on the same rollout batch (the speed ratio is measured by the benchmark, not asserted here)."""

from __future__ import annotations

import math

import pytest

from benchmarks.grpo_step import PHASES, measure

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grpo_step_benchmark_row() -> None:
    row = measure(
        blocks=1,
        block=2,
        warmup_blocks=0,
        prompts_per_step=1,
        group=4,
        prompt_tokens=48,
        completion_tokens=4,
        num_prompts=2,
    )
    for key in (
        "llm",
        "median_step_s",
        "ratio_ours_over_trl",
        "median_phase_s",
        "step_s",
        "steps_timed",
        "loss_ours",
        "loss_trl",
        "loss_abs_diff",
        "loss_batch_kl",
    ):
        assert key in row, key
    assert row["steps_timed"] == {"ours": 1, "trl": 1}  # the first step of a block is warm-up
    for side in ("ours", "trl"):
        phases = row["median_phase_s"][side]
        assert set(phases) == set(PHASES)
        assert phases["generate"] > 0 and phases["ref_logps"] > 0 and phases["policy_logps"] > 0, side
        assert row["median_step_s"][side] > phases["generate"], side
    assert math.isfinite(row["ratio_ours_over_trl"]) and row["ratio_ours_over_trl"] > 0
    # The loss check is not trivial: the policy is away from the reference, advantages are not 0.
    assert row["loss_batch_kl"] > 1e-4
    assert row["loss_batch_advantage_abs_mean"] > 0.1
    assert row["loss_abs_diff"] <= 1e-5, (row["loss_ours"], row["loss_trl"])
