"""Synthetic MESC/DFEW writers: the same file formats as the real data, determinism, media that decode.

Format checks compare against the real annotation files (``real_mesc_dir``) column for column and
key for key; they print no real text.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from multimood.data.labels import DFEW_LABELS, EMOTIONS, STRATEGIES, UNDEFINED_STRATEGY
from multimood.data.mesc import clip_name
from multimood.data.synthetic import (
    DESCRIPTION_CUES,
    EPISODE_PATTERN,
    MESC_COLUMNS,
    TEXT_CUES,
    VOICE_CUES,
    main,
    make_dfew,
    make_mesc,
    synthetic_vocabulary,
)

TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d,\d\d\d")
# Small and fast: 16 kHz mono here; the signal test covers the default 44.1 kHz stereo.
TINY = dict(
    num_dialogues=5,
    seed=3,
    turns=(4, 7),
    clip_seconds=(0.4, 0.9),
    width=64,
    height=48,
    sample_rate=16_000,
    channels=1,
    dialogues_per_episode=3,
)


def _millis(stamp: str) -> int:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(",")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def _seconds(stamp: str) -> float:
    return _millis(stamp) / 1000


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames (T, H, W, 3) uint8, audio (C, N) float32, sample rate) with PyAV."""
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1, path
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return frames, audio, rate


@pytest.fixture(scope="module")
def tiny_mesc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mesc") / "synth"
    summary = make_mesc(out, episodes=True, **TINY)
    assert summary.clips == summary.utterances > 0 and summary.episodes == 2
    return out


@pytest.mark.real_data
def test_csv_bytes_follow_the_real_file(real_mesc_dir: Path, tiny_mesc: Path) -> None:
    real, synth = (p.read_bytes() for p in (real_mesc_dir / "MESC.csv", tiny_mesc / "MESC.csv"))
    assert synth.split(b"\r\n", 1)[0] == real.split(b"\r\n", 1)[0] == ",".join(MESC_COLUMNS).encode()
    # Booleans only in the asserts: a failure must not print the private real text.
    for name, raw in (("real", real), ("synthetic", synth)):
        no_bom, crlf_end = not raw.startswith(b"\xef\xbb\xbf"), raw.endswith(b"\r\n")
        assert no_bom and crlf_end, name
        assert raw.count(b"\n") == raw.count(b"\r\n"), f"{name}: CRLF only"
        # Both files are exactly what Python's csv writer produces from their own rows (quoting).
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        again = io.StringIO()
        csv.writer(again).writerows(rows)
        same = again.getvalue().encode("utf-8") == raw
        assert same, f"{name}: not what csv.writer produces from its rows"
    for line in synth.decode().splitlines()[1:]:
        assert re.search(r',"\d\d:\d\d:\d\d,\d\d\d","\d\d:\d\d:\d\d,\d\d\d"$', line)
    assert any(line.startswith('"') for line in synth.decode().splitlines()[1:]), "no quoted utterance"


def _check_csv_structure(rows: list[dict[str, str]], where: str) -> None:
    by_dialogue: dict[int, list[dict[str, str]]] = {}
    for index, row in enumerate(rows):
        by_dialogue.setdefault(int(row["Dialogue_ID"]), []).append(row)
        # Plain booleans in the asserts: a failure names the row, never prints its (private) text.
        stamps_ok = all(TIMESTAMP.fullmatch(row[k]) for k in ("StartTime", "EndTime"))
        assert stamps_ok, f"{where} row {index}: timestamp format"
        for key in ("Dialogue_ID", "Utterance_ID", "Season", "Episode"):
            digits = row[key].isdigit()
            assert digits, f"{where} row {index}: {key} is not a non-negative integer"
    assert sorted(by_dialogue) == list(range(len(by_dialogue))), where
    for turns in by_dialogue.values():
        assert [int(r["Utterance_ID"]) for r in turns] == list(range(len(turns))), where
        assert len({(r["Season"], r["Episode"]) for r in turns}) == 1, where


@pytest.mark.real_data
def test_csv_values_follow_the_real_vocabularies(real_mesc_dir: Path, tiny_mesc: Path) -> None:
    real, synth = _read_csv(real_mesc_dir / "MESC.csv"), _read_csv(tiny_mesc / "MESC.csv")
    assert list(synth[0]) == list(real[0]) == list(MESC_COLUMNS)
    _check_csv_structure(real, "real")
    _check_csv_structure(synth, "synthetic")
    for key in ("Speaker", "Emotion"):
        assert {r[key] for r in synth} <= {r[key] for r in real}, key
    assert {r["Emotion"] for r in synth} <= set(EMOTIONS)
    assert {r["Strategy"] for r in synth if r["Speaker"] == "Client"} == {UNDEFINED_STRATEGY}
    assert {r["Strategy"] for r in real if r["Speaker"] == "Client"} == {UNDEFINED_STRATEGY}
    therapist = {r["Strategy"] for r in synth if r["Speaker"] == "Therapist"}
    assert therapist and therapist <= set(STRATEGIES) <= {r["Strategy"] for r in real}
    for r in synth:
        assert _seconds(r["StartTime"]) < _seconds(r["EndTime"])
    pairs = list(itertools.pairwise(synth))
    assert any(a["Speaker"] == b["Speaker"] and a["Dialogue_ID"] == b["Dialogue_ID"] for a, b in pairs)
    # Utterances of one episode do not overlap (the episode writer relies on it).
    spans = sorted(
        (r["Season"], r["Episode"], _seconds(r["StartTime"]), _seconds(r["EndTime"])) for r in synth
    )
    for a, b in itertools.pairwise(spans):
        assert a[:2] != b[:2] or a[3] <= b[2]


def _key_shapes(dialogues: list[dict]) -> tuple[set, set]:
    top = {tuple(d) for d in dialogues}
    turns = {(t["speaker"], tuple(t)) for d in dialogues for t in d["dialog"]}
    return top, turns


@pytest.mark.real_data
@pytest.mark.parametrize("split", ["val", "test"])
def test_split_files_have_the_real_structure(real_mesc_dir: Path, tiny_mesc: Path, split: str) -> None:
    real_raw = (real_mesc_dir / f"{split}.json").read_text(encoding="utf-8")
    synth_raw = (tiny_mesc / f"{split}.json").read_text(encoding="utf-8")
    real, synth = json.loads(real_raw), json.loads(synth_raw)
    assert isinstance(synth, list) and synth
    assert _key_shapes(synth) == _key_shapes(real)  # same key order per dialogue and per turn
    for name, raw in (("real", real_raw), ("synthetic", synth_raw)):  # indent 4, no final newline
        layout = raw.startswith('[\n    {\n        "problem_type": ') and raw.endswith("}\n]")
        assert layout, name
    assert {t["speaker"] for d in synth for t in d["dialog"]} == {"user", "sys"}
    assert {t["emotion"] for d in synth for t in d["dialog"]} <= {
        t["emotion"] for d in real for t in d["dialog"]
    }
    real_strategies = {t["strategy"] for d in real for t in d["dialog"] if "strategy" in t}
    assert {t["strategy"] for d in synth for t in d["dialog"] if "strategy" in t} <= real_strategies
    for d in synth:
        assert isinstance(d["problem_type"], str) and d["problem_type"]
        assert isinstance(d["situation"], str) and d["situation"]


def test_split_files_match_csv_dialogues_by_text(tiny_mesc: Path) -> None:
    rows = _read_csv(tiny_mesc / "MESC.csv")
    csv_dialogues: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        csv_dialogues.setdefault(int(row["Dialogue_ID"]), []).append(row)
    found: dict[str, list[int]] = {}
    for split in ("train", "val", "test"):
        for dialogue in json.loads((tiny_mesc / f"{split}.json").read_text(encoding="utf-8")):
            # How a reader must match the real files: by utterance text, in order.
            hits = [
                d
                for d, turns in csv_dialogues.items()
                if len(turns) == len(dialogue["dialog"])
                and all(
                    t["text"].startswith(r["Utterance"] + " ")
                    for t, r in zip(dialogue["dialog"], turns, strict=True)
                )
            ]
            assert len(hits) == 1, f"{split}: {len(hits)} CSV dialogues match"
            turns = csv_dialogues[hits[0]]
            for t, r in zip(dialogue["dialog"], turns, strict=True):
                assert t["speaker"] == {"Client": "user", "Therapist": "sys"}[r["Speaker"]]
                assert t["emotion"] == r["Emotion"]
                assert t.get("strategy", UNDEFINED_STRATEGY) == r["Strategy"]
                assert len(t["text"]) > len(r["Utterance"]) + 10  # a description follows
            found.setdefault(split, []).extend(hits)
    assert all(found.get(s) for s in ("train", "val", "test"))
    everything = found["train"] + found["val"] + found["test"]
    assert sorted(everything) == sorted(csv_dialogues), "splits must partition the CSV dialogues"


def test_every_row_has_a_decodable_clip_of_its_duration(tiny_mesc: Path) -> None:
    rows = _read_csv(tiny_mesc / "MESC.csv")
    names = sorted(p.name for p in (tiny_mesc / "clips").iterdir())
    expected = [clip_name(int(r["Dialogue_ID"]), int(r["Utterance_ID"]), i) for i, r in enumerate(rows)]
    assert expected[0] == "dia0_utt0_0.mp4"
    assert names == sorted(expected)
    for i, row in enumerate(rows):
        duration_ms = _millis(row["EndTime"]) - _millis(row["StartTime"])
        frames, audio, rate = _decode(tiny_mesc / "clips" / expected[i])
        # frames = duration x fps rounded half up (10 fps here)
        assert frames.shape[1:] == (48, 64, 3) and frames.shape[0] == max(1, (duration_ms + 50) // 100)
        assert rate == 16_000 and audio.shape[0] == 1
        # AAC pads to whole 1024-sample frames (and may add priming): allow two frames.
        assert abs(audio.shape[1] - duration_ms * rate / 1000) <= 2 * 1024


def test_decord_reads_a_clip(tiny_mesc: Path) -> None:
    import decord

    path = next((tiny_mesc / "clips").iterdir())
    reader = decord.VideoReader(str(path))
    assert len(reader) >= 1 and reader[0].shape == (48, 64, 3)
    del reader
    audio = decord.AudioReader(str(path), sample_rate=16_000, mono=True)
    assert audio.shape[1] > 1000
    del audio


def _mean_colour(frame: np.ndarray) -> np.ndarray:
    return frame.reshape(-1, 3).astype(np.float64).mean(0)


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    mono = audio.mean(0)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / rate)[np.argmax(spectrum)])


def test_episodes_hold_each_utterance_at_its_timestamps(tiny_mesc: Path) -> None:
    rows = _read_csv(tiny_mesc / "MESC.csv")
    episodes = {(int(r["Season"]), int(r["Episode"])) for r in rows}
    names = {EPISODE_PATTERN.format(season=s, episode=e) for s, e in episodes}
    assert names == {p.name for p in (tiny_mesc / "episodes").iterdir()}
    assert "S01E01.mp4" in names
    for (season, episode), name in zip(sorted(episodes), sorted(names), strict=True):
        frames, audio, rate = _decode(tiny_mesc / "episodes" / name)
        fps = 10
        for i, row in enumerate(rows):
            if (int(row["Season"]), int(row["Episode"])) != (season, episode):
                continue
            start, end = _seconds(row["StartTime"]), _seconds(row["EndTime"])
            clip_frames, clip_audio, _ = _decode(
                tiny_mesc / "clips" / clip_name(int(row["Dialogue_ID"]), int(row["Utterance_ID"]), i)
            )
            middle = int((start + end) / 2 * fps)
            assert (
                np.abs(_mean_colour(frames[middle]) - _mean_colour(clip_frames[len(clip_frames) // 2])).max()
                < 8
            )
            cut = audio[:, int(start * rate) : int(end * rate)]
            assert abs(_dominant_hz(cut, rate) - _dominant_hz(clip_audio, rate)) < 15
        assert frames.shape[0] >= int(
            max(_seconds(r["EndTime"]) for r in rows if r["Episode"] == str(episode)) * fps
        )


def test_same_seed_same_files_and_media(tmp_path: Path) -> None:
    small = {**TINY, "num_dialogues": 3, "turns": (2, 3)}
    a, b = make_mesc(tmp_path / "a", **small), make_mesc(tmp_path / "b", **small)
    for name in ("MESC.csv", "train.json", "val.json", "test.json", "synthetic_meta.json"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    for clip in sorted((a.out_dir / "clips").iterdir()):
        fa, aa, _ = _decode(clip)
        fb, ab, _ = _decode(b.out_dir / "clips" / clip.name)
        assert np.array_equal(fa, fb) and np.array_equal(aa, ab), clip.name
    c = make_mesc(tmp_path / "c", **{**small, "seed": 4, "clips": False})
    assert (c.out_dir / "MESC.csv").read_bytes() != (a.out_dir / "MESC.csv").read_bytes()
    # Growing the dataset keeps the earlier dialogues' text and labels.
    d = make_mesc(tmp_path / "d", **{**small, "num_dialogues": 4, "clips": False})
    first = [r for r in _read_csv(d.out_dir / "MESC.csv") if r["Dialogue_ID"] != "3"]
    drop_times = [{k: v for k, v in r.items() if k not in ("StartTime", "EndTime")} for r in first]
    assert drop_times == [
        {k: v for k, v in r.items() if k not in ("StartTime", "EndTime")}
        for r in _read_csv(a.out_dir / "MESC.csv")
    ]


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        make_mesc(out, num_dialogues=3, clips=False)
    (out / "clips").mkdir()
    (out / "clips" / "dia99_utt0_999.mp4").write_bytes(b"stale")
    summary = make_mesc(
        out, num_dialogues=3, overwrite=True, **{k: v for k, v in TINY.items() if k != "num_dialogues"}
    )
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not (out / "clips" / "dia99_utt0_999.mp4").exists()  # ours, stale: replaced
    assert len(list((out / "clips").iterdir())) == summary.utterances
    with pytest.raises(FileExistsError):
        make_dfew(out, num_clips=5, write_frames=False)


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_dialogues"):
        make_mesc(tmp_path / "x", num_dialogues=2)
    with pytest.raises(ValueError, match="even"):
        make_mesc(tmp_path / "x", width=63)
    with pytest.raises(ValueError, match="p_video"):
        make_mesc(tmp_path / "x", p_video=1.5)
    with pytest.raises(ValueError, match="label_base"):
        make_dfew(tmp_path / "y", label_base=2)


def _read_split(path: Path) -> dict[int, int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "video_name,label"
    pairs = [line.split(",") for line in lines[1:]]
    assert all(name == str(int(name)) for name, _ in pairs), "video_name is written without zero padding"
    return {int(name): int(label) for name, label in pairs}


def test_dfew_layout_folds_and_label_base(tmp_path: Path) -> None:
    kwargs = dict(num_clips=12, seed=1, clip_seconds=(0.4, 0.8), width=64, height=48, frame_size=32)
    kwargs.update(sample_rate=16_000, channels=1)
    summary = make_dfew(tmp_path / "dfew", **kwargs)
    root = summary.out_dir
    originals = sorted(p.name for p in (root / "Clip" / "original").iterdir())
    assert originals == [f"{i:05d}.mp4" for i in range(1, 13)]
    for i in (1, 12):
        frames, audio, _ = _decode(root / "Clip" / "original" / f"{i:05d}.mp4")
        jpgs = sorted((root / "Clip" / "clip_224x224" / f"{i:05d}").iterdir())
        assert [p.name for p in jpgs] == [f"{i:05d}_{k:05d}.jpg" for k in range(1, len(frames) + 1)]
        assert Image.open(jpgs[0]).size == (32, 32) and audio.shape[1] > 0
    tests, labels = [], {}
    for fold in range(1, 6):
        train = _read_split(root / "EmoLabel_DataSplit" / "train(single-labeled)" / f"set_{fold}.csv")
        test = _read_split(root / "EmoLabel_DataSplit" / "test(single-labeled)" / f"set_{fold}.csv")
        assert not set(train) & set(test) and set(train) | set(test) == set(range(1, 13))
        assert list(test) == sorted(test) and len(test) in (2, 3)
        tests.append(set(test))
        for table in (train, test):
            for name, label in table.items():
                assert labels.setdefault(name, label) == label, "a clip changed label between folds"
    assert (
        set().union(*tests) == set(range(1, 13)) and sum(map(len, tests)) == 12
    )  # folds partition the clips
    assert set(labels.values()) <= set(range(1, len(DFEW_LABELS) + 1))
    zero = make_dfew(tmp_path / "dfew0", **{**kwargs, "label_base": 0, "write_frames": False})
    assert not (zero.out_dir / "Clip" / "clip_224x224").exists()
    assert _read_split(zero.out_dir / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv") == {
        k: v - 1
        for k, v in _read_split(root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv").items()
    }


def test_cli_writes_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from multimood.cli import main as cli_main

    out = tmp_path / "mesc"
    assert main(["mesc", "--out", str(out), "--dialogues", "3", "--no-clips", "--seed", "2"]) == 0
    assert "3 dialogues" in capsys.readouterr().out
    assert main(["mesc", "--out", str(out), "--dialogues", "3", "--no-clips"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["mesc", "--out", str(out), "--dialogues", "4", "--no-clips", "--force"]) == 0
    assert len({r["Dialogue_ID"] for r in _read_csv(out / "MESC.csv")}) == 4
    dfew = tmp_path / "dfew"
    args = ["synth", "dfew", "--out", str(dfew), "--clips", "5", "--no-frames", "--clip-seconds", "0.3,0.5"]
    assert (
        cli_main([*args, "--size", "32x24", "--sample-rate", "16000", "--channels", "1", "--label-base", "0"])
        == 0
    )
    assert "5 clips" in capsys.readouterr().out
    assert len(list((dfew / "Clip" / "original").iterdir())) == 5


def test_tokenizer_corpus_carries_the_synthetic_vocabulary() -> None:
    from multimood.tiny.corpus import tokenizer_corpus

    corpus = set(tokenizer_corpus())
    vocabulary = synthetic_vocabulary()
    assert vocabulary and set(vocabulary) <= corpus
    text = " ".join(vocabulary)
    cues = [*TEXT_CUES.values(), *DESCRIPTION_CUES.values(), *VOICE_CUES.values()]
    for word in (w for group in cues for w in group):
        assert re.search(rf"\b{re.escape(word)}\b", text), word


def _client_turn_emotions(csv_path: Path) -> list[list[list[str]]]:
    """Per dialogue, per client turn (run of consecutive client rows), the rows' emotions."""
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    dialogues: list[list[list[str]]] = []
    for _, group in itertools.groupby(rows, key=lambda r: r["Dialogue_ID"]):
        turns: list[list[str]] = []
        for speaker, run in itertools.groupby(group, key=lambda r: r["Speaker"]):
            if speaker == "Client":
                turns.append([r["Emotion"] for r in run])
        dialogues.append(turns)
    return dialogues


def test_emotion_stay_sets_persistence_within_and_across_client_turns(tmp_path: Path) -> None:
    settings = dict(num_dialogues=300, seed=5, turns=(6, 12), clips=False)
    make_mesc(tmp_path / "fresh", emotion_stay=(1.0, 0.0), **settings)
    dialogues = _client_turn_emotions(tmp_path / "fresh" / "MESC.csv")
    within = [len(set(turn)) == 1 for turns in dialogues for turn in turns]
    assert all(within)  # one emotion per client turn
    pairs = [(a[-1], b[0]) for turns in dialogues for a, b in itertools.pairwise(turns)]
    agree = np.mean([a == b for a, b in pairs])
    # Redrawn per turn from the uniform prior: consecutive turns agree by chance (1/7 = 0.143).
    assert len(pairs) > 400 and abs(agree - 1 / len(EMOTIONS)) < 0.05, (len(pairs), agree)

    make_mesc(tmp_path / "default", **settings)
    dialogues = _client_turn_emotions(tmp_path / "default" / "MESC.csv")
    pairs = [(a[-1], b[0]) for turns in dialogues for a, b in itertools.pairwise(turns)]
    # Kept with p = 0.6, else redrawn (which agrees 1/7 of the time): 0.6 + 0.4 / 7 = 0.657.
    assert abs(np.mean([a == b for a, b in pairs]) - (0.6 + 0.4 / 7)) < 0.05
    meta = json.loads((tmp_path / "fresh" / "synthetic_meta.json").read_text())
    assert meta["settings"]["emotion_stay"] == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"emotion_stay\[1\]"):
        make_mesc(tmp_path / "bad", emotion_stay=(0.5, 1.5), **settings)


def test_response_words_cuts_therapist_utterances_only(tmp_path: Path) -> None:
    settings = dict(num_dialogues=40, seed=3, clips=False)
    make_mesc(tmp_path / "whole", **settings)
    make_mesc(tmp_path / "short", response_words=4, **settings)
    read = lambda name: list(csv.DictReader(io.StringIO((tmp_path / name / "MESC.csv").read_text())))  # noqa: E731
    whole, short = read("whole"), read("short")
    assert len(whole) == len(short)
    cut = 0
    for a, b in zip(whole, short, strict=True):
        assert (a["Speaker"], a["Emotion"], a["Strategy"]) == (b["Speaker"], b["Emotion"], b["Strategy"])
        if a["Speaker"] == "Client":
            assert a["Utterance"] == b["Utterance"]
            continue
        words = a["Utterance"].split()
        assert len(b["Utterance"].split()) == min(4, len(words))
        # The cut keeps the start (the opener that names the therapist's emotion) and ends in a full stop.
        if len(words) > 4:
            cut += 1
            assert b["Utterance"] == " ".join(words[:4]).rstrip(",.?!") + "."
        else:
            assert b["Utterance"] == a["Utterance"]
    assert cut > 20
    meta = json.loads((tmp_path / "short" / "synthetic_meta.json").read_text())
    assert meta["settings"]["response_words"] == 4
    with pytest.raises(ValueError, match="response_words"):
        make_mesc(tmp_path / "bad", response_words=0, **settings)
