"""MESC reader: split reconstruction, label checks, turn samples, history units, context, errors naming file and line.

The real-data tests (marked ``real_data``) use the annotations in $MULTIMOOD_MESC_DIR
(``real_mesc_dir`` fixture) and never print utterance text: failures show counts and ids. The
sample rules are checked against a separate, deliberately plain re-implementation that reads
``MESC.csv`` with the csv module (``_raw_dialogues``), not against the reader's own helpers.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from multimood.data import labels
from multimood.data.mesc import (
    CSV_COLUMNS,
    NO_CLIENT_TURN,
    Dialogue,
    MESCContextError,
    MESCData,
    MESCFormatError,
    MESCMatchError,
    Turn,
    Utterance,
    build_samples,
    format_history_turn,
    load_mesc,
    merge_turns,
    parse_timestamp,
    read_mesc_csv,
    read_split_file,
)

C, T = labels.CLIENT, labels.THERAPIST

# --------------------------------------------------------------------------------------------
# An independent reading of the real CSV: (utterance id, speaker, emotion, strategy) per row,
# grouped by Dialogue_ID, with merged runs built by itertools.groupby.


def _raw_dialogues(path: Path) -> dict[int, list[tuple[int, str, str, str]]]:
    out: dict[int, list[tuple[int, str, str, str]]] = {}
    with (path / "MESC.csv").open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            out.setdefault(int(row["Dialogue_ID"]), []).append(
                (int(row["Utterance_ID"]), row["Speaker"], row["Emotion"], row["Strategy"].lower())
            )
    return out


def _first_most_common(values: list[str]) -> str:
    # max() returns the first maximal item: distinct values in order of first occurrence.
    return max(dict.fromkeys(values), key=values.count)


def _raw_runs(rows: list[tuple[int, str, str, str]]) -> list[list[tuple[int, str, str, str]]]:
    return [list(group) for _, group in itertools.groupby(rows, key=lambda r: r[1])]


@pytest.fixture(scope="module")
def raw(real_mesc_dir: Path) -> dict[int, list[tuple[int, str, str, str]]]:
    return _raw_dialogues(real_mesc_dir)


@pytest.fixture(scope="module")
def mesc(real_mesc_dir: Path) -> MESCData:
    return load_mesc(real_mesc_dir)


@pytest.fixture(scope="module")
def mesc_per_utterance(real_mesc_dir: Path) -> MESCData:
    return load_mesc(real_mesc_dir, sample_unit="utterance")


def _ids(turns) -> list[list[int]]:
    return [list(t.utterance_ids) for t in turns]


# --------------------------------------------------------------------------------------------
# Real annotations: splits and labels


@pytest.mark.real_data
def test_split_sizes_match_the_paper_and_spec(mesc: MESCData) -> None:
    counts = mesc.report.counts
    assert {s: counts[s].utterances for s in counts} == {"train": 23_126, "val": 2_714, "test": 2_922}
    assert {s: counts[s].dialogues for s in counts} == {"train": 815, "val": 102, "test": 102}
    assert {s: len(d) for s, d in mesc.dialogues.items()} == {"train": 815, "val": 102, "test": 102}
    ids = [d.dialogue_id for split in mesc.dialogues.values() for d in split]
    assert sorted(ids) == list(range(1019))  # every CSV dialogue in exactly one split


@pytest.mark.real_data
def test_every_val_and_test_dialogue_is_matched(mesc: MESCData) -> None:
    assert mesc.report.unmatched == []
    assert mesc.report.ambiguous == []
    for split in ("val", "test"):
        for dialogue in mesc.dialogues[split]:
            assert dialogue.problem_type and dialogue.situation
            assert dialogue.split_file == f"{split}.json"
            assert all(u.description for u in dialogue.utterances)
    # No train.json in the shared folder: train has no split-file context.
    assert all(d.problem_type is None and d.split_file is None for d in mesc.dialogues["train"])
    assert mesc.report.counts["train"].utterances_with_description == 0
    assert mesc.report.split_has_context == {"train": False, "val": True, "test": True}


@pytest.mark.real_data
def test_label_vocabularies_are_exactly_the_spec(mesc: MESCData) -> None:
    utterances = [u for split in mesc.dialogues.values() for d in split for u in d.utterances]
    assert {u.emotion for u in utterances} == set(labels.EMOTIONS)
    assert {u.strategy for u in utterances if u.is_therapist} == set(labels.STRATEGIES)
    assert {u.strategy for u in utterances if u.is_client} == {None}
    assert {u.speaker for u in utterances} == set(labels.SPEAKERS)


@pytest.mark.real_data
def test_lowercase_open_question_rows_are_normalised(real_mesc_dir: Path, mesc: MESCData) -> None:
    with (real_mesc_dir / "MESC.csv").open(newline="", encoding="utf-8") as handle:
        raw = [row["Strategy"] for row in csv.DictReader(handle)]
    lowercase_rows = [i for i, value in enumerate(raw) if value == "open question"]
    assert len(lowercase_rows) == 3
    assert mesc.report.strategy_case_normalised == 3
    by_row = {u.row: u for split in mesc.dialogues.values() for d in split for u in d.utterances}
    assert [by_row[i].strategy for i in lowercase_rows] == ["Open question"] * 3


@pytest.mark.real_data
def test_clip_names_use_the_zero_based_csv_row(real_mesc_dir: Path, mesc: MESCData) -> None:
    with (real_mesc_dir / "MESC.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    utterances = sorted(
        (u for split in mesc.dialogues.values() for d in split for u in d.utterances), key=lambda u: u.row
    )
    assert [u.row for u in utterances] == list(range(len(rows)))
    for utterance in utterances[:: len(utterances) // 50]:
        row = rows[utterance.row]
        assert utterance.clip_name == f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}_{utterance.row}.mp4"
        assert utterance.line == utterance.row + 2  # header is line 1; no multi-line records in MESC.csv
    assert utterances[0].clip_name == "dia0_utt0_0.mp4"


# --------------------------------------------------------------------------------------------
# Real annotations: samples

# One sample per therapist turn (the default). Computed from the real files and re-derived in
# test_turn_sample_counts_from_the_raw_csv: 4,715 therapist turns, 95 of which open their
# dialogue (no client utterance before them) and yield no sample.
EXPECTED_SAMPLES = {"train": 3_721, "val": 445, "test": 454}
EXPECTED_DROPPED = {"train": 82, "val": 7, "test": 6}
# One sample per therapist utterance (sample_unit="utterance"), the earlier construction:
# 10,326 therapist utterances, 240 of them before any client utterance of their dialogue.
EXPECTED_UTTERANCE_SAMPLES = {"train": 8_034, "val": 990, "test": 1_062}
EXPECTED_UTTERANCE_DROPPED = {"train": 218, "val": 11, "test": 11}


@pytest.mark.real_data
def test_turn_sample_counts_per_split(mesc: MESCData) -> None:
    assert {s: len(v) for s, v in mesc.samples.items()} == EXPECTED_SAMPLES
    assert {s: c.samples for s, c in mesc.report.counts.items()} == EXPECTED_SAMPLES
    assert mesc.report.dropped_by_reason() == {s: {NO_CLIENT_TURN: n} for s, n in EXPECTED_DROPPED.items()}
    for counts in mesc.report.counts.values():
        assert counts.samples + counts.dropped == counts.therapist_turns
    assert sum(c.therapist_turns for c in mesc.report.counts.values()) == 4_715
    assert all(s.unit == "turn" for split in mesc.samples.values() for s in split)


@pytest.mark.real_data
def test_turn_sample_counts_from_the_raw_csv(raw: dict, mesc: MESCData) -> None:
    for split, dialogues in mesc.dialogues.items():
        runs = [_raw_runs(raw[d.dialogue_id]) for d in dialogues]
        therapist_runs = sum(r[0][1] == T for rs in runs for r in rs)
        opening = sum(rs[0][0][1] == T for rs in runs)  # a therapist run opening the dialogue
        assert therapist_runs - opening == EXPECTED_SAMPLES[split]
        assert opening == EXPECTED_DROPPED[split]


@pytest.mark.real_data
def test_per_utterance_sample_counts_per_split(mesc_per_utterance: MESCData) -> None:
    data = mesc_per_utterance
    assert {s: len(v) for s, v in data.samples.items()} == EXPECTED_UTTERANCE_SAMPLES
    assert data.report.dropped_by_reason() == {
        s: {NO_CLIENT_TURN: n} for s, n in EXPECTED_UTTERANCE_DROPPED.items()
    }
    for counts in data.report.counts.values():
        assert counts.samples + counts.dropped == counts.therapist_utterances
    assert sum(c.therapist_utterances for c in data.report.counts.values()) == 10_326
    assert data.report.sample_unit == "utterance"
    assert "NOT comparable with paper table 4" in data.report.summary()


@pytest.mark.real_data
def test_every_turn_sample_follows_the_construction_rule(raw: dict, mesc: MESCData) -> None:
    """Each sample against the plain re-implementation: target run, client run, history runs, labels."""
    checked = 0
    for split, dialogues in mesc.dialogues.items():
        samples = iter(mesc.samples[split])
        for dialogue in dialogues:
            runs = _raw_runs(raw[dialogue.dialogue_id])
            for i, run in enumerate(runs):
                if run[0][1] != T or i == 0:
                    continue
                sample = next(samples)
                client, earlier = runs[i - 1], runs[: i - 1]
                assert client[0][1] == C
                assert list(sample.target.utterance_ids) == [r[0] for r in run]
                assert sample.sample_id == f"dia{dialogue.dialogue_id}_utt{run[0][0]}-{run[-1][0]}"
                assert list(sample.client_turn.utterance_ids) == [r[0] for r in client]
                assert _ids(sample.history) == [[r[0] for r in h] for h in earlier]
                # No utterance of the target's run, nor of the current client run, is in the history.
                assert all(u < client[0][0] for ids in _ids(sample.history) for u in ids)
                assert sample.client_emotion == client[-1][2]
                assert sample.therapist_emotion == _first_most_common([r[2] for r in run])
                assert sample.strategy.lower() == _first_most_common([r[3] for r in run])
                for turn, h in zip(sample.history, earlier, strict=True):
                    assert turn.speaker == h[0][1]
                    assert turn.emotion == _first_most_common([r[2] for r in h])
                    if turn.is_therapist:
                        assert turn.strategy.lower() == _first_most_common([r[3] for r in h])
                assert sample.response == " ".join(u.text for u in sample.target.utterances)
                assert sample.clip_names == tuple(u.clip_name for u in sample.client_turn.utterances)
                assert (sample.problem_type, sample.situation) == (None, None)  # auto: train lacks them
                checked += 1
        assert next(samples, None) is None
    assert checked == sum(EXPECTED_SAMPLES.values())


@pytest.mark.real_data
def test_every_per_utterance_sample_follows_the_construction_rule(mesc_per_utterance: MESCData) -> None:
    for split, dialogues in mesc_per_utterance.dialogues.items():
        samples = iter(mesc_per_utterance.samples[split])
        for dialogue in dialogues:
            utts = dialogue.utterances
            for t, utterance in enumerate(utts):
                if not utterance.is_therapist or not any(u.is_client for u in utts[:t]):
                    continue
                sample = next(samples)
                c = max(i for i in range(t) if utts[i].is_client)
                s = c
                while s > 0 and utts[s - 1].is_client:
                    s -= 1
                # (Utterances compared by id: the samples' copies lost their descriptions, "auto".)
                assert list(sample.target.utterance_ids) == [utterance.utterance_id]
                assert sample.sample_id == f"dia{dialogue.dialogue_id}_utt{utterance.utterance_id}"
                assert list(sample.client_turn.utterance_ids) == [u.utterance_id for u in utts[s : c + 1]]
                # The history: single utterances before the client run, then the reply so far.
                assert _ids(sample.history) == [[u.utterance_id] for u in utts[:s] + utts[c + 1 : t]]
                assert sample.client_emotion == utts[c].emotion
                assert (sample.therapist_emotion, sample.strategy) == (utterance.emotion, utterance.strategy)
        assert next(samples, None) is None


@pytest.mark.real_data
@pytest.mark.parametrize("k", [0, 1, 5, 9])
def test_history_length_units(mesc: MESCData, k: int) -> None:
    """exchanges: the last k client/therapist pairs; turns: the last k turns; utterances: the last k
    utterances, one entry each."""
    for split in ("val", "test"):
        for dialogue in mesc.dialogues[split]:
            full, _ = build_samples(dialogue)
            exchanges, _ = build_samples(dialogue, history_length=k, history_unit="exchanges")
            turns, _ = build_samples(dialogue, history_length=k, history_unit="turns")
            utterances, _ = build_samples(dialogue, history_length=k, history_unit="utterances")
            for a, e, t, u in zip(full, exchanges, turns, utterances, strict=True):
                assert e.history == (a.history[-2 * k :] if k else ())
                assert t.history == (a.history[-k:] if k else ())
                flat = [(x,) for turn in a.history for x in turn.utterances]
                assert [h.utterances for h in u.history] == (flat[-k:] if k else [])
                # Exchanges are whole pairs ending with the therapist turn before the client turn.
                speakers = [h.speaker for h in e.history]
                assert speakers == [C, T] * (len(speakers) // 2) or speakers == [T] + [C, T] * (
                    len(speakers) // 2
                )
                assert len(e.history) == min(2 * k, len(a.history))


@pytest.mark.real_data
def test_load_mesc_history_option_is_applied(real_mesc_dir: Path) -> None:
    data = load_mesc(real_mesc_dir, history_length=5)
    assert max(len(s.history) for split in data.samples.values() for s in split) == 10  # 5 exchanges
    assert (data.report.history_length, data.report.history_unit) == (5, "exchanges")
    assert {s: len(v) for s, v in data.samples.items()} == EXPECTED_SAMPLES
    assert "history=5 exchanges" in data.report.summary()


@pytest.mark.real_data
def test_default_context_is_the_same_on_every_split(mesc: MESCData) -> None:
    # No train.json: "auto" turns descriptions and problem/situation off for every split.
    assert mesc.report.descriptions == {"train": False, "val": False, "test": False}
    assert mesc.report.problem_situation == {"train": False, "val": False, "test": False}
    for split in mesc.samples.values():
        for sample in split:
            assert sample.problem_type is None and sample.situation is None
            turns = (*sample.history, sample.client_turn, sample.target)
            assert all(u.description is None for turn in turns for u in turn.utterances)
            assert sample.client_text == sample.client_utterance


@pytest.mark.real_data
@pytest.mark.parametrize("option", ["descriptions", "problem_situation"])
def test_eval_only_context_needs_the_override(real_mesc_dir: Path, option: str) -> None:
    with pytest.raises(MESCContextError) as caught:
        load_mesc(real_mesc_dir, **{option: True})
    message = str(caught.value)
    assert str(real_mesc_dir / "train.json") in message
    assert "allow_eval_only_context" in message and option in message
    data = load_mesc(real_mesc_dir, **{option: True}, allow_eval_only_context=True)
    assert getattr(data.report, option) == {"train": False, "val": True, "test": True}
    val = data.samples["val"]
    if option == "descriptions":
        assert all(
            s.client_text.startswith(s.client_turn.utterances[0].text + " [Description: ") for s in val
        )
        assert all(s.problem_type is None for s in val)  # the other option stays auto (off)
    else:
        assert all(s.problem_type and s.situation for s in val)
        assert all(s.client_text == s.client_utterance for s in val)
    assert all(s.problem_type is None and s.client_text == s.client_utterance for s in data.samples["train"])


@pytest.mark.real_data
def test_report_holds_counts_not_text(mesc: MESCData) -> None:
    dumped = json.dumps(mesc.report.to_dict())
    summary = mesc.report.summary()
    texts = [s.response for s in mesc.samples["test"][:50] if len(s.response) > 12]
    leaked = sum(text in dumped or text in summary for text in texts)  # a count: failures show no text
    assert texts and leaked == 0
    assert "3,721" in summary
    assert "text=" not in repr(mesc.samples["test"][0])  # reprs (and so test failures) hold no text
    assert "text=" not in repr(mesc.samples["test"][0].target.utterances[0])


# --------------------------------------------------------------------------------------------
# Sample construction on a hand-made dialogue (documents the rules)


def _utt(
    i: int,
    speaker: str,
    emotion: str = "neutral",
    strategy: str | None = None,
    description: str | None = None,
) -> Utterance:
    if speaker == T and strategy is None:
        strategy = "Approval"
    return Utterance(
        7,
        i,
        100 + i,
        102 + i,
        speaker,
        f"u{i}",
        emotion,
        strategy,
        1,
        2,
        1000 * i,
        1000 * i + 500,
        description,
    )


def _small_dialogue() -> Dialogue:
    # 0:T 1:T | 2:C 3:C | 4:T 5:T 6:T | 7:C | 8:T | 9:C 10:C | 11:T
    speakers = [T, T, C, C, T, T, T, C, T, C, C, T]
    emotions = {3: "joy", 5: "sadness", 6: "sadness", 9: "anger", 10: "fear"}
    strategies = {4: "Restatement", 5: "Open question", 6: "Open question", 8: "Advisement"}
    utterances = tuple(
        _utt(i, s, emotions.get(i, "neutral"), strategies.get(i)) for i, s in enumerate(speakers)
    )
    return Dialogue(7, "train", utterances, "Problem", "Situation")


def test_merge_turns_groups_runs_of_one_speaker() -> None:
    turns = merge_turns(_small_dialogue().utterances)
    assert [t.speaker for t in turns] == [T, C, T, C, T, C, T]
    assert _ids(turns) == [[0, 1], [2, 3], [4, 5, 6], [7], [8], [9, 10], [11]]
    assert turns[2].text == "u4 u5 u6"
    with pytest.raises(ValueError, match="Therapist"):
        Turn(T, (_utt(0, T), _utt(1, C)))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Approval", "Restatement", "Restatement"], "Restatement"),  # the majority
        (["Approval", "Restatement"], "Approval"),  # a tie: the first to occur
        (["Restatement", "Approval", "Approval", "Restatement"], "Restatement"),
        (["Advisement", "Approval", "Restatement", "Approval", "Restatement"], "Approval"),
    ],
)
def test_turn_labels_are_the_most_frequent_ties_to_the_first(values: list[str], expected: str) -> None:
    turn = Turn(T, tuple(_utt(i, T, strategy=v) for i, v in enumerate(values)))
    assert turn.strategy == expected == _first_most_common(values)
    emotions = ["sadness" if v == values[-1] else "joy" for v in values]
    client = Turn(C, tuple(_utt(i, C, emotion=e) for i, e in enumerate(emotions)))
    assert client.emotion == _first_most_common(emotions) and client.strategy is None


def test_turn_samples_on_a_small_dialogue() -> None:
    samples, dropped = build_samples(_small_dialogue())
    # The opening therapist turn has no client turn before it: dropped once, with a reason.
    assert [(d.utterance_id, d.row, d.reason) for d in dropped] == [(0, 100, NO_CLIENT_TURN)]
    assert [s.sample_id for s in samples] == ["dia7_utt4-6", "dia7_utt8-8", "dia7_utt11-11"]
    first, second, third = samples
    assert list(first.target.utterance_ids) == [4, 5, 6]
    assert first.response == "u4 u5 u6"
    assert (first.therapist_emotion, first.strategy) == ("sadness", "Open question")
    assert list(first.client_turn.utterance_ids) == [2, 3]
    assert first.client_emotion == "joy"  # the most recent client utterance
    assert first.client_text == first.client_utterance == "u2 u3"
    assert first.clip_names == ("dia7_utt2_102.mp4", "dia7_utt3_103.mp4")
    assert _ids(first.history) == [[0, 1]]
    assert _ids(second.history) == [[0, 1], [2, 3], [4, 5, 6]]
    assert second.history[1].emotion == "neutral"  # client run 2-3: neutral, joy -> tie, the first
    assert _ids(third.history) == [[0, 1], [2, 3], [4, 5, 6], [7], [8]]
    assert third.client_emotion == "fear" and third.client_turn.emotion == "anger"  # last vs most frequent
    assert (first.problem_type, first.situation) == ("Problem", "Situation")


def test_history_units_on_a_small_dialogue() -> None:
    dialogue = _small_dialogue()

    def histories(**options) -> list[list[list[int]]]:
        return [_ids(s.history) for s in build_samples(dialogue, **options)[0]]

    assert histories(history_length=1) == [[[0, 1]], [[2, 3], [4, 5, 6]], [[7], [8]]]
    assert histories(history_length=2) == [
        [[0, 1]],
        [[0, 1], [2, 3], [4, 5, 6]],
        [[2, 3], [4, 5, 6], [7], [8]],
    ]
    assert histories(history_length=1, history_unit="turns") == [[[0, 1]], [[4, 5, 6]], [[8]]]
    assert histories(history_length=3, history_unit="utterances") == [
        [[0], [1]],
        [[4], [5], [6]],
        [[6], [7], [8]],
    ]
    assert histories(history_unit="utterances")[1] == [[0], [1], [2], [3], [4], [5], [6]]
    assert histories(history_length=0) == [[], [], []]


def test_per_utterance_samples_on_a_small_dialogue() -> None:
    samples, dropped = build_samples(_small_dialogue(), sample_unit="utterance")
    assert [(d.utterance_id, d.reason) for d in dropped] == [(0, NO_CLIENT_TURN), (1, NO_CLIENT_TURN)]
    assert [s.sample_id for s in samples] == [
        "dia7_utt4",
        "dia7_utt5",
        "dia7_utt6",
        "dia7_utt8",
        "dia7_utt11",
    ]
    assert [s.strategy for s in samples[:3]] == ["Restatement", "Open question", "Open question"]
    # The reply so far (4, then 4 and 5) ends the history: the leak turn samples avoid.
    assert [_ids(s.history) for s in samples[:3]] == [[[0], [1]], [[0], [1], [4]], [[0], [1], [4], [5]]]
    assert all(list(s.client_turn.utterance_ids) == [2, 3] for s in samples[:3])
    short, _ = build_samples(
        _small_dialogue(), sample_unit="utterance", history_length=2, history_unit="utterances"
    )
    assert [_ids(s.history) for s in short][:3] == [[[0], [1]], [[1], [4]], [[4], [5]]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history_length": -1}, "history_length"),
        ({"history_length": 2.5}, "history_length"),
        ({"history_length": True}, "history_length"),
        ({"history_length": "5"}, "history_length"),
        ({"history_unit": "pairs"}, "history_unit must be one of exchanges, turns, utterances"),
        ({"sample_unit": "dialogue"}, "sample_unit must be one of turn, utterance"),
        ({"sample_unit": "utterance", "history_length": 5}, "set history_unit='utterances'"),
    ],
)
def test_bad_sample_options_are_named(options: dict, message: str) -> None:
    dialogue = Dialogue(7, "train", (_utt(0, C), _utt(1, T)))
    with pytest.raises(ValueError, match=message):
        build_samples(dialogue, **options)


def test_format_history_turn() -> None:
    client = Turn(C, (_utt(0, C, emotion="sadness"),))
    therapist = Turn(T, (_utt(1, T, strategy="Open question"), _utt(2, T, strategy="Open question")))
    assert format_history_turn(client) == "Client (emotion: sadness): u0"
    assert format_history_turn(therapist) == "Therapist (emotion: neutral; strategy: Open question): u1 u2"
    described = Turn(C, (_utt(0, C, "sadness", description="looks down"), _utt(1, C, "sadness")))
    assert format_history_turn(described) == "Client (emotion: sadness): u0 [Description: looks down] u1"
    assert format_history_turn(described, with_description=False) == "Client (emotion: sadness): u0 u1"


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
    data = load_mesc(tmp_path)  # train is empty here, so every split has its context: "auto" is on
    assert (
        data.report.descriptions
        == data.report.problem_situation
        == dict.fromkeys(("train", "val", "test"), True)
    )
    assert [d.dialogue_id for d in data.dialogues["val"]] == [0]
    assert [d.dialogue_id for d in data.dialogues["test"]] == [1]
    assert data.dialogues["train"] == ()
    val = data.dialogues["val"][0]
    assert val.problem_type == "Work"  # surrounding space stripped
    assert [u.description for u in val.utterances] == [
        "The speaker smiles.",
        "The speaker nods.",
        "The speaker laughs.",
        "The speaker is calm.",
    ]
    test_utterances = data.dialogues["test"][0].utterances
    assert test_utterances[0].description == "The speaker waves."  # the split kept a "," the CSV lacks
    assert test_utterances[1].description is None  # no description in the split text
    assert [s.sample_id for s in data.samples["val"]] == ["dia0_utt1-1", "dia0_utt3-3"]
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
    assert train.problem_type == "Work" and train.utterances[0].description == "The speaker smiles."
    assert train.split_file == "train.json"
    assert data.report.unmatched == ["train.json [1]: no unclaimed MESC.csv dialogue matches"]
    # Every split has its context now, so "auto" turns both on everywhere.
    assert (
        data.report.descriptions
        == data.report.problem_situation
        == {"train": True, "val": True, "test": True}
    )
    sample = data.samples["train"][0]
    assert sample.problem_type == "Work"
    assert sample.client_text == "Hello there. [Description: The speaker smiles.]"


def _corpus_without_train_json(tmp_path: Path) -> Path:
    rows = [
        *_good_rows(),
        _row(Utterance="Only in train.", Dialogue_ID="2"),
        _row(
            Utterance="Train reply.",
            Speaker="Therapist",
            Strategy="Approval",
            Dialogue_ID="2",
            Utterance_ID="1",
        ),
    ]
    _write_csv(tmp_path / "MESC.csv", rows)
    _write_split(tmp_path / "val.json", [_dialogue0()])
    _write_split(tmp_path / "test.json", [_dialogue1()])
    return tmp_path


def test_auto_context_is_off_everywhere_without_train_json(tmp_path: Path) -> None:
    data = load_mesc(_corpus_without_train_json(tmp_path))
    assert data.report.split_has_context == {"train": False, "val": True, "test": True}
    assert (
        data.report.descriptions
        == data.report.problem_situation
        == dict.fromkeys(("train", "val", "test"), False)
    )
    val = data.samples["val"][1]
    assert val.client_text == "Fine, thanks." and val.problem_type is None
    assert "no split-file context (descriptions, problem, situation) for: train" in data.report.summary()
    off = load_mesc(tmp_path, descriptions=False, problem_situation=False)
    assert off.report.descriptions == data.report.descriptions


@pytest.mark.parametrize("option", ["descriptions", "problem_situation"])
def test_explicit_context_without_train_json_fails_before_reading(tmp_path: Path, option: str) -> None:
    corpus = _corpus_without_train_json(tmp_path)
    (corpus / "MESC.csv").write_text("not a MESC file\n")  # never read: the option check comes first
    with pytest.raises(MESCContextError) as caught:
        load_mesc(corpus, **{option: True})
    message = str(caught.value)
    assert f"{corpus / 'train.json'} is missing" in message
    assert f"{option}=true" in message and "allow_eval_only_context=true" in message


def test_explicit_context_with_a_partial_train_json_names_what_is_missing(tmp_path: Path) -> None:
    corpus = _corpus_without_train_json(tmp_path)
    _write_split(corpus / "train.json", [])  # present, but matches none of the train dialogues
    with pytest.raises(MESCContextError, match=r"1 train dialogue\(s\) are not in .*train\.json"):
        load_mesc(corpus, descriptions=True)
    data = load_mesc(corpus, descriptions=True, allow_eval_only_context=True)
    assert data.report.descriptions == {"train": False, "val": True, "test": True}
    assert data.samples["val"][1].client_text == "Fine, thanks. [Description: The speaker laughs.]"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_context_values_are_named(tmp_path: Path, value) -> None:
    with pytest.raises(ValueError, match="descriptions must be auto, true or false"):
        load_mesc(_corpus_without_train_json(tmp_path), descriptions=value)


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    _write_csv(tmp_path / "MESC.csv", _good_rows())
    _write_split(tmp_path / "val.json", [_dialogue0()])
    with pytest.raises(FileNotFoundError, match=r"test\.json"):
        load_mesc(tmp_path)


# --------------------------------------------------------------------------------------------
# multimood mesc-report


def test_mesc_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from multimood.cli import main

    corpus = _corpus_without_train_json(tmp_path)
    out_json = tmp_path / "r.json"
    assert (
        main(["mesc-report", "--data", str(corpus), "--tokenizer", "tiny:qwen2", "--json", str(out_json)])
        == 0
    )
    out = capsys.readouterr().out
    assert "Hello" not in out and "Fine, thanks" not in out  # counts only, never utterance text
    assert "Trivial baselines" in out and "Prompt length in LLM tokens (tiny:qwen2" in out
    assert "WARNING" not in out
    result = json.loads(out_json.read_text())
    assert result["report"]["counts"]["val"]["samples"] == 2
    assert result["report"]["descriptions"] == {"train": False, "val": False, "test": False}
    rows = {(r["split"], r["task"], r["baseline"]) for r in result["baselines"]}
    assert len(rows) == 3 * 3 * 2
    lengths = result["prompt_lengths"]
    assert set(lengths) == {"train", "val", "test"} and lengths["val"]["samples"] == 2
    assert 0 < lengths["val"]["prompt_tokens"]["mean"] <= lengths["val"]["prompt_tokens"]["max"]

    assert (
        main(["mesc-report", "--data", str(corpus), "--sample-unit", "utterance", "--tokenizer", "none"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("NOT comparable with paper table 4") == 2  # in the summary and after the baselines
    assert "Prompt length" not in out


def test_mesc_report_names_a_bad_context_request(tmp_path: Path) -> None:
    from multimood.cli import main

    with pytest.raises(MESCContextError, match=r"train\.json"):
        main(["mesc-report", "--data", str(_corpus_without_train_json(tmp_path)), "--descriptions", "true"])
