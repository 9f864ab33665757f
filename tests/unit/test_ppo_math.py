"""PPO maths and the reward-model loss against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from multimood.rl import gae, kl_penalty_rewards, pairwise_reward_loss, ppo_policy_loss, value_loss, whiten

LN = math.log


# ---------------------------------------------------------------- GAE


def test_gae_by_hand_with_a_terminal_at_each_rows_last_token() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: δ2 = 1 - 0.7 = 0.3 (terminal); δ1 = 0.9·0.7 - 0.6 = 0.03, A1 = 0.03 + 0.45·0.3 = 0.165;
    #        δ0 = 0.9·0.6 - 0.5 = 0.04, A0 = 0.04 + 0.45·0.165 = 0.11425
    # row 1: token 1 is terminal: δ1 = 2 - 0.6 = 1.4; δ0 = 0.04, A0 = 0.04 + 0.45·1.4 = 0.67; padding 0
    torch.testing.assert_close(adv, torch.tensor([[0.11425, 0.165, 0.3], [0.67, 1.4, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.61425, 0.765, 1.0], [1.17, 2.0, 0.0]]))


def test_gae_with_lambda_one_gives_discounted_returns_minus_values() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.1, 0.2, 0.3]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=1.0)
    # λ = 1: returns are the discounted reward-to-go: 3, 2 + 1.5, 1 + 0.5·3.5
    torch.testing.assert_close(ret, torch.tensor([[2.75, 3.5, 3.0]]))
    torch.testing.assert_close(adv, ret - values)


def test_gae_rejects_a_mask_that_is_not_right_padded() -> None:
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[1, 1, 0], [1, 0, 1]]))


# ---------------------------------------------------------------- KL-penalised rewards


def test_kl_penalty_rewards_by_hand() -> None:
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = kl_penalty_rewards(torch.tensor([1.0, -0.5]), logps, ref, mask, kl_coef=0.1)
    # -0.1·(logp - ref): row 0 [-0.05, 0, 0.1] + score 1 on token 2; row 1 [-0.1, 0.1] + (-0.5) on token 1
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 1.1], [-0.1, -0.4, 0.0]]))


def test_kl_penalty_rewards_refuses_an_empty_row() -> None:
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        kl_penalty_rewards(torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 0.1)


# ---------------------------------------------------------------- policy and value losses


def test_ppo_policy_loss_clips_both_sides() -> None:
    logps = torch.zeros(2, 2, requires_grad=True)
    old = torch.tensor([[-LN(1.5), -LN(0.5)], [-LN(0.5), -LN(1.5)]])  # ratios [[1.5, 0.5], [0.5, 1.5]]
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    loss, stats = ppo_policy_loss(logps, old, adv, torch.ones(2, 2), clip=0.2)
    # max(-Aρ, -A clip(ρ)): (0,0) max(-1.5, -1.2) = -1.2 clipped; (0,1) max(-0.5, -0.8) = -0.5;
    # (1,0) max(0.5, 0.8) = 0.8 clipped; (1,1) max(1.5, 1.2) = 1.5
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5) / 4)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx(0.5 * (LN(1.5) ** 2 + LN(0.5) ** 2) / 2)
    loss.backward()
    # clipped tokens pass no gradient; the others d(-Aρ)/dlogp = -Aρ, over 4 tokens
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, -0.5 / 4], [0.0, 1.5 / 4]]))


def test_ppo_policy_loss_averages_only_valid_tokens() -> None:
    logps = torch.zeros(2, 2)
    old = torch.tensor([[-LN(1.5), -LN(0.5)], [-LN(0.5), float("inf")]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    loss, _ = ppo_policy_loss(logps, old, adv, torch.tensor([[1, 1], [1, 0]]))
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)


def test_value_loss_by_hand() -> None:
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.0]])
    returns = torch.tensor([[0.6, 1.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: clipped value 0.5 + 0.2 = 0.7; max((1 - 0.6)^2, (0.7 - 0.6)^2) = 0.16; token 1: 1
    assert loss.item() == pytest.approx(0.5 * (0.16 + 1.0) / 2)
    assert stats["clip_fraction"] == 0
    loss.backward()
    # unclipped branch: d 0.5·mean (v - R)^2 = (v - R)/2
    torch.testing.assert_close(values.grad, torch.tensor([[0.2, -0.5]]))


def test_value_loss_clipped_branch_stops_the_gradient() -> None:
    values = torch.tensor([[1.0]], requires_grad=True)
    loss, stats = value_loss(values, torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2)
    # unclipped error 0, clipped (0.7 - 1)^2 = 0.09 wins and does not depend on v
    assert loss.item() == pytest.approx(0.5 * 0.09)
    assert stats["clip_fraction"] == 1
    loss.backward()
    assert values.grad.item() == 0.0


# ---------------------------------------------------------------- whitening


def test_whiten_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # valid 1..4: mean 2.5, unbiased variance 5/3
    scale = 1 / math.sqrt(5 / 3 + 1e-8)
    expected = torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0.0, 0.0]]) * scale
    torch.testing.assert_close(whiten(x, mask), expected)
    shifted = torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0.0, 0.0]]) * scale + 2.5
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), shifted * mask)


def test_whiten_needs_two_values() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        whiten(torch.ones(1, 3), torch.tensor([[1, 0, 0]]))


# ---------------------------------------------------------------- reward model


def test_pairwise_reward_loss_by_hand() -> None:
    chosen = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0, 1.0])
    loss, stats = pairwise_reward_loss(chosen, rejected)
    # margins 1, -1, 0: -log σ(m) = log(1 + e^-m)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected)
    assert stats["accuracy"].item() == pytest.approx(1 / 3)  # the tie counts as wrong
    assert stats["margin"].item() == pytest.approx(0.0)
    loss.backward()
    # d/dm -log σ(m) = -(1 - σ(m)) = -σ(-m), over 3 pairs
    sig = [1 / (1 + math.exp(1)), 1 / (1 + math.exp(-1)), 0.5]
    torch.testing.assert_close(chosen.grad, torch.tensor([-s / 3 for s in sig]))


def test_pairwise_reward_loss_is_finite_for_large_margins() -> None:
    chosen = torch.tensor([1000.0, -1000.0], requires_grad=True)
    loss, _ = pairwise_reward_loss(chosen, torch.tensor([-1000.0, 1000.0]))
    assert loss.item() == pytest.approx(1000.0)  # (0 + 2000) / 2
    loss.backward()
    assert torch.isfinite(chosen.grad).all()


def test_pairwise_reward_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match="same non-empty"):
        pairwise_reward_loss(torch.zeros(2), torch.zeros(3))
