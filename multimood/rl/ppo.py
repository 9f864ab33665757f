"""PPO maths for the PPO baseline (paper appendix; Schulman et al. 2017, GAE: Schulman et al. 2016).

"PPO begins with a rollout phase where the model generates responses to input prompts, followed by
evaluation using a reward model. It incorporates a KL-divergence penalty to constrain policy shifts
and employs Generalized Advantage Estimation (GAE) [...] A key feature of PPO is its clipping
mechanism" (paper appendix). The reward model is "trained on sentence pairs (<chosen>, <rejected>)".

The pieces follow the conventions of TRL's PPO trainer (per-token KL penalty in the reward, the
sequence score on the last token, GAE per token, whitened advantages, clipped policy and value
losses), written as pure functions over ``(B, T)`` completion tensors with a ``(B, T)`` mask. The
mask must be right-padded (each row's valid tokens form a prefix): GAE treats each row's last
valid token as the terminal step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "gae",
    "kl_penalty_rewards",
    "pairwise_reward_loss",
    "ppo_policy_loss",
    "value_loss",
    "whiten",
]


def _check_2d(name: str, reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    if reference.ndim != 2:
        raise ValueError(f"{name}: expected (B, T) tensors, got shape {tuple(reference.shape)}")
    for key, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(f"{name}: {key} {tuple(tensor.shape)} must be {tuple(reference.shape)}")


def _check_prefix_mask(name: str, mask: torch.Tensor) -> None:
    """Right padding only: a 0 followed by a 1 in a row would make GAE end the episode early."""
    m = mask.to(torch.int8)
    holes = (m[:, 1:] > m[:, :-1]).any(dim=1)
    if holes.any():
        rows = holes.nonzero().flatten().tolist()
        raise ValueError(
            f"{name}: mask rows {rows} are not right-padded (a valid token follows a padding one)"
        )


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    maskf = mask.float()
    return (x * maskf).sum() / maskf.sum().clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked entries; masked-out entries come back 0.

    The variance is the unbiased one (``n - 1``), as TRL's ``masked_whiten``. ``shift_mean=False``
    adds the mean back (scale only; TRL uses it for rewards). Needs at least two valid entries
    (one has no variance): fewer is a ValueError.
    """
    if x.shape != mask.shape:
        raise ValueError(f"whiten: x {tuple(x.shape)} and mask {tuple(mask.shape)} must match")
    maskb = mask.to(dtype=torch.bool, device=x.device)
    n = int(maskb.sum())
    if n < 2:
        raise ValueError(f"whiten: needs at least 2 valid entries to estimate a variance, got {n}")
    xf = x.float()
    mean = xf[maskb].mean()
    var = (xf[maskb] - mean).square().sum() / (n - 1)
    out = (xf - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(maskb, out, torch.zeros_like(out))


def kl_penalty_rewards(
    score: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * (logp - ref)`` on every valid token, plus the sequence score on
    the last valid token of each row (TRL PPO's ``"k1"`` KL estimate, InstructGPT's reward shaping).

    Args:
        score: ``(B,)`` one reward-model score per completion.
        logps, ref_logps: ``(B, T)`` log-probabilities of the sampled tokens under the rollout policy
            and the reference policy.
        mask: ``(B, T)`` right-padded completion mask. Every row needs at least one token (there is
            nowhere to put the score of an empty one): an empty row is a ValueError naming it.

    Returns:
        ``(B, T)`` float32 rewards, 0 on padding. No gradient flows (these are rollout constants).
    """
    _check_2d("kl_penalty_rewards", logps, ref_logps=ref_logps, mask=mask)
    if score.shape != (logps.shape[0],):
        raise ValueError(f"kl_penalty_rewards: score {tuple(score.shape)} must be (B,)=({logps.shape[0]},)")
    _check_prefix_mask("kl_penalty_rewards", mask)
    maskb = mask.to(dtype=torch.bool, device=logps.device)
    lengths = maskb.sum(dim=1)
    if (lengths == 0).any():
        rows = (lengths == 0).nonzero().flatten().tolist()
        raise ValueError(f"kl_penalty_rewards: rows {rows} have no valid token to carry their score")
    with torch.no_grad():
        kl = torch.where(
            maskb, logps.float() - ref_logps.float(), torch.zeros_like(logps, dtype=torch.float32)
        )
        rewards = -kl_coef * kl
        last = (lengths - 1).long()
        rewards[torch.arange(len(last), device=rewards.device), last] += score.float()
    return rewards


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation per token (Schulman et al. 2016, eqs. 11-16).

    ``δ_t = r_t + γ V_{t+1} - V_t`` with ``V_{t+1} = 0`` after a row's last valid token (terminal),
    ``Â_t = δ_t + γλ Â_{t+1}``; returns ``= Â + V`` (the value targets).

    Args:
        rewards, values: ``(B, T)``; mask ``(B, T)`` right-padded.

    Returns:
        ``(advantages, returns)``, ``(B, T)`` float32 each, 0 on padding, detached (targets).
    """
    _check_2d("gae", rewards, values=values, mask=mask)
    _check_prefix_mask("gae", mask)
    maskf = mask.to(dtype=torch.float32, device=rewards.device)
    r = rewards.detach().float() * maskf
    v = values.detach().float() * maskf
    batch, width = r.shape
    advantages = torch.zeros_like(r)
    running = torch.zeros(batch, dtype=torch.float32, device=r.device)
    next_value = torch.zeros_like(running)
    next_valid = torch.zeros_like(running)
    for t in reversed(range(width)):
        delta = r[:, t] + gamma * next_value * next_valid - v[:, t]
        running = (delta + gamma * lam * next_valid * running) * maskf[:, t]
        advantages[:, t] = running
        next_value, next_valid = v[:, t], maskf[:, t]
    returns = (advantages + v) * maskf
    return advantages, returns


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated and averaged over valid tokens.

    ``loss = mean_t max(-Â ρ, -Â clip(ρ, 1 - clip, 1 + clip))`` with ``ρ = exp(logps - old_logps)``.

    Returns:
        ``(loss, stats)``; stats: ``clip_fraction`` (tokens where the clipped term is the larger
        loss, as TRL reports it), ``approx_kl`` (``0.5 * mean (logp - old)^2``), ``ratio_mean``.
    """
    _check_2d("ppo_policy_loss", logps, old_logps=old_logps, advantages=advantages, mask=mask)
    maskb = mask.to(dtype=torch.bool, device=logps.device)
    log_ratio = torch.where(
        maskb, logps.float() - old_logps.float(), torch.zeros_like(logps, dtype=torch.float32)
    )
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().float()
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = _masked_mean(torch.maximum(unclipped, clipped), maskb)
    with torch.no_grad():
        stats = {
            "clip_fraction": _masked_mean((clipped > unclipped).float(), maskb),
            "approx_kl": 0.5 * _masked_mean(log_ratio.square(), maskb),
            "ratio_mean": _masked_mean(ratio, maskb),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss, as TRL's PPO: ``0.5 * mean_t max((V - R)^2, (V_clip - R)^2)``.

    ``V_clip = old_V + clip(V - old_V, -clip, clip)`` keeps the value head from moving further than
    ``clip`` per update unless that lowers the loss less than the clipped move would.

    Returns:
        ``(loss, stats)``; stats: ``clip_fraction`` (tokens where the clipped error is the larger).
    """
    _check_2d("value_loss", values, old_values=old_values, returns=returns, mask=mask)
    maskb = mask.to(dtype=torch.bool, device=values.device)
    v = values.float()
    old = old_values.detach().float()
    target = returns.detach().float()
    v_clipped = old + torch.clamp(v - old, -clip, clip)
    unclipped = (v - target).square()
    clipped = (v_clipped - target).square()
    loss = 0.5 * _masked_mean(torch.maximum(unclipped, clipped), maskb)
    with torch.no_grad():
        stats = {"clip_fraction": _masked_mean((clipped > unclipped).float(), maskb)}
    return loss, stats


def pairwise_reward_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry reward-model loss ``-log σ(s_chosen - s_rejected)``, averaged over pairs.

    The paper's reward model ranks the reference response (chosen) above a generated one whose
    ROUGE-L to the reference is below 0.3 (rejected). ``logsigmoid`` keeps large margins finite.

    Returns:
        ``(loss, stats)``; stats: ``accuracy`` (fraction with chosen > rejected, ties count as
        wrong) and ``margin`` (mean ``s_chosen - s_rejected``).
    """
    if chosen_scores.shape != rejected_scores.shape or chosen_scores.ndim != 1 or chosen_scores.numel() == 0:
        raise ValueError(
            f"pairwise_reward_loss: chosen {tuple(chosen_scores.shape)} and rejected "
            f"{tuple(rejected_scores.shape)} must be the same non-empty (N,) shape"
        )
    margin = chosen_scores.float() - rejected_scores.float()
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"accuracy": (margin > 0).float().mean(), "margin": margin.mean()}
    return loss, stats
