"""Decode throughput: our 16-frame video loader against the best plain PyAV loader, on clips cut
the way users cut them, with every sampled frame checked.

The clips come from an episode whose every frame shows its index (:mod:`multimood.data.synthetic.cuts`):
640x360, 25 fps, a scene change every 1.6-3.6 s, encoded with x264's defaults (B-frames, scene-cut
keyframes, at most 10 s apart) by the ffmpeg binary of imageio-ffmpeg. Three kinds of clip:

- ``reencoded``: MESC-like utterance spans (1.5-3.1 s, mean 2.3 s) cut with
  ``ffmpeg -ss START -t DUR -i episode.mp4 clip.mp4`` (re-encoded, x264 defaults);
- ``stream_copy``: the same spans with ``-c copy``: each clip starts at the keyframe before the
  span, and an MP4 edit list hides that pre-roll;
- ``long_short_gop``: 10 s spans re-encoded with a keyframe every second (``-g 25``), as in
  broadcast or streaming video, where a decoder that jumps can skip most of the stream.

Loaders (both return the same (16, 3, 384, 384) tensor, decode single-threaded as in DataLoader
workers, and honour edit lists):

- ``ours``: :func:`multimood.data.media.load_video`;
- ``pyav_best``: every frame decoded with PyAV, only the 16 sampled frames converted to RGB, the
  same preprocessing: the best loader we could write without planning the decode.

Each loader's sampled frames are compared with the frame indices drawn in them (the expected ones
are the segment midpoints of what FFmpeg presents). Timing: per run, every clip goes through
both loaders in turn (so background load hits them alike); clips/s per run; min/median/max over
runs. Also the audio fbank rate in both layouts (``clip`` and ``videollama2``) on the re-encoded
clips. torch runs one intra-op thread, as in DataLoader workers.

Appends one JSON row to ``benchmarks/results/decode_throughput.jsonl`` and prints it.

    python -m benchmarks.decode_throughput            # ~3 min on 2 cores
    python -m benchmarks.decode_throughput --quick    # a smoke run, ~40 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, spread, write_row
from multimood.data.media import AudioLoader, load_video, preprocess_frames, segment_midpoints
from multimood.data.synthetic.cuts import (
    cut,
    marks_of_video,
    presented_marks,
    write_marked_episode,
)

DEFAULT_OUT = RESULTS / "decode_throughput.jsonl"
LOADERS = ("ours", "pyav_best")


def pyav_best(path: Path, num_frames: int, image_size: int) -> torch.Tensor:
    """Decode every frame (one thread), convert only the sampled ones, preprocess as we do."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = list(container.decode(stream))
    picked = [frames[i].to_ndarray(format="rgb24") for i in segment_midpoints(len(frames), num_frames)]
    return preprocess_frames(picked, image_size)


def packet_counts(path: Path) -> tuple[int, int]:
    """(video packets, packets hidden by an edit list) of a clip."""
    import av

    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    return len(packets), sum(p.is_discard for p in packets)


def make_clips(folder: Path, args: argparse.Namespace) -> dict[str, list[Path]]:
    episode = write_marked_episode(
        folder / "episode.mp4", args.episode_seconds, fps=args.fps, width=args.width, height=args.height
    )
    rng = np.random.default_rng(0)
    durations = np.linspace(1.5, 3.1, args.num_clips)  # mean 2.3 s, like MESC's utterance clips
    starts = rng.uniform(1.0, args.episode_seconds - 4.0, args.num_clips)
    clips: dict[str, list[Path]] = {"reencoded": [], "stream_copy": [], "long_short_gop": []}
    for k, (start, seconds) in enumerate(zip(starts, durations, strict=True)):
        clips["reencoded"].append(cut(episode, folder / f"re{k:03d}.mp4", start, seconds, copy=False))
        clips["stream_copy"].append(cut(episode, folder / f"copy{k:03d}.mp4", start, seconds, copy=True))
    for k, start in enumerate(rng.uniform(0.0, args.episode_seconds - 10.5, args.long_clips)):
        clips["long_short_gop"].append(
            cut(episode, folder / f"long{k:03d}.mp4", start, 10.0, copy=False, args=("-g", str(args.fps)))
        )
    return clips


def check_frames(
    paths: list[Path], loaders: dict[str, Callable[[Path], torch.Tensor]], args: argparse.Namespace
) -> dict[str, bool]:
    """Whether every loader returns exactly the expected frames on every clip."""
    correct = dict.fromkeys(loaders, True)
    for path in paths:
        marks = presented_marks(path)
        expected = [marks[i] for i in segment_midpoints(len(marks), args.num_frames)]
        for name, load in loaders.items():
            got = marks_of_video(load(path), args.width, args.height)
            if got != expected:
                correct[name] = False
                print(f"WRONG FRAMES: {name} on {path.name}: {got} != {expected}")
    return correct


def time_runs(
    paths: list[Path], loaders: dict[str, Callable[[Path], object]], runs: int
) -> dict[str, list[float]]:
    """Clips/s of each loader in each run; the loaders take turns on every clip."""
    for load in loaders.values():  # warm-up: imports, allocator
        load(paths[0])
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(runs):
        spent = dict.fromkeys(loaders, 0.0)
        for path in paths:
            for name, load in loaders.items():
                start = time.perf_counter()
                load(path)
                spent[name] += time.perf_counter() - start
        for name in loaders:
            rates[name].append(len(paths) / spent[name])
    return rates


def kind_results(paths: list[Path], args: argparse.Namespace) -> dict[str, object]:
    loaders = {
        "ours": lambda p: load_video(p, args.num_frames, args.image_size),
        "pyav_best": lambda p: pyav_best(p, args.num_frames, args.image_size),
    }
    correct = check_frames(paths, loaders, args)
    rates = time_runs(paths, loaders, args.runs)
    speedups = [a / b for a, b in zip(rates["ours"], rates["pyav_best"], strict=True)]
    counts = [packet_counts(p) for p in paths]
    return {
        "num_clips": len(paths),
        "mean_packets": round(statistics.mean(c[0] for c in counts), 1),
        "mean_hidden_preroll_packets": round(statistics.mean(c[1] for c in counts), 1),
        "frames_correct": correct,
        **{f"{name}_clips_per_s": spread(rates[name]) for name in loaders},
        "speedup_ours_vs_pyav_best": spread(speedups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few clips: a smoke run")
    parser.add_argument("--num-clips", type=int, default=None, help="MESC-like spans (default 24, quick 6)")
    parser.add_argument("--long-clips", type=int, default=None, help="10 s spans (default 4, quick 2)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 5, quick 3)")
    parser.add_argument("--episode-seconds", type=float, default=None, help="default 60, quick 24")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads in this process (DataLoader workers use 1; on a busy 2-core "
        "machine 2 threads made the fbank up to 100x slower through OpenMP stalls)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.num_clips = args.num_clips or (6 if args.quick else 24)
    args.long_clips = args.long_clips or (2 if args.quick else 4)
    args.runs = args.runs or (3 if args.quick else 5)
    args.episode_seconds = args.episode_seconds or (24.0 if args.quick else 60.0)
    torch.set_num_threads(args.torch_threads)

    import av
    import imageio_ffmpeg

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        clips = make_clips(Path(tmp), args)
        made_s = time.perf_counter() - started
        results = {kind: kind_results(paths, args) for kind, paths in clips.items()}
        audio_rates = time_runs(
            clips["reencoded"],
            {"clip": AudioLoader(mode="clip"), "videollama2": AudioLoader(mode="videollama2")},
            args.runs,
        )
        results["audio_fbank_clips_per_s"] = {mode: spread(r) for mode, r in audio_rates.items()}
        seconds = [len(presented_marks(p)) / args.fps for p in clips["reencoded"]]

    row = {
        "schema": 2,
        "versions": {"av": av.__version__, "ffmpeg_cli": imageio_ffmpeg.get_ffmpeg_version()},
        "params": {
            "quick": args.quick,
            "size": f"{args.width}x{args.height}",
            "fps": args.fps,
            "episode_seconds": args.episode_seconds,
            "episode_encoder": "x264 defaults (ffmpeg CLI)",
            "mean_seconds_mesc_like_clip": round(statistics.mean(seconds), 3),
            "num_frames": args.num_frames,
            "image_size": args.image_size,
            "runs": args.runs,
            "torch_threads_main_process": args.torch_threads,
            "decoder_threads": 1,
        },
        "results": results,
        "media_generation_s": round(made_s, 1),
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    path = write_row("decode_throughput", row, args.out)
    print(json.dumps(row, indent=2))
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
