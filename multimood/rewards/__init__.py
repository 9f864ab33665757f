"""Rewards for RL: similarity (BGE-M3), trust judges, rationale verifier, their combination."""
