"""Rollouts on the fused model: prompts with their media and history, G sampled completions each, and
the per-token log-probabilities of those completions under the policy or the reference.

The media and the history are encoded once per prompt (:func:`encode_prompts`) and the feature
blocks are shared by the G completions, by the sampling and by every log-probability pass: in
stages D/D' the towers, projectors and compressor are frozen (paper: "as C"), so their outputs do
not change within a step.

Layout of a rollout batch (N = prompts x G rows, the G completions of a prompt consecutive):

- ``prompt_ids`` / ``prompt_mask``: (N, P), left-padded (the data modules' generation prompt);
- ``completion_ids`` / ``completion_mask``: (N, T), the new tokens; the mask covers each
  completion up to and including its end-of-turn token, padding after it is 0.

:func:`completion_logprobs` appends the completion to the prompt with every completion column
attended (padding after the end of turn sits after the tokens that matter, so causally it changes
nothing), splices the features with left padding, and so the last T positions of every row are the
completion: one LM pass with ``logits_to_keep=T + 1`` gives every completion token's log-prob.

Generation sits behind one seam, :class:`Rollout` (``TransformersRollout`` by default), so a faster
backend can replace it on GPUs (a vLLM engine fed with the spliced embeddings, for instance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from multimood.models.modes import evaluating
from multimood.rl.logprobs import token_logprobs

Blocks = dict[str, list[torch.Tensor | None]]


def repeat_blocks(blocks: Mapping[str, Sequence[torch.Tensor | None]], times: int) -> Blocks:
    """Each sample's feature block ``times`` times in a row (the G completions of a prompt)."""
    return {
        token: [block for block in per_sample for _ in range(times)] for token, per_sample in blocks.items()
    }


@torch.no_grad()
def encode_prompts(model: Any, batch: Mapping[str, Any]) -> Blocks:
    """The batch's feature blocks (media, history), computed once without gradients.

    Refuses a model whose encoders, projectors or compressor train: their features would then need
    gradients through every completion, which the RL stages do not support (the paper keeps them
    frozen after stage C).
    """
    training = [
        name
        for name, part in model.named_children()
        if name != "llm" and any(p.requires_grad for p in part.parameters())
    ]
    if training:
        raise ValueError(
            f"RL rollouts encode the media and history once without gradients, but {training} train; "
            "freeze them (trainable: frozen) for stages D/D'"
        )
    with evaluating(model):
        return model.feature_blocks(batch)


def completion_mask(completion_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """(N, T) long mask: 1 up to and including the first end-of-turn token of each row, 0 after."""
    is_end = torch.zeros_like(completion_ids, dtype=torch.bool)
    for token in eos_token_ids:
        is_end |= completion_ids == token
    ended_before = (is_end.long().cumsum(dim=1) - is_end.long()) > 0
    return (~ended_before).long()


def eos_token_ids(model: Any) -> list[int]:
    """End-of-turn ids the LLM's generation stops at (its generation config, else the tokenizer's)."""
    ids = getattr(getattr(model.llm.model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = model.tokenizer.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids)
    if not ids:
        raise ValueError("the LLM has no end-of-sequence token id: completions could not be delimited")
    return ids


@dataclass
class RolloutOutput:
    """Sampled completions: ids (N, T) and their mask (see the module docstring)."""

    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


class Rollout(Protocol):
    """The generation seam: sample completions for left-padded prompts with their feature blocks."""

    def __call__(
        self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, blocks: Blocks
    ) -> RolloutOutput: ...


def prompt_runs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """(N,) run index of every row: consecutive rows with the same prompt ids, mask and feature blocks
    (the G completions of a prompt, as :func:`repeat_blocks` lays them out) share one index.

    Blocks compare by identity first (``repeat_blocks`` repeats the same tensor), then by value.
    """
    n = prompt_ids.shape[0]
    same = torch.zeros(n, dtype=torch.bool)
    if n > 1:
        same[1:] = (
            ((prompt_ids[1:] == prompt_ids[:-1]) & (prompt_mask[1:] == prompt_mask[:-1])).all(dim=1).cpu()
        )
    for i in same.nonzero().flatten().tolist():
        for per_row in blocks.values():
            a, b = per_row[i], per_row[i - 1]
            if a is b:
                continue
            if a is None or b is None or a.shape != b.shape or not torch.equal(a, b):
                same[i] = False
                break
    return (~same).long().cumsum(dim=0) - 1


class TransformersRollout:
    """Sampling with transformers' ``generate`` on the spliced prompt embeddings (batched, KV cache,
    eval mode: no dropout in the rollouts).

    The G completions of a prompt share its prefix: with ``share_prompt_prefill`` the prompt (all but
    its last position) goes through the LM once per distinct prompt (:func:`prompt_runs`), and its KV
    cache is copied to the G rows before sampling starts; ``generate`` then only runs the last prompt
    position and the new tokens. Same tokens and log-probs as prefilling every row (up to float
    rounding of a different batch size), G times less prefill compute; TRL's transformers path
    prefills every row (benchmarks/grpo_step.py).

    Args:
        max_new_tokens: Longest completion (paper: 128).
        temperature: Sampling temperature (1.0, TRL's default).
        top_p: Nucleus sampling mass (1.0: off).
        top_k: Top-k sampling (0: off; transformers' own default is 50, so it is set explicitly).
        min_new_tokens: Shortest completion: the end-of-turn token cannot be sampled before it (0:
            no floor). ``min_new_tokens = max_new_tokens`` forces every completion to full length,
            which makes step times comparable (benchmarks/grpo_step.py); not for training runs,
            where the model must learn where to stop.
        share_prompt_prefill: Prefill each distinct prompt once (above); False prefills every row.
    """

    def __init__(
        self,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_new_tokens: int = 0,
        share_prompt_prefill: bool = True,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (sampling), got {temperature}")
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_new_tokens = min_new_tokens
        self.share_prompt_prefill = share_prompt_prefill

    @torch.no_grad()
    def __call__(
        self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, blocks: Blocks
    ) -> RolloutOutput:
        eos = eos_token_ids(model)
        runs = torch.arange(prompt_ids.shape[0])
        if self.share_prompt_prefill:
            runs = prompt_runs(prompt_ids, prompt_mask, blocks)
        first = torch.ones_like(runs, dtype=torch.bool)
        first[1:] = runs[1:] != runs[:-1]
        rows = first.nonzero().flatten().tolist()  # one row per distinct prompt
        with evaluating(model):
            spliced = model.splice(
                prompt_ids[rows],
                prompt_mask[rows],
                {token: [per_row[i] for i in rows] for token, per_row in blocks.items()},
                padding_side="left",
            )
            runs = runs.to(spliced.inputs_embeds.device)
            cache = None
            if len(rows) < len(runs) and spliced.inputs_embeds.shape[1] > 1:
                prefix = model.llm(
                    inputs_embeds=spliced.inputs_embeds[:, :-1],
                    attention_mask=spliced.attention_mask[:, :-1],
                    position_ids=spliced.position_ids[:, :-1],
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = prefix.past_key_values
                cache.batch_select_indices(runs)  # each prompt's cache to each of its rows
            out = model.llm.generate(
                inputs_embeds=spliced.inputs_embeds[runs],
                attention_mask=spliced.attention_mask[runs],
                past_key_values=cache,
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.min_new_tokens,
                eos_token_id=eos,
                pad_token_id=model.pad_token_id,
                # A sampled <video>/<audio>/<history> would be read back as a placeholder.
                suppress_tokens=sorted(model.token_ids.values()),
            )
        ids = getattr(out, "sequences", out)
        mask = completion_mask(ids, eos)
        ids = ids.masked_fill(mask == 0, model.pad_token_id)
        return RolloutOutput(ids, mask)


def completion_logprobs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    blocks: Blocks,
    completion_ids: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """(N, T) float32 log-probs of the completion tokens under ``model`` in its current mode and
    adapter state (gradients flow when enabled). See the module docstring for the layout."""
    logps, _ = completion_logprobs_and_hidden(
        model, prompt_ids, prompt_mask, blocks, completion_ids, temperature, hidden=False
    )
    return logps


def completion_logprobs_and_hidden(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    blocks: Blocks,
    completion_ids: torch.Tensor,
    temperature: float = 1.0,
    hidden: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`completion_logprobs` plus, with ``hidden``, the LM's last hidden states (N, T, H) at
    the positions whose logits score each completion token (position p scores token p + 1): the
    state a value head reads before that token is chosen (PPO's per-token values, as TRL aligns
    them). The hidden states come from the same pass (the LM head's input), not a second one.
    """
    n, length = completion_ids.shape
    placeholders = torch.tensor(sorted(model.token_ids.values()), device=completion_ids.device)
    if torch.isin(completion_ids, placeholders).any():
        raise ValueError("a completion holds a media/history placeholder id; rollouts must suppress them")
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(completion_ids, dtype=prompt_mask.dtype)], dim=1)
    spliced = model.splice(ids, mask, blocks, padding_side="left")
    inputs = {
        "inputs_embeds": spliced.inputs_embeds,
        "attention_mask": spliced.attention_mask,
        "position_ids": spliced.position_ids,
        "logits_to_keep": length + 1,
    }
    # With ``hidden``: the LM head's input, the final hidden states of exactly the kept positions.
    out, head_input = model.llm.forward_with_head_input(**inputs) if hidden else (model.llm(**inputs), None)
    logits = out.logits[:, :-1]  # position p predicts token p + 1: the last T + 1 give the T tokens
    if logits.shape[:2] != (n, length):
        raise RuntimeError(
            f"expected logits for {(n, length)} completion tokens, got {tuple(logits.shape[:2])}"
        )
    states = head_input[:, :-1] if hidden else None  # (N, T, H), after the final norm
    return token_logprobs(logits, completion_ids, temperature=temperature), states
