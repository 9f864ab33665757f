"""``multimood cut-clips``: cut one clip per MESC utterance out of the episodes a user owns.

MESC ships annotations only; the videos are TV episodes the user must provide. Each row of
``MESC.csv`` names a season, an episode and a ``StartTime``/``EndTime``; this command cuts that span
into ``dia{Dialogue_ID}_utt{Utterance_ID}_{row}.mp4`` (``row`` = 0-based data row of the CSV, the
authors' naming, see docs/design/data.md) in one flat folder.

Cuts are re-encoded (H.264 video, AAC audio) with PyAV, whose wheels bundle FFmpeg, so no system
ffmpeg is needed and cuts are frame accurate rather than snapped to keyframes:

* video: every frame whose display interval overlaps ``[start, end)`` (so even a 40 ms utterance
  has a frame); the first is the frame on screen at ``start`` and gets timestamp 0 (so video may
  lead the audio by less than one frame); the episode's frame rate and size are kept;
* audio: exactly the samples in ``[start, end)`` at the episode's sample rate (more than two
  channels are mixed down to stereo).

The command is resumable: a clip is written under a temporary name and renamed when complete, so
a clip that exists under its final name is complete and is skipped on the next run. Episodes that
are missing and clips that fail to decode are collected in a summary, printed and written as JSON
(``--summary``, default ``<out>/cut_clips_summary.json``); the exit code is 1 when anything failed.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from multimood.data.mesc import read_mesc_csv

DEFAULT_EPISODE_PATTERN = "S{season:02d}E{episode:02d}.mp4"
SUMMARY_NAME = "cut_clips_summary.json"
PART_SUFFIX = ".part"

# x264 settings: visually lossless at a reasonable speed. The clips are inputs to a frozen vision
# tower that sees 384 px frames, so higher quality buys nothing.
VIDEO_OPTIONS = {"preset": "veryfast", "crf": "18"}
AAC_FRAME = 1024  # samples per AAC frame
# Float slack when comparing frame times with the cut (timestamps are exact rationals, their
# float forms are not).
_EPSILON = 1e-6


@dataclass(frozen=True)
class ClipJob:
    """One clip to cut: its file name, the episode and the span in milliseconds, and the CSV row."""

    name: str
    episode: str
    start_ms: int
    end_ms: int
    row: int
    line: int


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be cut: which, from where, and the error."""

    clip: str
    row: int
    line: int
    episode: str
    error: str


@dataclass
class CutSummary:
    """What a ``cut-clips`` run did. ``failures`` lists decode errors clip by clip; clips of
    missing episodes are counted per episode in ``missing_episodes`` instead."""

    csv: str
    episodes_dir: str
    out_dir: str
    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    missing_episodes: dict[str, int] = field(default_factory=dict)
    failures: list[ClipFailure] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"cut-clips: {self.total} clips: {self.written} written, {self.skipped} already present, "
            f"{self.failed} failed ({self.seconds:.1f} s)"
        ]
        for episode, count in sorted(self.missing_episodes.items()):
            lines.append(f"  missing episode {episode}: {count} clips not cut")
        for failure in self.failures[:20]:
            lines.append(f"  {failure.clip} (CSV line {failure.line}): {failure.error}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more decode failures (see the JSON summary)")
        return "\n".join(lines)


def plan_jobs(
    csv_path: str | Path, episodes_dir: str | Path, episode_pattern: str = DEFAULT_EPISODE_PATTERN
) -> list[ClipJob]:
    """One :class:`ClipJob` per CSV row, in CSV order. ``episode_pattern`` is formatted with the
    integers ``season`` and ``episode`` (e.g. ``"S{season:02d}E{episode:02d}.mp4"``)."""
    dialogues, _ = read_mesc_csv(csv_path)
    episodes_dir = Path(episodes_dir)
    jobs = []
    for turns in dialogues:
        for turn in turns:
            try:
                episode_name = episode_pattern.format(season=turn.season, episode=turn.episode)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(
                    f"--episode-pattern {episode_pattern!r} must use only {{season}} and {{episode}}: {err!r}"
                ) from None
            jobs.append(
                ClipJob(
                    turn.clip_name,
                    str(episodes_dir / episode_name),
                    turn.start_ms,
                    turn.end_ms,
                    turn.row,
                    turn.line,
                )
            )
    return jobs


def _video_rate(vin) -> Fraction:
    return vin.average_rate or vin.guessed_rate or Fraction(25)


def _add_video_stream(dst, vin):
    vout = dst.add_stream("libx264", rate=_video_rate(vin))
    vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
    vout.pix_fmt = "yuv420p"
    vout.options = dict(VIDEO_OPTIONS)
    return vout


def _audio_format(ain) -> tuple[int, str]:
    """Output sample rate and layout: the episode's rate; mono stays mono, anything else stereo."""
    return ain.codec_context.sample_rate, "mono" if ain.codec_context.channels == 1 else "stereo"


def _cut_video(src, vin, dst, vout, start: float, end: float) -> None:
    import av

    rate = _video_rate(vin)
    frame_duration = 1.0 / float(rate)
    src.seek(max(0, int(start / vin.time_base)), stream=vin, backward=True)
    first_time: float | None = None
    last_pts = -1
    written = 0
    for frame in src.decode(vin):
        if frame.pts is None:
            continue
        t = float(frame.pts * vin.time_base)
        if t >= end - _EPSILON:
            break
        if t + frame_duration <= start + _EPSILON:
            continue
        # Output time base is 1/rate, counted from the first kept frame (the one on screen at
        # `start`), so frames stay on the episode's grid; never let a timestamp repeat.
        if first_time is None:
            first_time = t
        pts = max(last_pts + 1, round((t - first_time) * float(rate)))
        # A fresh frame: decoded frames carry picture types that would force keyframes.
        out = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
        out.pts, last_pts = pts, pts
        dst.mux(vout.encode(out))
        written += 1
    if not written:
        raise ValueError(f"no video frames decoded between {start:.3f} s and {end:.3f} s")
    dst.mux(vout.encode())


def _cut_audio(src, ain, dst, aout, start: float, end: float) -> None:
    import av

    rate, layout = _audio_format(ain)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    # AAC decoders need a little audio before the cut to settle; seek half a second early.
    src.seek(max(0, int((start - 0.5) / ain.time_base)), stream=ain, backward=True)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    for frame in src.decode(ain):
        if frame.pts is None:
            continue
        t = float(frame.pts * ain.time_base)
        if t >= end:
            break
        for piece in resampler.resample(frame):
            if first_time is None:
                first_time = t
            chunks.append(piece.to_ndarray())
    if first_time is None:
        raise ValueError(f"no audio decoded between {start:.3f} s and {end:.3f} s")
    samples = np.concatenate(chunks, axis=1)  # (channels, n)
    lo = max(0, round((start - first_time) * rate))
    hi = min(samples.shape[1], round((end - first_time) * rate))
    samples = np.ascontiguousarray(samples[:, lo:hi], dtype=np.float32)
    if samples.shape[1] == 0:
        raise ValueError(f"no audio samples between {start:.3f} s and {end:.3f} s")
    for offset in range(0, samples.shape[1], AAC_FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, offset : offset + AAC_FRAME]), format="fltp", layout=layout
        )
        frame.sample_rate, frame.pts = rate, offset
        dst.mux(aout.encode(frame))
    dst.mux(aout.encode())


def cut_clip(episode: str | Path, start: float, end: float, out_path: str | Path) -> Path:
    """Cut ``[start, end)`` seconds of ``episode`` into ``out_path`` (mp4, H.264 + AAC).

    Writes ``out_path`` + ``.part`` first and renames it when complete, so ``out_path`` only ever
    exists complete. Raises on decode/encode errors (the partial file is removed).
    """
    import av

    if end <= start:
        raise ValueError(f"clip end {end} is not after its start {start}")
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + PART_SUFFIX)
    try:
        with av.open(str(episode)) as src:
            vin = src.streams.video[0] if src.streams.video else None
            ain = src.streams.audio[0] if src.streams.audio else None
            if vin is None and ain is None:
                raise ValueError(f"{episode} has no video or audio stream")
            if vin is not None:
                vin.thread_type = "AUTO"
            # Both output streams must exist before the first packet is written; then video and
            # audio are cut in two passes (one seek each). mp4 indexes every sample, so the
            # packets need no interleaving.
            with av.open(str(part), mode="w", format="mp4") as dst:
                vout = _add_video_stream(dst, vin) if vin is not None else None
                if ain is not None:
                    rate, layout = _audio_format(ain)
                    aout = dst.add_stream("aac", rate=rate, layout=layout)
                if vin is not None:
                    _cut_video(src, vin, dst, vout, start, end)
                if ain is not None:
                    _cut_audio(src, ain, dst, aout, start, end)
        os.replace(part, out_path)
    finally:
        part.unlink(missing_ok=True)
    return out_path


def _run_job(job: ClipJob, out_dir: str) -> tuple[str, str | None]:
    """Worker entry point: cut one clip; return ``(name, error or None)``."""
    try:
        cut_clip(job.episode, job.start_ms / 1000.0, job.end_ms / 1000.0, Path(out_dir) / job.name)
    except Exception as err:  # any decode/encode problem is recorded for this clip, not fatal
        return job.name, f"{type(err).__name__}: {err}"
    return job.name, None


def cut_clips(
    csv_path: str | Path,
    episodes_dir: str | Path,
    out_dir: str | Path,
    episode_pattern: str = DEFAULT_EPISODE_PATTERN,
    workers: int = 1,
    progress: bool = True,
) -> CutSummary:
    """Cut every clip of ``csv_path`` that is not already in ``out_dir``; return the summary.

    workers: processes cutting in parallel (1 = in this process). progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(csv_path, episodes_dir, episode_pattern)
    summary = CutSummary(
        csv=str(csv_path), episodes_dir=str(episodes_dir), out_dir=str(out_dir), total=len(jobs)
    )
    todo: list[ClipJob] = []
    missing: Counter[str] = Counter()
    present = {p.name for p in out_dir.iterdir()}
    for job in jobs:
        if job.name in present and (out_dir / job.name).stat().st_size > 0:
            summary.skipped += 1
        elif not Path(job.episode).is_file():
            missing[job.episode] += 1
        else:
            todo.append(job)
    summary.missing_episodes = dict(sorted(missing.items()))
    by_name = {job.name: job for job in todo}

    def record(name: str, error: str | None) -> None:
        if error is None:
            summary.written += 1
        else:
            job = by_name[name]
            summary.failures.append(ClipFailure(name, job.row, job.line, job.episode, error))

    with tqdm(total=len(todo), desc="cut-clips", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for job in todo:
                record(*_run_job(job, str(out_dir)))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_run_job, job, str(out_dir)) for job in todo]
                for future in as_completed(futures):
                    record(*future.result())
                    bar.update(1)
    summary.failures.sort(key=lambda failure: failure.row)
    summary.failed = len(summary.failures) + sum(missing.values())
    summary.seconds = time.perf_counter() - started
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``multimood cut-clips``: see the module docstring."""
    from multimood.cli import make_parser

    parser = make_parser(
        "cut-clips",
        "Cut one clip per MESC.csv row out of the episodes, named dia{Dialogue_ID}_utt{Utterance_ID}_{row}.mp4. "
        "Resumable: clips already in --out are skipped.",
    )
    parser.add_argument("--csv", required=True, help="path to MESC.csv")
    parser.add_argument("--episodes", required=True, help="folder holding the episode video files")
    parser.add_argument("--out", required=True, help="folder to write the clips to (created if needed)")
    parser.add_argument(
        "--episode-pattern",
        default=DEFAULT_EPISODE_PATTERN,
        help="episode file name inside --episodes, formatted with integers {season} and {episode} "
        f"(default: {DEFAULT_EPISODE_PATTERN!r})",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    parser.add_argument("--summary", default=None, help=f"JSON summary path (default: <out>/{SUMMARY_NAME})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(list(argv) if argv is not None else None)
    summary = cut_clips(
        args.csv,
        args.episodes,
        args.out,
        args.episode_pattern,
        workers=args.workers,
        progress=not args.no_progress,
    )
    summary_path = Path(args.summary) if args.summary else Path(args.out) / SUMMARY_NAME
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary.to_dict(), indent=2))
    print(summary.text())
    print(f"summary written to {summary_path}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
