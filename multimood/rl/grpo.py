"""GRPO maths (paper appendix, eqs. 8-12; Shao et al. 2024): group advantages and the clipped loss.

The paper writes the objective it maximises as (eq. 8)
``J_GRPO(θ) = E_{q ~ P(Q), {o_i} ~ π_θold(O|q)} [L_GRPO(θ)]`` with, per completion ``o_i`` of a group of
``G`` sampled for the same prompt (eqs. 9-10),

    L_GRPO(θ) = -(1/G) Σ_i (1/|o_i|) Σ_t l_{i,t}
    l_{i,t}   = π_θ(o_{i,t} | q, o_{i,<t}) / [π_θ(o_{i,t} | q, o_{i,<t})]_no-grad · Â_{i,t} - β D_KL[π_θ || π_ref]

"the advantage is calculated to reflect these relative comparisons. It is normalized as follows"
(eq. 11) ``Â_{i,t} = (r_i - mean(r)) / std(r)``, and "KL divergence is estimated using the
approximator introduced by (Schulman 2020)" (eq. 12)
``D_KL = π_ref/π_θ - log(π_ref/π_θ) - 1``.

Eq. 10 is the single-update (on-policy) case: the ratio is 1 in value and only carries the gradient.
We implement the general PPO-style form that TRL implements (and that Shao et al. write with
``π_θold``): ``min(ρ Â, clip(ρ, 1-ε, 1+ε_high) Â)`` with ``ρ = π_θ / π_θold``; with ``old_logps=None``
(one update per generation) it reduces exactly to eq. 10. See docs/design/grpo.md for every
convention and where TRL 1.16 differs.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["LOSS_TYPES", "SCALES", "group_advantages", "grpo_loss"]

SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group-relative advantages (paper eq. 11): ``(r_i - mean(group)) / (std + eps)``, one per completion.

    Args:
        rewards: ``(N,)`` rewards, the ``group_size`` completions of each prompt consecutive
            (``N = prompts x group_size``, the order ``repeat_interleave`` gives).
        group_size: ``G``, completions per prompt.
        scale: ``"group"`` divides by each group's std (the paper); ``"batch"`` divides by the std of
            all valid rewards of the batch, still centring per group (TRL's ``scale_rewards="batch"``);
            ``"none"`` only centres (Dr. GRPO's recommendation, no per-question difficulty weighting).
        eps: added to the std, as TRL does (1e-4), so a tiny spread does not explode.
        valid: ``(N,)`` bool; False marks a completion whose reward is missing (a judge that failed).
            It is left out of its group's mean and std and gets advantage 0, so it moves nothing.

    Returns:
        ``(N,)`` float32 advantages, always finite. They are exactly 0 for invalid completions, for
        groups with fewer than 2 valid members (nothing to compare with) and for groups whose valid
        rewards are all equal (no relative signal; exactly 0 rather than rounding noise / eps).

    The std is the unbiased (Bessel-corrected, ``n - 1``) sample std over the valid members, as
    TRL 1.16 computes it (``trl.trainer.utils.nanstd``); the paper's eq. 11 does not say which.
    """
    if scale not in SCALES:
        raise ValueError(f"group_advantages: scale must be one of {SCALES}, got {scale!r}")
    if rewards.ndim != 1:
        raise ValueError(f"group_advantages: rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_advantages: N={rewards.numel()} rewards do not split into groups of "
            f"group_size={group_size} (N must be a multiple of group_size >= 1)"
        )
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    elif valid.shape != rewards.shape:
        raise ValueError(
            f"group_advantages: valid {tuple(valid.shape)} must have the shape of rewards {tuple(rewards.shape)}"
        )
    valid = valid.to(device=rewards.device, dtype=torch.bool)
    r = rewards.detach().float().masked_fill(~valid, 0.0)  # missing rewards are never read
    if not torch.isfinite(r).all():
        raise ValueError("group_advantages: a valid reward is NaN or infinite (mark it invalid instead)")

    r_g = r.view(-1, group_size)  # (P, G)
    v_g = valid.view(-1, group_size)
    count = v_g.sum(dim=1, keepdim=True)  # (P, 1)
    mean = r_g.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = (r_g - mean).masked_fill(~v_g, 0.0)

    if scale == "group":
        var = centred.square().sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
        adv = centred / (var.sqrt() + eps)
    elif scale == "batch":
        n = valid.sum()
        batch_mean = r.sum() / n.clamp(min=1)
        batch_var = ((r - batch_mean).masked_fill(~valid, 0.0).square().sum()) / (n - 1).clamp(min=1)
        adv = centred / (batch_var.sqrt() + eps)
    else:
        adv = centred

    # No relative signal: fewer than two valid members, or all valid rewards equal.
    big = torch.finfo(r.dtype).max
    spread = r_g.masked_fill(~v_g, -big).amax(dim=1, keepdim=True) - r_g.masked_fill(~v_g, big).amin(
        dim=1, keepdim=True
    )
    informative = (count >= 2) & (spread > 0)
    adv = torch.where(informative & v_g, adv, torch.zeros_like(adv))
    return adv.reshape(-1)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
    epsilon: float = 0.2,
    loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo",
    epsilon_high: float | None = None,
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss (paper eqs. 8-12) over a batch of completions, and detached statistics.

    Per token ``t`` of completion ``i``, with ``ρ = exp(logps - old_logps)`` and ``d = ref - logps``:

        surrogate = min(ρ Â_i, clip(ρ, 1 - ε, 1 + ε_high) Â_i)       (PPO clip; eq. 10 when ρ ≡ 1)
        KL        = exp(d) - d - 1                                    (k3 estimator, eq. 12)
        loss_t    = -(surrogate - β KL)

    then aggregated by ``loss_type``:

    - ``"grpo"`` (eq. 9, TRL ``"grpo"``): mean over each completion's tokens, then mean over the B
      completions. A completion with no tokens (all-masked row) contributes 0 and still counts in
      the B of the mean, as in TRL (its per-row token count is clamped to 1).
    - ``"bnpo"``: sum over all tokens / number of tokens in the batch (clamped to 1).
    - ``"dr_grpo"`` (Dr. GRPO): sum over all tokens / (B x ``max_completion_length``).

    Args:
        logps: ``(B, T)`` log-probabilities of the completion tokens under the policy being trained
            (carries the gradient; see :func:`multimood.rl.token_logprobs`).
        old_logps: ``(B, T)`` under the policy that sampled them, or None for on-policy
            (``old = logps.detach()``, so ``ρ = 1`` and only its gradient remains, as in eq. 10).
        ref_logps: ``(B, T)`` under the frozen reference policy; may be None when ``beta == 0``.
        advantages: ``(B,)`` one per completion (:func:`group_advantages`), or ``(B, T)`` per token.
        completion_mask: ``(B, T)`` 1/True on the completion tokens, 0/False on padding.
        beta: KL coefficient (paper: 1.12). 0 skips the KL term.
        epsilon: lower clip ``ε``; ``epsilon_high`` the upper one (default ``ε``; DAPO uses 0.28).
        loss_type: ``"grpo"``, ``"bnpo"`` or ``"dr_grpo"`` (above).
        max_completion_length: the ``dr_grpo`` constant; default T (the padded width). Pass the
            generation limit to match TRL, which uses ``GRPOConfig.max_completion_length``.

    Returns:
        ``(loss, stats)``: the scalar loss to minimise; ``stats`` holds detached scalar tensors:
        ``kl`` (token mean of the k3 estimate; present whenever ``ref_logps`` is given),
        ``clip_fraction/low`` (``ρ < 1 - ε`` with ``Â < 0``), ``clip_fraction/high`` (``ρ > 1 + ε_high``
        with ``Â > 0``), ``clip_fraction`` (either; the three as TRL's ``clip_ratio/*_mean``), ``ratio_mean``,
        ``advantage_mean`` (over completions), ``surrogate_mean`` and ``completion_length`` (mean tokens).
        Token means are over the masked tokens of the whole batch.

    Masked positions never reach the arithmetic (their log-ratios are set to 0 before ``exp``), so
    padding holding ``-inf`` or garbage cannot produce NaN or infinite values or gradients.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"grpo_loss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if logps.ndim != 2:
        raise ValueError(f"grpo_loss: logps must be (B, T), got shape {tuple(logps.shape)}")
    batch, width = logps.shape
    for name, tensor in (
        ("old_logps", old_logps),
        ("ref_logps", ref_logps),
        ("completion_mask", completion_mask),
    ):
        if tensor is not None and tensor.shape != logps.shape:
            raise ValueError(f"grpo_loss: {name} {tuple(tensor.shape)} must match logps {tuple(logps.shape)}")
    if advantages.shape not in ((batch,), (batch, width)):
        raise ValueError(
            f"grpo_loss: advantages {tuple(advantages.shape)} must be (B,)=({batch},) or (B, T)=({batch}, {width})"
        )
    if beta != 0 and ref_logps is None:
        raise ValueError(f"grpo_loss: beta={beta} needs ref_logps (pass beta=0 to train without the KL term)")
    if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
        raise ValueError(f"grpo_loss: epsilon={epsilon}, epsilon_high={epsilon_high} must be >= 0")
    eps_high = epsilon if epsilon_high is None else epsilon_high

    mask = completion_mask.to(device=logps.device, dtype=torch.bool)
    maskf = mask.float()
    logps = logps.float()
    old = logps.detach() if old_logps is None else old_logps.float()
    adv = advantages.float().detach()
    adv = adv[:, None] if adv.ndim == 1 else adv  # (B, 1) or (B, T)

    log_ratio = torch.where(mask, logps - old, torch.zeros_like(logps))
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    objective = surrogate
    kl = None
    if ref_logps is not None:
        d = torch.where(mask, ref_logps.float() - logps, torch.zeros_like(logps))
        kl = torch.exp(d) - d - 1.0  # eq. 12, k3: >= 0, 0 where π_θ = π_ref
        if beta != 0:
            objective = surrogate - beta * kl
    token_loss = -objective * maskf  # (B, T), 0 on padding

    tokens_per_row = maskf.sum(dim=1)
    total_tokens = tokens_per_row.sum()
    if loss_type == "grpo":
        loss = (token_loss.sum(dim=1) / tokens_per_row.clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = token_loss.sum() / total_tokens.clamp(min=1.0)
    else:
        length = width if max_completion_length is None else int(max_completion_length)
        if length < 1:
            raise ValueError(f"grpo_loss: max_completion_length must be >= 1, got {length}")
        loss = token_loss.sum() / (batch * length)

    with torch.no_grad():

        def token_mean(x: torch.Tensor) -> torch.Tensor:
            return (x.float() * maskf).sum() / total_tokens.clamp(min=1.0)

        low = (ratio < 1.0 - epsilon) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        stats = {
            "clip_fraction/low": token_mean(low),
            "clip_fraction/high": token_mean(high),
            "clip_fraction": token_mean(low | high),
            "ratio_mean": token_mean(ratio),
            "advantage_mean": advantages.detach().float().mean(),
            "surrogate_mean": token_mean(surrogate),
            "completion_length": tokens_per_row.mean(),
        }
        if kl is not None:
            stats["kl"] = token_mean(kl)
    return loss, {key: value.detach() for key, value in stats.items()}
