"""History text -> ids for the ConvCompressor: ``U_1 <MEM> U_2 <MEM> ... U_T <MEM>`` (paper 3.2, fig. 3).

This half of the compressor needs only a tokenizer, so it runs in DataLoader workers and the data
pipeline imports it without any model code; the model half (ids -> memory embeddings) is
:class:`multimood.models.compressor.MambaHistoryCompressor`. The turn texts come from
:func:`multimood.data.mesc.format_history_turn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from multimood.constants import MEM_TOKEN

# The paper's compressor backbone (appendix B.2). The ``-hf`` repository holds the transformers
# layout and the GPT-NeoX tokenizer the model was trained with, which is the tokenizer that must
# feed it (see MambaHistoryCompressor); the compressor defaults its backbone to the same name.
DEFAULT_HISTORY_TOKENIZER = "state-spaces/mamba-370m-hf"


@dataclass(frozen=True)
class HistoryIds:
    """Backbone input ids for one history, ``U_1 <MEM> ... U_k <MEM>`` for the newest k turns.

    ``num_turns``: turns given; ``num_kept``: turns that fit in the token budget (the newest ones).
    ``input_ids`` holds exactly ``num_kept`` ``<MEM>`` ids, each the last id of its turn.
    """

    input_ids: list[int]
    num_turns: int
    num_kept: int

    @property
    def num_dropped(self) -> int:
        return self.num_turns - self.num_kept


def build_history_ids(turn_ids: Sequence[Sequence[int]], mem_token_id: int, max_tokens: int) -> HistoryIds:
    """Join tokenised turns (oldest first) as ``U_1 <MEM> U_2 <MEM> ...`` within ``max_tokens`` ids.

    When the whole history does not fit, whole turns are dropped from the oldest end: a turn is
    never cut, so every kept turn keeps its ``<MEM>`` and the kept turns are the most recent,
    contiguous ones. If the newest turn alone (with its ``<MEM>``) exceeds the budget, nothing is
    kept (``num_kept == 0``); callers count that case through the returned numbers.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    kept: list[Sequence[int]] = []
    used = 0
    for ids in reversed(turn_ids):
        if mem_token_id in ids:
            raise ValueError(f"a turn's ids already contain the <MEM> id {mem_token_id}: {list(ids)[:20]}")
        cost = len(ids) + 1  # the turn and its <MEM>
        if used + cost > max_tokens:
            break
        kept.append(ids)
        used += cost
    out: list[int] = []
    for ids in reversed(kept):
        out.extend(int(i) for i in ids)
        out.append(mem_token_id)
    return HistoryIds(input_ids=out, num_turns=len(turn_ids), num_kept=len(kept))


def pad_history_batch(
    sequences: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(input_ids (B, L), attention_mask (B, L))``.

    Right padding is what keeps Mamba exact: the model is causal, so ids placed *after* a sample's
    last ``<MEM>`` cannot change any hidden state at or before it, on every code path (torch
    fallback, mambapy, fused CUDA kernels). See :class:`MambaHistoryCompressor` for why left
    padding is not safe. A batch of empty histories gives ``L == 0``.
    """
    length = max((len(s) for s in sequences), default=0)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


class HistoryTokenizer:
    """Turns formatted history turns into backbone ids with ``<MEM>`` after each; needs no model.

    Args:
        tokenizer: name of the tokenizer that feeds Mamba (hub id, local folder or ``tiny:...``;
            resolved with :func:`multimood.hub.resolve`). The paper's backbone uses its own
            GPT-NeoX tokenizer, shipped in ``state-spaces/mamba-370m-hf``.
        max_tokens: budget for ``U_1 <MEM> ... U_k <MEM>`` including the ``<MEM>`` ids; the oldest
            whole turns are dropped beyond it (:func:`build_history_ids`).

    ``<MEM>`` is registered as a special token of the tokenizer (when it is not one already) only
    to give it an id that no text produces and a readable ``decode``; utterances are tokenised with
    ``split_special_tokens=True``, so text such as ``"<MEM>"`` or ``"<|endoftext|>"`` inside an
    utterance stays plain text. The id may lie past the backbone's embedding table: the compressor
    never looks it up (it substitutes its own learned ``<MEM>`` vector).
    """

    def __init__(self, tokenizer: str = DEFAULT_HISTORY_TOKENIZER, max_tokens: int = 4096) -> None:
        from transformers import AddedToken, AutoTokenizer

        from multimood.hub import resolve

        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.name = tokenizer
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(resolve(tokenizer))
        if MEM_TOKEN not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens(
                [AddedToken(MEM_TOKEN, special=True, normalized=False)], special_tokens=True
            )
        self.mem_token_id = int(self.tokenizer.convert_tokens_to_ids(MEM_TOKEN))
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"tokenizer {tokenizer!r} has neither a pad nor an eos token to pad with")
        if pad == self.mem_token_id:
            raise ValueError(f"tokenizer {tokenizer!r}: the pad id equals the <MEM> id {pad}")
        self.pad_token_id = int(pad)

    def tokenize_turns(self, turns: Sequence[str]) -> list[list[int]]:
        """Ids of each turn text on its own (no special tokens added, none recognised in the text)."""
        if not turns:
            return []
        encoded = self.tokenizer(list(turns), add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in encoded["input_ids"]]

    def __call__(self, turns: Sequence[str]) -> HistoryIds:
        """``U_1 <MEM> ... U_k <MEM>`` ids for formatted turns, oldest first (see :func:`multimood.data.mesc.format_history_turn`)."""
        return build_history_ids(self.tokenize_turns(turns), self.mem_token_id, self.max_tokens)

    def collate(self, histories: Sequence[HistoryIds]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask)`` for :meth:`MambaHistoryCompressor.forward`."""
        return pad_history_batch([h.input_ids for h in histories], self.pad_token_id)
