"""Decode throughput: our 16-frame video decode vs decoding every frame with PyAV, and DataLoader rates.

Two kinds of clips, H.264 + AAC mp4 at 640x360, 25 fps:

- ``mesc_like``: like MESC's utterance clips (1.5-3.1 s, mean 2.3 s), written with
  :func:`multimood.data.synthetic.write_clip` (x264 ultrafast, one keyframe every 250 frames, so
  each clip is a single group of pictures, as clips re-encoded by ffmpeg with default settings are);
- ``long_short_gop``: 10 s clips with a keyframe every second (as in broadcast or streaming
  video), where a decoder that seeks can skip most of the stream.

For each, clips/s in one process for

- ``ours``: :func:`multimood.data.media.load_video` (decord, only the 16 sampled frames, 384 px);
- ``naive_pyav``: every frame decoded to RGB with PyAV, then the same 16 frames picked and
  preprocessed (the same output tensor; the common naive pipeline);
- ``pyav_decode_only``: every frame decoded to RGB with PyAV and nothing else.

For the MESC-like clips also ``audio`` (:func:`multimood.data.media.load_audio`: PyAV, 16 kHz,
BEATs fbank) and DataLoader samples/s over a Dataset calling the video and audio loaders with 0
and 2 workers. Methods are timed in turn on each clip (so background load hits them alike), and
torch runs one intra-op thread in the main process, as it does in DataLoader workers.

Appends one JSON row to ``benchmarks/results/decode_throughput.jsonl`` and prints it.

    python -m benchmarks.decode_throughput            # ~1.5 min on 2 cores
    python -m benchmarks.decode_throughput --quick    # a smoke run, ~20 s
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
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import RESULTS, write_row
from multimood.data.media import (
    AudioLoader,
    VideoLoader,
    load_audio,
    load_video,
    pad_fbanks,
    preprocess_frames,
    segment_midpoints,
)
from multimood.data.synthetic import write_clip

DEFAULT_OUT = RESULTS / "decode_throughput.jsonl"


def make_clips(folder: Path, count: int, width: int, height: int, fps: int, seed: int = 0) -> list[Path]:
    """MESC-like clips: a textured gradient backdrop, a moving face-sized ellipse, sensor noise, speech-band audio."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    backdrop = np.stack(
        [xx * 200 // width + 30, yy * 180 // height + 40, (xx + yy) * 120 // (width + height) + 60], -1
    )
    backdrop = (backdrop + rng.normal(0, 10, (height, width, 1))).clip(0, 255).astype(np.uint8)
    durations = np.linspace(1.5, 3.1, count)  # mean 2.3 s, like MESC's utterance clips
    rng.shuffle(durations)
    paths = []
    for k, seconds in enumerate(durations):
        num = max(2, round(seconds * fps))
        frames = np.empty((num, height, width, 3), dtype=np.uint8)
        for t in range(num):
            frame = np.roll(backdrop, shift=t, axis=1)  # a slow pan
            cx = width / 2 + width / 8 * np.sin(t / 9 + k)
            cy = height / 2 + height / 12 * np.cos(t / 11 + k)
            face = ((xx - cx) / (width / 9)) ** 2 + ((yy - cy) / (height / 4)) ** 2 < 1
            frame[face] = (205, 165, 140)
            noise = rng.integers(-2, 3, (height, width, 1), dtype=np.int16)
            frames[t] = (frame + noise).clip(0, 255).astype(np.uint8)
        sample_rate = 44_100
        n = int(seconds * sample_rate)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / sample_rate)  # syllable rate
        voice = 0.1 * envelope * rng.standard_normal(n) + 0.1 * np.sin(
            2 * np.pi * 180 * np.arange(n) / sample_rate
        )
        audio = np.stack([voice, voice]).astype(np.float32)
        paths.append(
            write_clip(folder / f"clip{k:03d}.mp4", frames, fps=fps, audio=audio, sample_rate=sample_rate)
        )
    return paths


def make_long_clips(
    folder: Path, count: int, width: int, height: int, fps: int, seconds: float
) -> list[Path]:
    """Video-only clips with a keyframe every second (write_clip has no keyframe-interval option)."""
    import av

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width]
    backdrop = np.stack(
        [xx * 200 // width + 30, yy * 180 // height + 40, (xx + yy) * 120 // (width + height) + 60], -1
    )
    backdrop = (backdrop + rng.normal(0, 10, (height, width, 1))).clip(0, 255).astype(np.uint8)
    paths = []
    for k in range(count):
        path = folder / f"long{k:03d}.mp4"
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1", "g": str(fps)}
            for t in range(round(seconds * fps)):
                frame = np.roll(backdrop, shift=t + 7 * k, axis=1)
                left = (3 * t) % (width - width // 6)
                frame[height // 4 : 3 * height // 4, left : left + width // 6] = (205, 165, 140)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def decode_all_frames_pyav(path: Path) -> list[np.ndarray]:
    """The naive way: every frame of the first video stream to RGB."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def naive_pyav(path: Path, num_frames: int, image_size: int) -> torch.Tensor:
    frames = decode_all_frames_pyav(path)
    return preprocess_frames([frames[i] for i in segment_midpoints(len(frames), num_frames)], image_size)


def clips_per_second(
    methods: dict[str, Callable[[Path], object]], paths: list[Path], passes: int
) -> dict[str, float]:
    """Clips/s per method: each clip's median time over ``passes``, methods interleaved per clip."""
    for fn in methods.values():  # warm-up (imports, allocator)
        fn(paths[0])
    times: dict[str, list[float]] = {name: [] for name in methods}
    for path in paths:
        per_clip: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(passes):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn(path)
                per_clip[name].append(time.perf_counter() - start)
        for name in methods:
            times[name].append(statistics.median(per_clip[name]))
    return {name: len(paths) / sum(values) for name, values in times.items()}


def video_results(paths: list[Path], num_frames: int, image_size: int, passes: int) -> dict[str, float]:
    rates = clips_per_second(
        {
            "ours": lambda p: load_video(p, num_frames, image_size),
            "naive_pyav": lambda p: naive_pyav(p, num_frames, image_size),
            "pyav_decode_only": decode_all_frames_pyav,
        },
        paths,
        passes,
    )
    return {
        **{f"{name}_clips_per_s": round(rate, 2) for name, rate in rates.items()},
        "speedup_vs_naive_pyav": round(rates["ours"] / rates["naive_pyav"], 2),
        "speedup_vs_pyav_decode_only": round(rates["ours"] / rates["pyav_decode_only"], 2),
    }


class ClipDataset(Dataset):
    """What a training dataset does per sample: 16 frames at 384 px and a BEATs fbank."""

    def __init__(self, paths: list[Path], length: int, num_frames: int, image_size: int) -> None:
        self.paths, self.length = paths, length
        self.video = VideoLoader(num_frames=num_frames, image_size=image_size)
        self.audio = AudioLoader()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index % len(self.paths)]
        fbank, _ = self.audio(path)
        return self.video(path), fbank


def collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    videos, fbanks = zip(*batch, strict=True)
    padded, mask = pad_fbanks(fbanks)
    return torch.stack(videos), padded, mask


def dataloader_samples_per_second(dataset: ClipDataset, num_workers: int, batch_size: int) -> float:
    """Samples/s after the first batch (worker start-up excluded)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for videos, _, _ in iterator:
        seen += videos.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few clips, one pass: a smoke run")
    parser.add_argument("--num-clips", type=int, default=None, help="clips to generate (default 24, quick 6)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument(
        "--passes", type=int, default=None, help="timed passes per method (default 3, quick 1)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--long-clips", type=int, default=None, help="10 s short-GOP clips (default 4, quick 2)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads in this process (DataLoader workers use 1; on a busy 2-core "
        "machine 2 threads made the fbank up to 100x slower through OpenMP stalls)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    num_clips = args.num_clips or (6 if args.quick else 24)
    passes = args.passes or (1 if args.quick else 3)
    num_long = args.long_clips if args.long_clips is not None else (2 if args.quick else 4)
    torch.set_num_threads(args.torch_threads)

    import av
    import decord

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        paths = make_clips(Path(tmp), num_clips, args.width, args.height, args.fps)
        frames_per_clip = [len(decode_all_frames_pyav(p)) for p in paths]
        mb_per_clip = statistics.mean(p.stat().st_size for p in paths) / 2**20

        mesc_like = video_results(paths, args.num_frames, args.image_size, passes)
        audio = clips_per_second({"audio": load_audio}, paths, passes)["audio"]
        long_paths = make_long_clips(Path(tmp), num_long, args.width, args.height, args.fps, seconds=10.0)
        long_short_gop = (
            video_results(long_paths, args.num_frames, args.image_size, passes) if long_paths else {}
        )

        dataset = ClipDataset(
            paths, max(2 * num_clips, 4 * args.batch_size), args.num_frames, args.image_size
        )
        loader_rates = {
            f"dataloader_workers{w}_samples_per_s": dataloader_samples_per_second(dataset, w, args.batch_size)
            for w in (0, 2)
        }

    row = {
        "versions": {"decord": decord.__version__, "av": av.__version__},
        "params": {
            "quick": args.quick,
            "num_clips": num_clips,
            "size": f"{args.width}x{args.height}",
            "fps": args.fps,
            "mean_frames_per_clip": statistics.mean(frames_per_clip),
            "mean_seconds_per_clip": statistics.mean(frames_per_clip) / args.fps,
            "mean_mb_per_clip": round(mb_per_clip, 3),
            "num_frames": args.num_frames,
            "image_size": args.image_size,
            "passes": passes,
            "batch_size": args.batch_size,
            "torch_threads_main_process": args.torch_threads,
            "dataloader_samples": len(dataset),
        },
        "results": {
            "mesc_like": {**mesc_like, "audio_fbank_clips_per_s": round(audio, 2)},
            "long_short_gop": {
                "num_clips": num_long,
                "seconds_per_clip": 10.0,
                "keyframe_every_s": 1.0,
                **long_short_gop,
            },
            **{k: round(v, 2) for k, v in loader_rates.items()},
            "dataloader_speedup_2_vs_0_workers": round(
                loader_rates["dataloader_workers2_samples_per_s"]
                / loader_rates["dataloader_workers0_samples_per_s"],
                2,
            ),
        },
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    path = write_row("decode_throughput", row, args.out)
    print(json.dumps(row, indent=2))
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
