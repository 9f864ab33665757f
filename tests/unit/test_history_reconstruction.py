"""Stage-A data: reconstruction windows, item layout, and phase-1 / phase-2 counts (synthetic and real MESC)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules import MESCHistoryDataModule
from multimood.constants import HISTORY_TOKEN, IGNORE_INDEX
from multimood.data.mesc import format_history_turn, load_mesc
from multimood.data.reconstruction import (
    RECONSTRUCTION_INSTRUCTIONS,
    TOO_LONG_FOR_ANSWER,
    TOO_LONG_FOR_HISTORY,
    HistoryReconstructionDataset,
    pack_windows,
)

REAL_TOKENIZER = "packaged:qwen2-tokenizer"


def _module(data_dir: Path, unit: str, **kwargs) -> MESCHistoryDataModule:
    options = {"tokenizer": "tiny:qwen2", "history_tokenizer": "tiny:mamba", "history_max_tokens": 1024}
    options.update(kwargs)
    dm = MESCHistoryDataModule(str(data_dir), unit=unit, **options)
    dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------------- packing
def test_pack_windows_by_hand() -> None:
    # history costs 3, 4, 2, 5, 1 under a budget of 7; answer costs never bind.
    windows, skipped = pack_windows([3, 4, 2, 5, 1], [1] * 5, history_budget=7, answer_budget=None)
    assert windows == [(0, 2), (2, 4), (4, 5)] and skipped == []
    # The answer budget binds: 2 + 2 fits 4, a third does not.
    windows, _ = pack_windows([1] * 5, [2] * 5, history_budget=100, answer_budget=4)
    assert windows == [(0, 2), (2, 4), (4, 5)]
    # One entry per window (phase 1).
    windows, _ = pack_windows([1, 1, 1], [1, 1, 1], history_budget=100, answer_budget=None, max_entries=1)
    assert windows == [(0, 1), (1, 2), (2, 3)]


def test_an_entry_over_a_budget_alone_is_skipped_and_splits_the_window() -> None:
    windows, skipped = pack_windows([1, 9, 1, 1, 1], [1, 1, 1, 9, 1], history_budget=5, answer_budget=5)
    assert skipped == [(1, TOO_LONG_FOR_HISTORY), (3, TOO_LONG_FOR_ANSWER)]
    assert windows == [(0, 1), (2, 3), (4, 5)]


# ----------------------------------------------------------------------------------- items
def test_item_layout(synthetic_mesc: Path) -> None:
    dm = _module(synthetic_mesc, "conversation", batch_size=2)
    tok, hist = dm.tokenizer, dm.history_tokenizer
    dataset = dm.datasets["val"]
    item = dataset[0]
    window = dataset.windows[0]
    assert window.num_entries > 1  # a conversation, not one utterance

    # The prompt: the authors' instruction, then the <history> placeholder, exactly once.
    prompt = tok.decode(item["prompt_ids"])
    assert prompt.count(HISTORY_TOKEN) == 1
    assert f"{RECONSTRUCTION_INSTRUCTIONS['conversation']}\n{HISTORY_TOKEN}" in prompt
    placeholder = tok.convert_tokens_to_ids(HISTORY_TOKEN)
    assert (item["input_ids"] == placeholder).sum() == 1

    # Labels: exactly the reconstruction text and the end-of-turn token, nothing of the prompt.
    supervised = item["labels"] != IGNORE_INDEX
    n_prompt = len(item["prompt_ids"])
    assert not supervised[:n_prompt].any() and supervised[n_prompt:].all()
    assert torch.equal(item["input_ids"][:n_prompt], item["prompt_ids"])
    expected_lines = [format_history_turn(t) for t in dm.data.dialogues["val"][0].turns]
    assert item["answer"] == "\n".join(expected_lines)
    assert tok.decode(item["labels"][supervised]) == item["answer"] + tok.eos_token

    # Compressor ids: each entry's own ids followed by <MEM>, in order.
    mem = hist.mem_token_id
    expected_ids: list[int] = []
    for ids in hist.tokenize_turns(expected_lines):
        expected_ids += [*ids, mem]
    assert item["history"].input_ids == expected_ids
    assert item["history_turns"] == len(expected_lines) == expected_ids.count(mem)

    # The collator batches it unchanged.
    batch = dm.collator()([dataset[0], dataset[0]])
    assert batch["history_ids"].shape[0] == 2
    assert batch["history_mem_token_id"] == mem
    assert batch["targets"] == {}
    assert torch.equal(batch["history_turns"], torch.tensor([len(expected_lines)] * 2))


def test_utterance_items_are_one_entry_each(synthetic_mesc: Path) -> None:
    dm = _module(synthetic_mesc, "utterance")
    dataset = dm.datasets["train"]
    first = dm.data.dialogues["train"][0]
    for k, utterance in enumerate(first.utterances[:4]):
        item = dataset[k]
        assert item["history_turns"] == 1
        assert item["history"].input_ids[-1] == dm.history_tokenizer.mem_token_id
        assert item["history"].input_ids.count(dm.history_tokenizer.mem_token_id) == 1
        assert item["answer"].startswith(f"{utterance.speaker} (emotion: {utterance.emotion}")
        assert item["sample_id"] == f"dia{first.dialogue_id}_e{k}-{k}"
    assert RECONSTRUCTION_INSTRUCTIONS["utterance"] in dm.tokenizer.decode(dataset[0]["prompt_ids"])


def test_an_instruction_with_a_placeholder_is_refused(synthetic_mesc: Path) -> None:
    dm = _module(synthetic_mesc, "utterance")
    with pytest.raises(ValueError, match="placeholder"):
        HistoryReconstructionDataset(
            [], dm.datasets["val"].encoder, dm.history_tokenizer, f"x {HISTORY_TOKEN}"
        )
    with pytest.raises(ValueError, match="unit"):
        MESCHistoryDataModule(str(synthetic_mesc), unit="dialogue")


# ----------------------------------------------------------------------------------- counts
def _entries_in_order(dm: MESCHistoryDataModule, split: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for window in dm.datasets[split].windows:
        out.setdefault(window.dialogue_id, []).extend(window.lines)
    return out


def test_phase_counts_on_the_synthetic_mesc(synthetic_mesc: Path) -> None:
    data = load_mesc(synthetic_mesc)
    utterances = {s: c.utterances for s, c in data.report.counts.items()}
    turns = {s: c.client_turns + c.therapist_turns for s, c in data.report.counts.items()}
    dialogues = {s: c.dialogues for s, c in data.report.counts.items()}

    phase1 = _module(synthetic_mesc, "utterance")
    assert {s: len(d) for s, d in phase1.datasets.items()} == utterances
    phase2 = _module(synthetic_mesc, "conversation")
    assert {s: len(d) for s, d in phase2.datasets.items()} == dialogues  # every conversation fits whole
    assert phase2.entries_per_split() == turns
    per_utterance = _module(synthetic_mesc, "conversation", conversation_entries="utterances")
    assert per_utterance.entries_per_split() == utterances
    assert {s: len(d) for s, d in per_utterance.datasets.items()} == dialogues

    # Budgets just above the longest entry cut conversations into windows; every entry lands in
    # exactly one window, in order, and every window keeps both budgets.
    lines = [line for d in phase2.datasets.values() for w in d.windows for line in w.lines]
    history_budget = max(len(ids) + 1 for ids in phase2.history_tokenizer.tokenize_turns(lines))
    answer_budget = (
        max(len(phase2.tokenizer(line, add_special_tokens=False)["input_ids"]) for line in lines) + 1
    )
    small = _module(
        synthetic_mesc, "conversation", history_max_tokens=history_budget, max_answer_tokens=answer_budget
    )
    for split in ("train", "val", "test"):
        assert len(small.datasets[split]) > dialogues[split]
        assert small.reports[split].skipped == []
        assert _entries_in_order(small, split) == _entries_in_order(phase2, split)
        for window in small.datasets[split].windows:
            answer = small.tokenizer(window.answer, add_special_tokens=False)["input_ids"]
            assert len(answer) <= answer_budget
            assert len(small.history_tokenizer(window.lines).input_ids) <= history_budget
    # One token less than the longest entry: that entry is skipped and counted, never cut.
    tight = _module(synthetic_mesc, "conversation", history_max_tokens=history_budget - 1)
    skipped = [s for r in tight.reports.values() for s in r.skipped]
    assert skipped and {s.reason for s in skipped} == {TOO_LONG_FOR_HISTORY}
    kept = sum(w.num_entries for d in tight.datasets.values() for w in d.windows)
    assert kept + len(skipped) == sum(turns.values())


def test_descriptions_follow_the_split_files(synthetic_mesc: Path) -> None:
    # The synthetic MESC has train.json: "auto" keeps the descriptions on every split, "false" drops them.
    with_desc = _module(synthetic_mesc, "conversation")
    without = _module(synthetic_mesc, "conversation", descriptions=False)
    assert any("[Description:" in w.answer for w in with_desc.datasets["train"].windows)
    assert not any("[Description:" in w.answer for s in without.datasets.values() for w in s.windows)


@pytest.mark.real_data
def test_phase_counts_on_the_real_annotations(real_mesc_dir: Path) -> None:
    phase1 = _module(real_mesc_dir, "utterance", tokenizer=REAL_TOKENIZER)
    # MESC: 28,762 utterances; train is the CSV minus val.json and test.json (no train.json).
    assert {s: len(d) for s, d in phase1.datasets.items()} == {"train": 23126, "val": 2714, "test": 2922}
    assert all(not r.skipped for r in phase1.reports.values())
    # No train.json: descriptions are off on every split, so train and val entries read alike.
    assert not any("[Description:" in w.answer for w in phase1.datasets["val"].windows)

    phase2 = _module(real_mesc_dir, "conversation", tokenizer=REAL_TOKENIZER, history_max_tokens=4096)
    dialogues = {s: len(d) for s, d in phase2.data.dialogues.items()}
    assert dialogues == {"train": 815, "val": 102, "test": 102}
    counts = phase2.data.report.counts
    entries = phase2.entries_per_split()
    assert entries == {s: c.client_turns + c.therapist_turns for s, c in counts.items()}
    assert entries == {"train": 8138, "val": 974, "test": 994}  # merged turns
    # Measured with the real Qwen2 vocabulary (answer budget 2,048) and tiny:mamba (history budget
    # 4,096): every MESC conversation fits whole, one window each.
    assert {s: len(d) for s, d in phase2.datasets.items()} == dialogues
    for split, dataset in phase2.datasets.items():
        assert sum(w.num_entries for w in dataset.windows) == entries[split]
