"""``multimood cut-clips`` on a synthetic episode: names, frame-accurate spans, resumability, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from multimood.data.clips import SUMMARY_NAME, cut_clip, cut_clips, main
from multimood.data.mesc import CSV_COLUMNS
from multimood.data.synthetic import write_clip

FPS = 25
RATE = 16_000
SECONDS = 4.0
SEGMENT = 0.5  # the colour and the tone's loudness change every half second
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)  # segment k: COLOURS[k % 3]


def _amplitude(segment: int) -> float:
    return 0.1 + 0.1 * (segment % 4)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("episodes")
    n = int(SECONDS * FPS)
    frames = np.stack([np.broadcast_to(COLOURS[int(i / FPS / SEGMENT) % 3], (48, 64, 3)) for i in range(n)])
    t = np.arange(int(SECONDS * RATE)) / RATE
    amplitude = np.array([_amplitude(int(x / SEGMENT)) for x in t])
    audio = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_clip(folder / "S01E01.mp4", frames, fps=FPS, audio=audio, sample_rate=RATE)
    (folder / "S01E03.mp4").write_bytes(b"this is not an mp4 file")
    return folder


# (Dialogue_ID, Utterance_ID, Episode, start, end): rows 0-3 in the synthetic episode, row 4 in a
# missing episode, row 5 in a corrupt one.
ROWS = [
    (0, 0, 1, "00:00:01,000", "00:00:01,500"),
    (0, 1, 1, "00:00:02,020", "00:00:03,500"),
    (0, 2, 1, "00:00:00,300", "00:00:00,340"),
    (1, 0, 1, "00:00:03,000", "00:00:04,000"),
    (1, 1, 2, "00:00:01,000", "00:00:02,000"),
    (2, 0, 3, "00:00:01,000", "00:00:02,000"),
]


@pytest.fixture(scope="module")
def mesc_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "MESC.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for dialogue, utterance, episode, start, end in ROWS:
            speaker, strategy = ("Client", "undefined") if utterance % 2 == 0 else ("Therapist", "Approval")
            writer.writerow(
                ["Words.", speaker, "neutral", strategy, dialogue, utterance, 1, episode, start, end]
            )
    return path


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _read(path: Path) -> tuple[list[np.ndarray], np.ndarray, int]:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        audio_stream = container.streams.audio[0]
        duration = int(audio_stream.duration)  # in 1/RATE units: the muxed span, without AAC padding
        container.seek(0)
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return frames, audio, duration


def _args(csv_path: Path, episodes: Path, out: Path) -> list[str]:
    return ["--csv", str(csv_path), "--episodes", str(episodes), "--out", str(out), "--no-progress"]


def test_cut_clips_names_spans_and_failures(
    mesc_csv: Path, episodes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clips"
    assert main(_args(mesc_csv, episodes, out)) == 1  # something failed
    names = ["dia0_utt0_0.mp4", "dia0_utt1_1.mp4", "dia0_utt2_2.mp4", "dia1_utt0_3.mp4"]
    assert sorted(p.name for p in out.glob("*.mp4")) == names
    assert not list(out.glob("*.part"))

    for name, (_, _, _, start, end) in zip(names, ROWS, strict=False):
        start_s, end_s = _seconds(start), _seconds(end)
        frames, audio, duration = _read(out / name)
        # Video: every frame whose display interval [k/FPS, (k+1)/FPS) overlaps [start, end).
        first, last = int(np.floor(start_s * FPS + 1e-9)), int(np.ceil(end_s * FPS - 1e-9)) - 1
        assert len(frames) == last - first + 1
        for k, frame in zip(range(first, last + 1), frames, strict=True):
            expected = int(np.argmax(COLOURS[int(k / FPS / SEGMENT) % 3]))
            assert int(np.argmax(frame[24, 32])) == expected  # frame-accurate: the right colour
        # Audio: exactly the samples of [start, end) (AAC pads the decoded stream to 1024).
        assert duration == round((end_s - start_s) * RATE)
        assert audio.shape[1] >= duration
    # Loudness of the tone matches the segment the cut came from (1.0-1.5 s: segment 2).
    _, audio, duration = _read(out / names[0])
    rms = float(np.sqrt(np.mean(audio[0, 2048 : duration - 512] ** 2)))
    assert rms == pytest.approx(_amplitude(2) / np.sqrt(2), rel=0.1)

    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert (summary["total"], summary["written"], summary["skipped"], summary["failed"]) == (6, 4, 0, 2)
    assert summary["missing_episodes"] == {str(episodes / "S01E02.mp4"): 1}
    assert [(f["clip"], f["line"]) for f in summary["failures"]] == [("dia2_utt0_5.mp4", 7)]
    printed = capsys.readouterr().out
    assert "missing episode" in printed and "dia2_utt0_5.mp4" in printed


def test_second_run_skips_and_resumes(mesc_csv: Path, episodes: Path, tmp_path: Path) -> None:
    out = tmp_path / "clips"
    first = cut_clips(mesc_csv, episodes, out, progress=False)
    assert first.written == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    second = cut_clips(mesc_csv, episodes, out, progress=False)
    assert (second.written, second.skipped, second.failed) == (0, 4, 2)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes
    # An interrupted run leaves only a .part file: that clip is cut again, the others skipped.
    (out / "dia0_utt1_1.mp4").rename(out / "dia0_utt1_1.mp4.part")
    third = cut_clips(mesc_csv, episodes, out, progress=False)
    assert (third.written, third.skipped) == (1, 3)
    assert (out / "dia0_utt1_1.mp4").is_file() and not (out / "dia0_utt1_1.mp4.part").exists()


def test_parallel_workers_and_cli_entry(mesc_csv: Path, episodes: Path, tmp_path: Path) -> None:
    from multimood.cli import main as cli_main

    out = tmp_path / "clips"
    summary_path = tmp_path / "summary.json"
    code = cli_main(
        ["cut-clips", *_args(mesc_csv, episodes, out), "--workers", "2", "--summary", str(summary_path)]
    )
    assert code == 1
    summary = json.loads(summary_path.read_text())
    assert (summary["written"], summary["failed"]) == (4, 2)
    assert len(list(out.glob("*.mp4"))) == 4


def test_episode_pattern(mesc_csv: Path, episodes: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "eps"
    renamed.mkdir()
    (renamed / "season1_ep1.mp4").symlink_to(episodes / "S01E01.mp4")
    summary = cut_clips(
        mesc_csv,
        renamed,
        tmp_path / "clips",
        episode_pattern="season{season}_ep{episode}.mp4",
        progress=False,
    )
    assert summary.written == 4
    with pytest.raises(ValueError, match="episode-pattern"):
        cut_clips(
            mesc_csv, renamed, tmp_path / "clips", episode_pattern="{show}_{episode}.mp4", progress=False
        )


def test_cut_clip_leaves_nothing_on_error(episodes: Path, tmp_path: Path) -> None:
    target = tmp_path / "x.mp4"
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever FFmpeg raises for a bad file
        cut_clip(episodes / "S01E03.mp4", 1.0, 2.0, target)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="not after"):
        cut_clip(episodes / "S01E01.mp4", 2.0, 2.0, target)
