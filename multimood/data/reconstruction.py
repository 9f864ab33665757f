"""Stage A data: ConvCompressor pretraining by history reconstruction (paper 3.2, appendix B.2).

The paper: the ConvCompressor "is pre-trained with a frozen language model on a reconstruction task
to regenerate the original dialogue history from compressed ``<MEM>`` representations", and
"Training was performed for 3 epochs on single utterances (learning rate: 2.5e-5) and 1 epoch on
full conversations (learning rate: 1e-4)". One item is therefore a *window* of history entries:

* ``unit="utterance"`` (phase 1): every utterance of a dialogue on its own, a one-turn history;
* ``unit="conversation"`` (phase 2): a whole dialogue, cut into consecutive windows only when it
  does not fit the compressor's token budget (``history_max_tokens``, ``<MEM>`` ids included) or
  the answer budget (``max_answer_tokens``, LLM tokens). Every entry lands in exactly one window.

Each entry is written as the SFT history writes it (:func:`multimood.data.mesc.format_history_turn`:
role, emotion, strategy, utterance), so the compressor learns on the very text it reads in stage C.
The compressor reads ``U_1 <MEM> ... U_k <MEM>`` (:class:`~multimood.data.history.HistoryTokenizer`);
the LLM reads a chat whose user message is an instruction followed by the ``<history>`` placeholder
(replaced by the k memory embeddings), and the supervised answer is the k entry texts, one per line.

Where the paper is silent we follow the authors' released code
(github.com/quangtuan-0504/Multimood, branch ``feature/train_sft``,
``framework/model/mamba_compressor/``), and say where we do not:

* the instruction: theirs, "Please reconstruct the conversation in a natural way." for single
  utterances and "Please reconstruct the conversation history" for conversations
  (:data:`RECONSTRUCTION_INSTRUCTIONS`), placed *before* the memory, as their
  ``[instruction][memory][target]`` layout;
* the target is the history text itself, as theirs (``target_text = input_text``), but without
  the literal ``<MEM>`` markers theirs kept in it (a compressor token, not text the LLM should
  write), and inside the LLM's chat template (``ChatEncoder``, as every other stage) rather than
  raw text;
* phase 1 reads single *utterances* (theirs: CSV rows); phase 2 reads merged *turns* by default,
  the entries the SFT history gives the compressor (one ``<MEM>`` per merged turn), where theirs
  read CSV rows again: ``conversation_entries="utterances"`` gives theirs;
* they truncated histories and targets at 512 LLM tokens (cutting targets mid-text); we cut
  conversations into whole-entry windows instead, so a target is never truncated.

Utterance text is private: nothing here logs it; reports hold counts and identifiers only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch.utils.data import Dataset

from multimood.constants import HISTORY_TOKEN, PLACEHOLDER_TOKENS
from multimood.data.datasets import ChatEncoder
from multimood.data.history import HistoryTokenizer
from multimood.data.mesc import Dialogue, Turn, format_history_turn
from multimood.data.sampling import split_key

ReconstructionUnit = Literal["utterance", "conversation"]
ConversationEntries = Literal["turns", "utterances"]

# The authors' instructions (framework/model/mamba_compressor/mamba_compressor.py, feature/train_sft).
RECONSTRUCTION_INSTRUCTIONS: dict[str, str] = {
    "utterance": "Please reconstruct the conversation in a natural way.",
    "conversation": "Please reconstruct the conversation history",
}

TOO_LONG_FOR_HISTORY = "longer than history_max_tokens on its own"
TOO_LONG_FOR_ANSWER = "longer than max_answer_tokens on its own"


@dataclass(frozen=True)
class HistoryWindow:
    """Consecutive history entries of one dialogue: one stage-A item.

    ``start`` is the index of the first entry among the dialogue's entries (utterances or merged
    turns, per the unit); ``lines`` are the formatted entries (private text: kept out of the repr).
    """

    split: str
    dialogue_id: int
    start: int
    lines: tuple[str, ...] = field(repr=False)

    @property
    def num_entries(self) -> int:
        return len(self.lines)

    @property
    def sample_id(self) -> str:
        """``dia{D}_e{first}-{last}``: the dialogue and the entry range (entries, not utterance ids)."""
        return f"dia{self.dialogue_id}_e{self.start}-{self.start + len(self.lines) - 1}"

    @property
    def answer(self) -> str:
        """The reconstruction target: the entries, one per line, oldest first."""
        return "\n".join(self.lines)


@dataclass(frozen=True)
class SkippedEntry:
    """An entry that fits in no window on its own, and why (identifiers only)."""

    split: str
    dialogue_id: int
    entry: int
    reason: str


@dataclass
class WindowReport:
    """What :func:`build_windows` made of a split: counts and identifiers, never text."""

    dialogues: int = 0
    entries: int = 0
    windows: int = 0
    skipped: list[SkippedEntry] = field(default_factory=list)

    def summary(self) -> str:
        reasons = Counter(s.reason for s in self.skipped)
        text = f"{self.dialogues} dialogues, {self.entries} entries -> {self.windows} windows"
        if reasons:
            text += "; skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        return text


def dialogue_entries(
    dialogue: Dialogue, unit: ReconstructionUnit, conversation_entries: ConversationEntries = "turns"
) -> tuple[Turn, ...]:
    """The history entries of ``dialogue``: single utterances (phase 1, or ``conversation_entries=
    "utterances"``) or merged turns (phase 2 default, as the SFT history)."""
    if unit not in RECONSTRUCTION_INSTRUCTIONS:
        raise ValueError(f"unit must be 'utterance' or 'conversation', got {unit!r}")
    if conversation_entries not in ("turns", "utterances"):
        raise ValueError(
            f"conversation_entries must be 'turns' or 'utterances', got {conversation_entries!r}"
        )
    if unit == "conversation" and conversation_entries == "turns":
        return dialogue.turns
    return tuple(Turn(u.speaker, (u,)) for u in dialogue.utterances)


def pack_windows(
    history_costs: Sequence[int],
    answer_costs: Sequence[int],
    history_budget: int,
    answer_budget: int | None,
    max_entries: int | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """Greedy consecutive windows ``[(start, end), ...]`` (end exclusive) within both budgets.

    ``history_costs[i]``: compressor ids of entry i with its ``<MEM>``; ``answer_costs[i]``: LLM
    tokens of its line plus its separator. A window closes when the next entry would exceed a
    budget or ``max_entries``. An entry over a budget on its own is returned in the second list
    ``[(index, reason)]`` and closes the window before it (windows stay contiguous).
    """
    if len(history_costs) != len(answer_costs):
        raise ValueError("history_costs and answer_costs must have one value per entry")
    windows: list[tuple[int, int]] = []
    skipped: list[tuple[int, str]] = []
    start, used_h, used_a = 0, 0, 0
    for i, (h, a) in enumerate(zip(history_costs, answer_costs, strict=True)):
        alone = None
        if h > history_budget:
            alone = TOO_LONG_FOR_HISTORY
        elif answer_budget is not None and a > answer_budget:
            alone = TOO_LONG_FOR_ANSWER
        full = (
            used_h + h > history_budget
            or (answer_budget is not None and used_a + a > answer_budget)
            or (max_entries is not None and i - start >= max_entries)
        )
        if (alone or full) and i > start:
            windows.append((start, i))
        if alone:
            skipped.append((i, alone))
            start, used_h, used_a = i + 1, 0, 0
            continue
        if full and i > start:
            start, used_h, used_a = i, 0, 0
        used_h, used_a = used_h + h, used_a + a
    if start < len(history_costs):
        windows.append((start, len(history_costs)))
    return windows, skipped


def build_windows(
    dialogues: Sequence[Dialogue],
    unit: ReconstructionUnit,
    history_tokenizer: HistoryTokenizer,
    llm_tokenizer: Any,
    max_answer_tokens: int | None,
    conversation_entries: ConversationEntries = "turns",
    with_description: bool = True,
) -> tuple[list[HistoryWindow], WindowReport]:
    """Every window of ``dialogues`` (module docstring) and a report of what was made and skipped.

    The compressor budget is ``history_tokenizer.max_tokens`` (exact: the ids of a window are the
    concatenation of its entries' ids and ``<MEM>`` s). The answer budget is checked on the joined
    text of every window, since tokens may merge across the line breaks.
    """
    if max_answer_tokens is not None and max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1 or None, got {max_answer_tokens}")
    report = WindowReport(dialogues=len(dialogues))
    windows: list[HistoryWindow] = []
    max_entries = 1 if unit == "utterance" else None

    def answer_length(lines: Sequence[str]) -> int:
        return len(llm_tokenizer("\n".join(lines), add_special_tokens=False)["input_ids"])

    for dialogue in dialogues:
        entries = dialogue_entries(dialogue, unit, conversation_entries)
        lines = [format_history_turn(turn, with_description=with_description) for turn in entries]
        report.entries += len(lines)
        if not lines:
            continue
        history_costs = [len(ids) + 1 for ids in history_tokenizer.tokenize_turns(lines)]
        # One more token per line for the line break: exact unless BPE merges across it.
        llm_ids = llm_tokenizer(lines, add_special_tokens=False)["input_ids"]
        answer_costs = [len(ids) + 1 for ids in llm_ids]
        spans, skipped = pack_windows(
            history_costs, answer_costs, history_tokenizer.max_tokens, max_answer_tokens, max_entries
        )
        for index, reason in skipped:
            report.skipped.append(SkippedEntry(dialogue.split, dialogue.dialogue_id, index, reason))
        for start, end in spans:
            # The estimate counts one token per line break; BPE may merge across one, so a window of
            # several entries is checked on its joined text and shrunk from the end until it fits.
            first = start
            while first < end:
                last = end
                while (
                    max_answer_tokens is not None
                    and last - first > 1
                    and answer_length(lines[first:last]) > max_answer_tokens
                ):
                    last -= 1
                windows.append(
                    HistoryWindow(dialogue.split, dialogue.dialogue_id, first, tuple(lines[first:last]))
                )
                first = last
    report.windows = len(windows)
    return windows, report


class HistoryReconstructionDataset(Dataset):
    """Stage-A items: compressor ids of a window, and a chat that asks the LLM to write it back.

    Args:
        windows: from :func:`build_windows`.
        encoder: the LLM's :class:`~multimood.data.datasets.ChatEncoder`.
        history_tokenizer: the compressor's :class:`~multimood.data.history.HistoryTokenizer`.
        instruction: the user message before the ``<history>`` placeholder (see
            :data:`RECONSTRUCTION_INSTRUCTIONS`).

    An item has the keys :class:`~multimood.data.datasets.MultiModalCollator` batches: the chat
    ``input_ids``/``labels`` (labels only on the reconstruction text and the end-of-turn token),
    ``prompt_ids``, the ``history`` ids (exactly one ``<MEM>`` per entry), ``answer`` and
    ``reference`` (the text to reconstruct), no media and no class targets.
    """

    def __init__(
        self,
        windows: Sequence[HistoryWindow],
        encoder: ChatEncoder,
        history_tokenizer: HistoryTokenizer,
        instruction: str,
    ) -> None:
        inside = [t for t in PLACEHOLDER_TOKENS if t in instruction]
        if inside:
            raise ValueError(
                f"instruction must not contain placeholder tokens {inside}; the dataset adds {HISTORY_TOKEN}"
            )
        self.windows = list(windows)
        self.encoder = encoder
        self.history_tokenizer = history_tokenizer
        self.instruction = instruction
        self.message = f"{instruction}\n{HISTORY_TOKEN}"
        self._prompt_ids = encoder.prompt_ids(self.message)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, _ = split_key(key)
        window = self.windows[index]
        history = self.history_tokenizer(window.lines)
        if history.num_kept != window.num_entries:
            raise RuntimeError(
                f"{window.sample_id}: the history tokenizer kept {history.num_kept} of {window.num_entries} "
                f"entries; the windows were built with another budget than max_tokens="
                f"{self.history_tokenizer.max_tokens}"
            )
        answer = window.answer
        return {
            "sample_id": window.sample_id,
            **self.encoder.encode_ids(self._prompt_ids, answer),
            "history": history,
            "history_turns": history.num_kept,
            "history_turns_dropped": 0,
            "targets": {},
            "reference": answer,
            "answer": answer,
            "media_issues": [],
            "modalities": (),
        }
