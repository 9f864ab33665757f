"""The PPO baseline's reward model: the fused model with a scalar head on the last token.

``score = head(h_last)``, where ``h_last`` is the LLM's final hidden state (after its final norm) at
the last token of ``prompt + answer + end-of-turn``, with the sample's media and history spliced in
as for the policy. Trained with the Bradley-Terry loss on (chosen, rejected) pairs
(:func:`multimood.rl.pairwise_reward_loss`, :mod:`multimood.rl.pairs`); the training loop is
``lit_modules.reward_model.RewardModelModule``. The PPO stage loads a trained one with
:func:`load_reward_model` and scores its rollouts with :meth:`RewardModel.score`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimood.rl.rollout import Blocks, encode_prompts, repeat_blocks

__all__ = ["RewardModel", "answer_completions", "load_reward_model", "sequence_scores"]


def answer_completions(
    tokenizer: Any, texts: Sequence[str], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answers as completions: ``text + eos`` tokenised alone (as the SFT targets are, see
    :class:`multimood.data.datasets.ChatEncoder`), right-padded. Returns ids and mask, (N, T)."""
    if not texts:
        raise ValueError("answer_completions: no texts")
    rows = [tokenizer(t + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def sequence_scores(
    model: Any,
    head: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    blocks: Blocks,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """(N,) float32 scores of left-padded prompts followed by right-padded completions.

    Padding of both is dropped by the splice and the rows are left-padded again, so the last
    position of every row is its last real token (the end of turn). One LM pass that keeps a single
    position's logits; gradients flow when enabled.
    """
    if completion_ids.shape != completion_mask.shape or completion_ids.shape[0] != prompt_ids.shape[0]:
        raise ValueError(
            f"sequence_scores: prompts {tuple(prompt_ids.shape)}, completions {tuple(completion_ids.shape)} "
            f"and mask {tuple(completion_mask.shape)} do not pair up"
        )
    if (completion_mask.sum(dim=1) == 0).any():
        raise ValueError("sequence_scores: an empty completion has no last token to score")
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    spliced = model.splice(ids, mask, blocks, padding_side="left")
    _, head_input = model.llm.forward_with_head_input(
        inputs_embeds=spliced.inputs_embeds,
        attention_mask=spliced.attention_mask,
        position_ids=spliced.position_ids,
        logits_to_keep=1,
    )
    last = head_input[:, -1]  # (N, H): left-padded, so the last column is the last token
    weight = next(head.parameters())
    return head(last.to(weight.dtype)).squeeze(-1).float()


class RewardModel(nn.Module):
    """A trained reward model for scoring rollouts: the fused model and its head, frozen.

    Args:
        model: The fused model, built as the reward-model stage built it (same LoRA settings).
        head: The scalar head; default ``nn.Linear(hidden, 1, bias=False)`` as the reward-model
            stage's (a bias would get no gradient from the pairwise loss).
    """

    def __init__(self, model: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.head = head if head is not None else nn.Linear(model.llm.hidden_size, 1, bias=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RewardModel:
        """Always eval mode: a reward model never trains inside the PPO stage (no dropout)."""
        return super().train(False)

    @torch.no_grad()
    def score(
        self,
        batch: Mapping[str, Any],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        repeats: int = 1,
    ) -> torch.Tensor:
        """(N,) scores of ``repeats`` completions per prompt of ``batch`` (consecutive per prompt)."""
        blocks = repeat_blocks(encode_prompts(self.model, batch), repeats)
        prompt_ids = batch["prompt_ids"].repeat_interleave(repeats, dim=0)
        prompt_mask = batch["prompt_attention_mask"].repeat_interleave(repeats, dim=0)
        return sequence_scores(
            self.model, self.head, prompt_ids, prompt_mask, blocks, completion_ids, completion_mask
        )


def load_reward_model(reward_model: RewardModel, path: str | Path) -> dict[str, int]:
    """Load a reward-model stage checkpoint (its trainable tensors: LoRA or LLM weights, the head).

    The frozen parts (towers, projectors, compressor, the LLM base) are not in the file: build the
    fused model the way the reward-model run did and load its ``init_from`` first. Every tensor in
    the file must exist in the model with the same shape, and the head must be among them.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"reward model checkpoint {file} not found")
    state = torch.load(file, map_location="cpu", weights_only=True).get("state_dict")
    if state is None:
        raise ValueError(f"{file} has no 'state_dict' (not a Lightning checkpoint)")
    own = reward_model.state_dict()
    if not any(k.startswith("head.") for k in state):
        raise ValueError(f"{file} has no 'head.*' tensors: not a reward-model stage checkpoint")
    unknown = sorted(k for k in state if k not in own)
    if unknown:
        raise ValueError(
            f"{file} has tensors this reward model lacks: {unknown[:5]} ({len(unknown)}); build the "
            "reward model as its run did (same LLM and LoRA settings)"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{file}: shapes differ from the model for {wrong[:5]}")
    reward_model.load_state_dict(state, strict=False)
    return {"tensors": len(state)}
