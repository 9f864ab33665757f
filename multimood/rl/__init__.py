"""GRPO and PPO maths: advantages, losses, KL estimators."""
