"""MESC reader: split reconstruction, label checks, sample construction, errors naming file and line.

The real-data tests use the annotations in $MULTIMOOD_MESC_DIR (``real_mesc_dir`` fixture) and
never print utterance text.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from multimood.data import labels
from multimood.data.mesc import (
    CSV_COLUMNS,
    NO_CLIENT_TURN,
    Dialogue,
    MESCData,
    MESCFormatError,
    MESCMatchError,
    Turn,
    build_samples,
    format_history_turn,
    load_mesc,
    parse_timestamp,
    read_mesc_csv,
    read_split_file,
)

# --------------------------------------------------------------------------------------------
# Real annotations


@pytest.fixture(scope="module")
def mesc(real_mesc_dir: Path) -> MESCData:
    return load_mesc(real_mesc_dir)


def test_split_sizes_match_the_paper_and_spec(mesc: MESCData) -> None:
    counts = mesc.report.counts
    assert {s: counts[s].utterances for s in counts} == {"train": 23_126, "val": 2_714, "test": 2_922}
    assert {s: counts[s].dialogues for s in counts} == {"train": 815, "val": 102, "test": 102}
    assert {s: len(d) for s, d in mesc.dialogues.items()} == {"train": 815, "val": 102, "test": 102}
    ids = [d.dialogue_id for split in mesc.dialogues.values() for d in split]
    assert sorted(ids) == list(range(1019))  # every CSV dialogue in exactly one split


def test_every_val_and_test_dialogue_is_matched(mesc: MESCData) -> None:
    assert mesc.report.unmatched == []
    assert mesc.report.ambiguous == []
    for split in ("val", "test"):
        for dialogue in mesc.dialogues[split]:
            assert dialogue.problem_type and dialogue.situation
            assert all(turn.description for turn in dialogue.turns)
    # No train.json in the shared folder: train has no split-file context.
    assert all(d.problem_type is None and d.situation is None for d in mesc.dialogues["train"])
    assert mesc.report.counts["train"].utterances_with_description == 0


def test_label_vocabularies_are_exactly_the_spec(mesc: MESCData) -> None:
    turns = [t for split in mesc.dialogues.values() for d in split for t in d.turns]
    assert {t.emotion for t in turns} == set(labels.EMOTIONS)
    assert {t.strategy for t in turns if t.is_therapist} == set(labels.STRATEGIES)
    assert {t.strategy for t in turns if t.is_client} == {None}
    assert {t.speaker for t in turns} == set(labels.SPEAKERS)


def test_lowercase_open_question_rows_are_normalised(real_mesc_dir: Path, mesc: MESCData) -> None:
    with (real_mesc_dir / "MESC.csv").open(newline="", encoding="utf-8") as handle:
        raw = [row["Strategy"] for row in csv.DictReader(handle)]
    lowercase_rows = [i for i, value in enumerate(raw) if value == "open question"]
    assert len(lowercase_rows) == 3
    assert mesc.report.strategy_case_normalised == 3
    by_row = {t.row: t for split in mesc.dialogues.values() for d in split for t in d.turns}
    assert [by_row[i].strategy for i in lowercase_rows] == ["Open question"] * 3


def test_clip_names_use_the_zero_based_csv_row(real_mesc_dir: Path, mesc: MESCData) -> None:
    with (real_mesc_dir / "MESC.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    turns = sorted(
        (t for split in mesc.dialogues.values() for d in split for t in d.turns), key=lambda t: t.row
    )
    assert [t.row for t in turns] == list(range(len(rows)))
    for turn in turns[:: len(turns) // 50]:
        row = rows[turn.row]
        assert turn.clip_name == f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}_{turn.row}.mp4"
        assert turn.line == turn.row + 2  # header is line 1; no multi-line records in MESC.csv
    assert turns[0].clip_name == "dia0_utt0_0.mp4"


# Computed once from the real files (module docstring of multimood.data.mesc explains the rule):
# 10,326 therapist utterances, 240 of them before any client utterance of their dialogue.
EXPECTED_SAMPLES = {"train": 8_034, "val": 990, "test": 1_062}
EXPECTED_DROPPED = {"train": 218, "val": 11, "test": 11}


def test_sample_counts_per_split(mesc: MESCData) -> None:
    assert {s: len(v) for s, v in mesc.samples.items()} == EXPECTED_SAMPLES
    assert {s: c.samples for s, c in mesc.report.counts.items()} == EXPECTED_SAMPLES
    assert mesc.report.dropped_by_reason() == {s: {NO_CLIENT_TURN: n} for s, n in EXPECTED_DROPPED.items()}
    for counts in mesc.report.counts.values():
        assert counts.samples + counts.dropped == counts.therapist_utterances
    assert sum(c.therapist_utterances for c in mesc.report.counts.values()) == 10_326


def test_every_sample_follows_the_construction_rule(mesc: MESCData) -> None:
    for split, dialogues in mesc.dialogues.items():
        samples = iter(mesc.samples[split])
        for dialogue in dialogues:
            turns = dialogue.turns
            for t, turn in enumerate(turns):
                if not turn.is_therapist or not any(u.is_client for u in turns[:t]):
                    continue
                sample = next(samples)
                assert sample.target is turn and sample.split == split
                c = max(i for i in range(t) if turns[i].is_client)
                s = c
                while s > 0 and turns[s - 1].is_client:
                    s -= 1
                assert sample.client_turns == turns[s : c + 1]
                assert sample.reply_so_far == turns[c + 1 : t]
                assert all(u.is_therapist for u in sample.reply_so_far)
                assert sample.history == turns[:s] + turns[c + 1 : t]
                assert sample.client_emotion == turns[c].emotion
                assert sample.therapist_emotion == turn.emotion and sample.strategy == turn.strategy
                assert sample.clip_names == tuple(u.clip_name for u in turns[s : c + 1])
                assert (sample.problem_type, sample.situation) == (dialogue.problem_type, dialogue.situation)
        assert next(samples, None) is None


@pytest.mark.parametrize("history_turns", [0, 5, 9])
def test_history_length_options_keep_the_most_recent_turns(mesc: MESCData, history_turns: int) -> None:
    for split in ("val", "test"):
        for dialogue in mesc.dialogues[split]:
            full, _ = build_samples(dialogue)
            cut, _ = build_samples(dialogue, history_turns=history_turns)
            assert len(cut) == len(full)
            for a, b in zip(full, cut, strict=True):
                expected = a.history[-history_turns:] if history_turns else ()
                assert b.history == expected
                assert len(b.history) == min(history_turns, len(a.history))
                assert b.reply_so_far == a.reply_so_far  # never cut


def test_load_mesc_history_option_is_applied(real_mesc_dir: Path) -> None:
    data = load_mesc(real_mesc_dir, history_turns=5)
    assert max(len(s.history) for split in data.samples.values() for s in split) == 5
    assert data.report.history_turns == 5
    assert {s: len(v) for s, v in data.samples.items()} == EXPECTED_SAMPLES


def test_without_descriptions_no_description_reaches_a_sample(mesc: MESCData) -> None:
    for dialogue in mesc.dialogues["val"][:20]:
        samples, _ = build_samples(dialogue, descriptions=False)
        for sample in samples:
            turns = (*sample.history, *sample.client_turns, sample.target)
            assert all(turn.description is None for turn in turns)
            assert sample.client_text == sample.client_utterance
        with_desc, _ = build_samples(dialogue, descriptions=True)
        assert all(s.client_text.startswith(s.client_turns[0].text + " [Description: ") for s in with_desc)


def test_report_holds_counts_not_text(mesc: MESCData) -> None:
    dumped = json.dumps(mesc.report.to_dict())
    summary = mesc.report.summary()
    texts = [s.response for s in mesc.samples["test"][:50] if len(s.response) > 12]
    leaked = sum(text in dumped or text in summary for text in texts)  # a count: failures show no text
    assert texts and leaked == 0
    assert "8,034" in summary
    assert "text=" not in repr(mesc.samples["test"][0])  # reprs (and so test failures) hold no text


# --------------------------------------------------------------------------------------------
# Sample construction on a hand-made dialogue (documents the rule)


def _turn(i: int, speaker: str, emotion: str = "neutral", strategy: str | None = None) -> Turn:
    if speaker == labels.THERAPIST and strategy is None:
        strategy = "Approval"
    return Turn(7, i, 100 + i, 102 + i, speaker, f"u{i}", emotion, strategy, 1, 2, 1000 * i, 1000 * i + 500)


def test_sample_construction_on_a_small_dialogue() -> None:
    C, T = labels.CLIENT, labels.THERAPIST
    # 0:T 1:T 2:C 3:C 4:T 5:T 6:T 7:C 8:T
    speakers = [T, T, C, C, T, T, T, C, T]
    turns = tuple(_turn(i, s, emotion="joy" if i == 3 else "neutral") for i, s in enumerate(speakers))
    dialogue = Dialogue(7, "train", turns, "Problem", "Situation")
    samples, dropped = build_samples(dialogue)
    # The opening therapist turns have no client turn before them: dropped with a reason.
    assert [(d.utterance_id, d.reason) for d in dropped] == [(0, NO_CLIENT_TURN), (1, NO_CLIENT_TURN)]
    assert [s.target.utterance_id for s in samples] == [4, 5, 6, 8]
    ids = lambda ts: [t.utterance_id for t in ts]  # noqa: E731
    first, second, third, last = samples
    assert ids(first.client_turns) == [2, 3] and first.client_emotion == "joy"
    assert ids(first.history) == [0, 1] and ids(first.reply_so_far) == []
    # Therapist utterances between the client run and the target: the tail of the history.
    assert ids(second.client_turns) == [2, 3] and ids(second.reply_so_far) == [4]
    assert ids(second.history) == [0, 1, 4]
    assert ids(third.history) == [0, 1, 4, 5] and ids(third.reply_so_far) == [4, 5]
    assert ids(last.client_turns) == [7] and ids(last.history) == [0, 1, 2, 3, 4, 5, 6]
    assert first.clip_names == ("dia7_utt2_102.mp4", "dia7_utt3_103.mp4")
    assert first.sample_id == "dia7_utt4"
    short, _ = build_samples(dialogue, history_turns=2)
    assert [ids(s.history) for s in short] == [[0, 1], [1, 4], [4, 5], [5, 6]]
    none, _ = build_samples(dialogue, history_turns=0)
    assert all(s.history == () for s in none) and ids(none[2].reply_so_far) == [4, 5]


@pytest.mark.parametrize("bad", [-1, 2.5, True, "5"])
def test_history_turns_must_be_a_non_negative_int(bad) -> None:
    dialogue = Dialogue(7, "train", (_turn(0, labels.CLIENT), _turn(1, labels.THERAPIST)))
    with pytest.raises(ValueError, match="history_turns"):
        build_samples(dialogue, history_turns=bad)


def test_format_history_turn() -> None:
    client = _turn(0, labels.CLIENT, emotion="sadness")
    therapist = _turn(1, labels.THERAPIST, strategy="Open question")
    assert format_history_turn(client) == "Client (emotion: sadness): u0"
    assert format_history_turn(therapist) == "Therapist (emotion: neutral; strategy: Open question): u1"
    described = Turn(**{**vars(client), "description": "looks down"})
    assert format_history_turn(described) == "Client (emotion: sadness): u0 [Description: looks down]"
    assert format_history_turn(described, with_description=False) == "Client (emotion: sadness): u0"


def test_parse_timestamp() -> None:
    assert parse_timestamp("00:00:54,097") == 54_097
    assert parse_timestamp("01:02:03.004") == 3_723_004
    for bad in ("0:0:54,097", "00:61:00,000", "00:00:54"):
        with pytest.raises(ValueError, match="timestamp"):
            parse_timestamp(bad)


# --------------------------------------------------------------------------------------------
# Bad files: errors name the file and line


def _row(**overrides: str) -> dict[str, str]:
    row = dict(
        Utterance="Hello there.",
        Speaker="Client",
        Emotion="neutral",
        Strategy="undefined",
        Dialogue_ID="0",
        Utterance_ID="0",
        Season="1",
        Episode="1",
        StartTime="00:00:01,000",
        EndTime="00:00:02,000",
    )
    row.update(overrides)
    return row


def _good_rows() -> list[dict[str, str]]:
    return [
        _row(),
        _row(Utterance="How are you?", Speaker="Therapist", Strategy="Open question", Utterance_ID="1"),
        _row(Utterance="Fine, thanks.", Utterance_ID="2", Emotion="joy"),
        _row(Utterance="Good.", Speaker="Therapist", Strategy="Approval", Utterance_ID="3"),
        _row(Utterance="Bye.", Dialogue_ID="1"),
        _row(
            Utterance="Bye bye.",
            Speaker="Therapist",
            Strategy="open question",
            Dialogue_ID="1",
            Utterance_ID="1",
        ),
    ]


def _write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = CSV_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_small_csv_reads(tmp_path: Path) -> None:
    dialogues, normalised = read_mesc_csv(_write_csv(tmp_path / "MESC.csv", _good_rows()))
    assert [len(d) for d in dialogues] == [4, 2] and normalised == 1
    assert dialogues[1][1].strategy == "Open question" and dialogues[1][1].row == 5


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (2, {"Emotion": "happy"}, "unknown emotion 'happy'"),
        (1, {"Strategy": "undefined"}, "therapist row has strategy 'undefined'"),
        (2, {"Strategy": "Approval"}, "client rows carry strategy 'undefined'"),
        (3, {"Strategy": "Guiding"}, "unknown strategy 'Guiding'"),
        (3, {"Speaker": "Doctor"}, "unknown Speaker 'Doctor'"),
        (2, {"StartTime": "1.5"}, "timestamp '1.5'"),
        (2, {"EndTime": "00:00:00,500"}, "EndTime '00:00:00,500' is not after StartTime"),
        (2, {"Utterance_ID": "5"}, "Utterance_ID 5 in Dialogue_ID 0, expected 2"),
        (2, {"Dialogue_ID": "x"}, "Dialogue_ID 'x' is not an integer"),
        (2, {"Utterance": "   "}, "empty Utterance"),
        (5, {"Dialogue_ID": "0", "Utterance_ID": "1"}, "Dialogue_ID 0 are not contiguous"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path: Path, index: int, change: dict, message: str) -> None:
    rows = _good_rows()
    if index == 5:  # dialogue 0 again after dialogue 1
        rows.append(_row(Utterance="Back again.", **change))
        index = 6
    else:
        rows[index] = {**rows[index], **change}
    path = _write_csv(tmp_path / "MESC.csv", rows)
    with pytest.raises(MESCFormatError) as caught:
        read_mesc_csv(path)
    assert f"{path} line {index + 2}" in str(caught.value)
    assert message in str(caught.value)


def test_line_numbers_count_multiline_records(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["Utterance"] = "First line\nsecond line"  # a quoted field spanning two lines
    rows[2]["Emotion"] = "bored"
    path = _write_csv(tmp_path / "MESC.csv", rows)
    with pytest.raises(MESCFormatError, match=r"line 5: unknown emotion"):
        read_mesc_csv(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    columns = tuple(c for c in CSV_COLUMNS if c != "EndTime")
    path = _write_csv(tmp_path / "MESC.csv", _good_rows(), columns)
    with pytest.raises(MESCFormatError, match=r"line 1: missing column\(s\) EndTime"):
        read_mesc_csv(path)


def _split_entry(text: str, speaker: str, emotion: str = "neutral", strategy: str | None = None) -> dict:
    entry = {"text": text, "speaker": speaker, "emotion": emotion}
    if strategy is not None:
        entry["strategy"] = strategy
    return entry


def _write_split(path: Path, dialogues: list[list[dict]]) -> Path:
    data = [{"problem_type": "Work ", "situation": "A situation.", "dialog": d} for d in dialogues]
    path.write_text(json.dumps(data))
    return path


def _dialogue0() -> list[dict]:
    return [
        _split_entry("Hello there. The speaker smiles.", "user"),
        _split_entry("How are you? The speaker nods.", "sys", strategy="Open question"),
        _split_entry("Fine, thanks. The speaker laughs.", "user", emotion="joy"),
        _split_entry("Good. The speaker is calm.", "sys", strategy="Approval"),
    ]


def _dialogue1() -> list[dict]:
    return [
        _split_entry("Bye., The speaker waves.", "user"),
        _split_entry("Bye bye.", "sys", strategy="Open question"),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"speaker": "bot"}, r"\[0\]\.dialog\[1\]\.speaker: 'bot'"),
        ({"emotion": "calm"}, r"\[0\]\.dialog\[1\]\.emotion: unknown emotion 'calm'"),
        ({"strategy": "Empathy"}, r"\[0\]\.dialog\[1\]\.strategy: unknown strategy 'Empathy'"),
        ({"text": ""}, r"\[0\]\.dialog\[1\]\.text: missing or empty"),
    ],
)
def test_bad_split_entries_name_file_and_position(tmp_path: Path, entry: dict, message: str) -> None:
    dialogue = _dialogue0()
    dialogue[1].update(entry)
    path = _write_split(tmp_path / "val.json", [dialogue])
    with pytest.raises(MESCFormatError, match=message):
        read_split_file(path)


def test_small_corpus_rebuilds_splits_and_descriptions(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    _write_split(tmp_path / "val.json", [_dialogue0()])
    _write_split(tmp_path / "test.json", [_dialogue1()])
    data = load_mesc(tmp_path)
    assert [d.dialogue_id for d in data.dialogues["val"]] == [0]
    assert [d.dialogue_id for d in data.dialogues["test"]] == [1]
    assert data.dialogues["train"] == ()
    val = data.dialogues["val"][0]
    assert val.problem_type == "Work"  # surrounding space stripped
    assert [t.description for t in val.turns] == [
        "The speaker smiles.",
        "The speaker nods.",
        "The speaker laughs.",
        "The speaker is calm.",
    ]
    test_turns = data.dialogues["test"][0].turns
    assert test_turns[0].description == "The speaker waves."  # the split kept a "," the CSV lacks
    assert test_turns[1].description is None  # no description in the split text
    assert [s.sample_id for s in data.samples["val"]] == ["dia0_utt1", "dia0_utt3"]
    assert data.samples["val"][1].client_text == "Fine, thanks. [Description: The speaker laughs.]"


def test_unmatched_and_ambiguous_dialogues(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    other = _dialogue0()
    other[0]["text"] = "Something else entirely."
    _write_split(tmp_path / "val.json", [other])
    _write_split(tmp_path / "test.json", [_dialogue1(), _dialogue1()])  # second claims the same CSV dialogue
    with pytest.raises(MESCMatchError, match=r"val.json \[0\]: no MESC.csv dialogue matches"):
        load_mesc(tmp_path)
    data = load_mesc(tmp_path, strict=False)
    assert data.report.unmatched == ["val.json [0]: no MESC.csv dialogue matches"]
    assert data.report.ambiguous == ["test.json [1]: matches Dialogue_ID 1, already matched by test.json [0]"]
    assert [d.dialogue_id for d in data.dialogues["train"]] == [0]  # unmatched stays in train


def test_label_disagreement_between_split_and_csv_is_an_error(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    dialogue = _dialogue0()
    dialogue[3]["strategy"] = "Restatement"
    _write_split(tmp_path / "val.json", [dialogue])
    _write_split(tmp_path / "test.json", [_dialogue1()])
    with pytest.raises(MESCMatchError, match=r"val.json \[0\]\.dialog\[3\] matches MESC.csv line 5"):
        load_mesc(tmp_path)


def test_train_json_adds_context_to_train_dialogues(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    _write_split(tmp_path / "val.json", [])
    _write_split(tmp_path / "test.json", [_dialogue1()])
    _write_split(tmp_path / "train.json", [_dialogue0(), [_split_entry("Unknown.", "user")]])
    data = load_mesc(tmp_path)
    train = data.dialogues["train"][0]
    assert train.problem_type == "Work" and train.turns[0].description == "The speaker smiles."
    assert data.report.unmatched == ["train.json [1]: no unclaimed MESC.csv dialogue matches"]


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    _write_split(tmp_path / "val.json", [_dialogue0()])
    with pytest.raises(FileNotFoundError, match=r"test\.json"):
        load_mesc(tmp_path)


def test_mesc_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from multimood.cli import main

    _write_csv(tmp_path / "MESC.csv", _good_rows())
    _write_split(tmp_path / "val.json", [_dialogue0()])
    _write_split(tmp_path / "test.json", [_dialogue1()])
    assert main(["mesc-report", "--data", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "val" in out and "Hello" not in out
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["val"]["samples"] == 2
