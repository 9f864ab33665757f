"""GRPO maths against values worked out by hand (paper eqs. 8-12), plus the log-prob helper."""

from __future__ import annotations

import math

import pytest
import torch

from multimood.rl import group_advantages, grpo_loss, token_logprobs

EPS = 1e-4
LN = math.log


# ---------------------------------------------------------------- group_advantages (eq. 11)


def test_group_scale_uses_the_unbiased_std() -> None:
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), group_size=4)
    # mean 2.5; deviations -1.5 -0.5 0.5 1.5; unbiased variance (2.25+0.25+0.25+2.25)/3 = 5/3
    std = math.sqrt(5 / 3)
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (std + EPS)
    torch.testing.assert_close(adv, expected)


def test_groups_are_normalised_separately_and_zero_variance_gives_exact_zeros() -> None:
    rewards = torch.tensor([0.0, 1.0, 0.1, 0.1, 0.1, 0.1, 7.0, 7.0])
    adv = group_advantages(rewards, group_size=2)
    # group [0, 1]: mean 0.5, deviations -0.5 0.5, unbiased std sqrt(0.5)
    s = math.sqrt(0.5)
    torch.testing.assert_close(adv[:2], torch.tensor([-0.5, 0.5]) / (s + EPS))
    assert adv[2:].tolist() == [0.0] * 6  # equal rewards: exactly zero, not rounding noise / eps


def test_batch_scale_centres_per_group_and_divides_by_the_batch_std() -> None:
    adv = group_advantages(torch.tensor([0.0, 2.0, 1.0, 5.0]), group_size=2, scale="batch")
    # centred per group (means 1 and 3): -1 1 -2 2; batch mean 2, deviations -2 0 -1 3,
    # unbiased variance (4+0+1+9)/3 = 14/3
    std = math.sqrt(14 / 3)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -2.0, 2.0]) / (std + EPS))


def test_none_scale_only_centres() -> None:
    adv = group_advantages(torch.tensor([0.0, 2.0, 1.0, 5.0]), group_size=2, scale="none")
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -2.0, 2.0]))


def test_invalid_rewards_leave_the_statistics_and_get_zero() -> None:
    rewards = torch.tensor([1.0, 2.0, float("nan"), 4.0, 3.0, 100.0, 5.0, float("inf")])
    valid = torch.tensor([True, True, False, True, True, False, False, False])
    adv = group_advantages(rewards, group_size=4, valid=valid)
    # group 1 over {1, 2, 4}: mean 7/3, deviations -4/3 -1/3 5/3, unbiased variance (16+1+25)/9/2 = 7/3
    std = math.sqrt(7 / 3)
    torch.testing.assert_close(adv[:4], torch.tensor([-4 / 3, -1 / 3, 0.0, 5 / 3]) / (std + EPS))
    assert adv[2] == 0.0
    assert adv[4:].tolist() == [0.0] * 4  # one valid member: nothing to compare with
    assert torch.isfinite(adv).all()


def test_a_group_with_no_valid_member_gives_zeros() -> None:
    adv = group_advantages(
        torch.tensor([1.0, 2.0, 3.0, 4.0]), 2, valid=torch.tensor([False, False, True, True])
    )
    assert adv[:2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(adv[2:], torch.tensor([-0.5, 0.5]) / (math.sqrt(0.5) + EPS))


def test_group_advantages_agree_with_trl_formula() -> None:
    """TRL 1.16 (sum_then_normalize): (r - nanmean(group)) / (nanstd(group) + 1e-4), NaN -> 0."""
    from trl.trainer.utils import nanstd

    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(24, generator=gen)
    valid = torch.rand(24, generator=gen) > 0.2
    nan_rewards = rewards.masked_fill(~valid, float("nan"))
    for scale in ("group", "batch"):
        mean = torch.nanmean(nan_rewards.view(-1, 4), dim=1).repeat_interleave(4)
        std = (
            nanstd(nan_rewards.view(-1, 4), dim=1).repeat_interleave(4)
            if scale == "group"
            else nanstd(nan_rewards)
        )
        expected = torch.nan_to_num((nan_rewards - mean) / (std + 1e-4), nan=0.0)
        ours = group_advantages(rewards, 4, scale=scale, valid=valid)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rewards=torch.zeros(6), group_size=4), "N=6.*group_size=4"),
        (dict(rewards=torch.zeros(4), group_size=0), "group_size=0"),
        (dict(rewards=torch.zeros(4), group_size=2, scale="std"), "'std'"),
        (dict(rewards=torch.zeros(2, 2), group_size=2), r"1-D"),
        (dict(rewards=torch.zeros(4), group_size=2, valid=torch.ones(3, dtype=torch.bool)), "valid"),
        (dict(rewards=torch.tensor([1.0, float("nan")]), group_size=2), "NaN"),
    ],
)
def test_group_advantages_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_advantages(**kwargs)


# ---------------------------------------------------------------- grpo_loss (eqs. 8-10, 12)


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def test_on_policy_loss_is_minus_the_mean_advantage_and_its_gradient() -> None:
    logps = _leaf([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = grpo_loss(logps, None, None, torch.tensor([1.0, -2.0]), mask, beta=0.0)
    # ratio = 1 (eq. 10): per-row mean of -A, then mean over rows: -(1 - 2)/2
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp of -(1/B)(1/n_i) ratio A_i = -A_i / (B n_i): row 0 -1/6 per token, row 1 +1 on its token
    torch.testing.assert_close(logps.grad, torch.tensor([[-1 / 6, -1 / 6, -1 / 6], [1.0, 0.0, 0.0]]))
    assert stats["clip_fraction"] == 0 and stats["ratio_mean"] == 1
    assert "kl" not in stats  # no reference given


def _clip_case():
    """A = [2, -1]; log-ratios row 0 [ln 1.5, ln 0.5], row 1 [ln 0.5, ln 1.5]; row 1's second token masked."""
    logps = _leaf([[0.0, 0.0], [0.0, 0.0]])
    old = torch.tensor([[-LN(1.5), -LN(0.5)], [-LN(0.5), -LN(1.5)]])
    mask = torch.tensor([[True, True], [True, False]])
    return logps, old, torch.tensor([2.0, -1.0]), mask


# Surrogates min(ρA, clip(ρ, 0.8, 1.2)A): (0,0) min(3.0, 2.4) = 2.4 (high clip);
# (0,1) min(1.0, 1.6) = 1.0; (1,0) min(-0.5, -0.8) = -0.8 (low clip); (1,1) masked.
@pytest.mark.parametrize(
    ("loss_type", "max_len", "expected"),
    [
        ("grpo", None, -((2.4 + 1.0) / 2 + (-0.8) / 1) / 2),  # -0.45
        ("bnpo", None, -(2.4 + 1.0 - 0.8) / 3),
        ("dr_grpo", None, -(2.4 + 1.0 - 0.8) / (2 * 2)),  # B x T
        ("dr_grpo", 4, -(2.4 + 1.0 - 0.8) / (2 * 4)),  # B x max_completion_length
    ],
)
def test_clipping_both_sides_for_each_loss_type(loss_type: str, max_len: int | None, expected: float) -> None:
    logps, old, adv, mask = _clip_case()
    loss, stats = grpo_loss(
        logps, old, None, adv, mask, beta=0.0, loss_type=loss_type, max_completion_length=max_len
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_fraction/high"].item() == pytest.approx(1 / 3)  # (0,0)
    assert stats["clip_fraction/low"].item() == pytest.approx(1 / 3)  # (1,0)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 0.5) / 3)
    loss.backward()
    # clipped tokens pass no gradient; (0,1) has d(ρA)/dlogp = ρA = 1.0, scaled by the aggregation
    scale = {"grpo": 1 / (2 * 2), "bnpo": 1 / 3, "dr_grpo": 1 / (2 * (max_len or 2))}[loss_type]
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, -1.0 * scale], [0.0, 0.0]]))


def test_epsilon_high_widens_only_the_upper_side() -> None:
    logps, old, adv, mask = _clip_case()
    loss, stats = grpo_loss(logps, old, None, adv, mask, beta=0.0, epsilon_high=0.6)
    # (0,0): ρ = 1.5 < 1.6, so 3.0 unclipped; (1,0) still clipped low at -0.8
    assert loss.item() == pytest.approx(-((3.0 + 1.0) / 2 - 0.8) / 2)
    assert stats["clip_fraction/high"] == 0
    assert stats["clip_fraction/low"].item() == pytest.approx(1 / 3)


def test_k3_kl_term_value_gradient_and_stat() -> None:
    logps = _leaf([[0.0, 0.0], [0.0, 0.0]])
    ref = torch.tensor([[LN(2.0), -LN(2.0)], [0.0, 5.0]])  # d = ref - logp
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_loss(logps, None, ref, torch.zeros(2), mask, beta=0.5)
    # k3 (eq. 12) = e^d - d - 1: d = ln 2 -> 1 - ln 2; d = -ln 2 -> ln 2 - 1/2; d = 0 -> 0.
    # Row means (1 - ln2 + ln2 - 1/2)/2 = 1/4 and 0; loss = β · mean = 0.5 · 1/8
    assert loss.item() == pytest.approx(0.0625)
    assert stats["kl"].item() == pytest.approx(0.5 / 3)  # token mean over the 3 tokens
    loss.backward()
    # d k3 / d logp = 1 - e^d: -1 and +1/2; times β/(B n_i) = 0.5/4
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.125, 0.0625], [0.0, 0.0]]))


def test_beta_zero_ignores_the_reference_and_needs_none() -> None:
    logps, old, adv, mask = _clip_case()
    without, _ = grpo_loss(logps, old, None, adv, mask, beta=0.0)
    with_ref, stats = grpo_loss(logps, old, torch.full((2, 2), -3.0), adv, mask, beta=0.0)
    assert with_ref.item() == without.item()
    assert stats["kl"] > 0  # still reported when a reference is given
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.1)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_all_masked_rows_are_finite_and_contribute_nothing(loss_type: str) -> None:
    logps = _leaf([[-1.0, -1.0], [float("-inf"), float("nan")]])
    old = torch.tensor([[-1.0 - LN(1.1), -1.0], [3.0, float("inf")]])
    ref = torch.tensor([[-1.0, -1.0 + LN(2.0)], [float("nan"), -50.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    adv = torch.tensor([1.0, 5.0])
    loss, stats = grpo_loss(logps, old, ref, adv, mask, beta=0.5, loss_type=loss_type)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    assert torch.isfinite(logps.grad).all() and logps.grad[1].tolist() == [0.0, 0.0]
    # row 0 alone: tokens (1.1 · 1 - 0) and (1 - 0.5 · (1 - ln 2)); the empty row counts in B for grpo
    row0 = 1.1 + (1.0 - 0.5 * (1.0 - LN(2.0)))
    expected = {"grpo": -row0 / 2 / 2, "bnpo": -row0 / 2, "dr_grpo": -row0 / (2 * 2)}[loss_type]
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_a_fully_masked_batch_gives_zero_loss() -> None:
    logps = _leaf([[-1.0, -2.0]])
    loss, stats = grpo_loss(logps, None, logps.detach(), torch.ones(1), torch.zeros(1, 2), beta=1.0)
    assert loss.item() == 0.0 and stats["kl"] == 0 and stats["completion_length"] == 0
    loss.backward()
    assert logps.grad.tolist() == [[0.0, 0.0]]


def test_per_token_advantages_are_accepted() -> None:
    logps = _leaf([[0.0, 0.0]])
    loss, _ = grpo_loss(logps, None, None, torch.tensor([[1.0, 3.0]]), torch.ones(1, 2), beta=0.0)
    assert loss.item() == pytest.approx(-2.0)


def test_gradients_are_finite_on_random_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    logps = (-5 * torch.rand(6, 7, generator=gen)).requires_grad_()
    old = logps.detach() + torch.randn(6, 7, generator=gen)
    ref = logps.detach() + 3 * torch.randn(6, 7, generator=gen)
    mask = torch.rand(6, 7, generator=gen) > 0.3
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        loss, stats = grpo_loss(
            logps, old, ref, torch.randn(6, generator=gen), mask, 1.12, loss_type=loss_type
        )
        assert all(torch.isfinite(v) for v in stats.values())
        (grad,) = torch.autograd.grad(loss, logps)
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert grad[~mask].abs().sum() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(loss_type="dapo"), "loss_type"),
        (dict(advantages=torch.zeros(3)), "advantages"),
        (dict(old_logps=torch.zeros(2, 3)), "old_logps"),
        (dict(completion_mask=torch.ones(2, 3)), "completion_mask"),
        (dict(logps=torch.zeros(4)), r"\(B, T\)"),
    ],
)
def test_grpo_loss_errors(change: dict, message: str) -> None:
    args = dict(
        logps=torch.zeros(2, 2),
        old_logps=None,
        ref_logps=None,
        advantages=torch.zeros(2),
        completion_mask=torch.ones(2, 2),
        beta=0.0,
    )
    args.update(change)
    with pytest.raises(ValueError, match=message):
        grpo_loss(**args)


# ---------------------------------------------------------------- token_logprobs


def test_token_logprobs_equals_log_softmax_gather_with_its_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5), generator=gen)
    for temperature in (1.0, 0.7):
        for chunk_rows in (1, 3, 1024):
            ours = token_logprobs(logits, ids, temperature=temperature, chunk_rows=chunk_rows)
            naive = (logits / temperature).log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
            torch.testing.assert_close(ours, naive)
            weights = torch.randn(2, 5, generator=gen, dtype=torch.float64)
            (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
            (g_naive,) = torch.autograd.grad((naive * weights).sum(), logits)
            torch.testing.assert_close(g_ours, g_naive)


def test_token_logprobs_on_a_bf16_slice_is_float32_and_keeps_no_float32_copy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 50, generator=gen).bfloat16().requires_grad_()
    ids = torch.randint(0, 50, (3, 6), generator=gen)
    saved_bytes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved_bytes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ours = token_logprobs(logits[:, 1:-1], ids, chunk_rows=4)
    assert ours.dtype == torch.float32
    # what autograd keeps: the bf16 logits slice (a view), the ids and a (B, T) normaliser; the naive
    # float32 log_softmax would keep a (B, T, V) float32 tensor, twice the logits' bytes
    assert sum(saved_bytes) < logits.numel() * logits.element_size() * 1.2
    reference = logits.detach().float()[:, 1:-1].log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
    assert logits.grad[:, 0].abs().sum() == 0 and logits.grad[:, -1].abs().sum() == 0


def test_token_logprobs_other_ranks() -> None:
    logits = torch.randn(4, 7)
    ids = torch.tensor([0, 6, 3, 3])
    torch.testing.assert_close(token_logprobs(logits, ids), logits.log_softmax(-1)[torch.arange(4), ids])


@pytest.mark.parametrize(
    ("logits", "ids", "message"),
    [
        (torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), "must be ids"),
        (torch.zeros(2, 5), torch.tensor([0, 5]), r"\[0, 5\)"),
        (torch.zeros(2, 5), torch.zeros(2), "integer"),
    ],
)
def test_token_logprobs_errors(logits: torch.Tensor, ids: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        token_logprobs(logits, ids)
