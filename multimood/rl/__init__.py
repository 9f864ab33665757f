"""GRPO and PPO maths: advantages, losses, KL estimators, per-token log-probabilities.

Pure torch functions over ``(B, T)`` completion tensors; the training loops (``lit_modules``) compose
them. See docs/design/grpo.md for the conventions and how they compare with TRL 1.16.
"""

from multimood.rl.grpo import LOSS_TYPES, SCALES, group_advantages, grpo_loss
from multimood.rl.logprobs import token_logprobs
from multimood.rl.ppo import (
    gae,
    kl_penalty_rewards,
    pairwise_reward_loss,
    ppo_policy_loss,
    value_loss,
    whiten,
)

__all__ = [
    "LOSS_TYPES",
    "SCALES",
    "gae",
    "group_advantages",
    "grpo_loss",
    "kl_penalty_rewards",
    "pairwise_reward_loss",
    "ppo_policy_loss",
    "token_logprobs",
    "value_loss",
    "whiten",
]
