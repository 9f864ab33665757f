"""The synthetic DFEW: clips, face-aligned frame folders and the 5-fold split files.

DFEW layout and recipe
----------------------
::

    Clip/original/{id:05d}.mp4                       H.264 + AAC, width x height
    Clip/clip_224x224/{id:05d}/{id:05d}_{k:05d}.jpg  k = 1..frames, frame_size x frame_size faces
    EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv
    EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv

Split files have the header ``video_name,label``; ``video_name`` is the clip number without zero
padding (the DFEW readers we found parse it as an integer and pad it to five digits to find the
clip; the frame files use ``{id:05d}_{frame:05d}.jpg``, as in those readers). Rows are sorted by
clip number, lines end with ``\n``. Fold ``k`` tests on the ``k``-th fifth of a seeded permutation of
the clips and trains on the rest. Labels are 1-indexed as in the official files (``label_base=1``,
1 Happy ... 7 Fear, :data:`multimood.data.labels.DFEW_LABELS`); ``label_base=0`` writes the
0-indexed variant some public copies use. Clips draw their class uniformly and show it with the
same colour/motion (``p_video``) and tone (``p_audio``) code as MESC; ``Surprise`` has a colour and
a pitch of its own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimood.data.labels import (
    CLIENT,
    DFEW_LABELS,
)
from multimood.data.synthetic.mp4 import folder_bytes, prepare_out_dir
from multimood.data.synthetic.signals import (
    BACKGROUND,
    DFEW_TO_KEY,
    META_NAME,
    RECIPE_VERSION,
    MediaConfig,
    Style,
    count_at_rate,
    render_clip,
    render_frames,
    shown_label,
)

DFEW_FRAME_PATTERN = "{clip:05d}_{frame:05d}.jpg"
DFEW_SPLIT_DIRS = ("train(single-labeled)", "test(single-labeled)")
DFEW_FOLDS = 5


@dataclass
class DfewSummary:
    """What :func:`make_dfew` wrote."""

    out_dir: Path
    clips: int
    frames: int
    folds: list[tuple[int, int]]  # (train, test) sizes per fold
    label_base: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        folds = ", ".join(f"{a}/{b}" for a, b in self.folds)
        return (
            f"DFEW (synthetic) in {self.out_dir}: {self.clips} clips, {self.frames} face frames, "
            f"folds train/test {folds}, labels {self.label_base}..{self.label_base + 6}, "
            f"{self.bytes / 1e6:.2f} MB, written in {self.seconds:.1f} s "
            f"({self.seconds / max(1, self.clips) * 100:.1f} s per 100 clips)"
        )


def make_dfew(
    out_dir: str | Path,
    *,
    num_clips: int = 35,
    seed: int = 0,
    label_base: int = 1,
    write_frames: bool = True,
    clip_seconds: tuple[float, float] = (1.0, 3.0),
    fps: float = 10.0,
    width: int = 160,
    height: int = 120,
    frame_size: int = 224,
    sample_rate: int = 44_100,
    channels: int = 2,
    p_video: float = 0.8,
    p_audio: float = 0.7,
    overwrite: bool = False,
) -> DfewSummary:
    """Write a synthetic DFEW dataset (clips, face frames, 5-fold split files) into ``out_dir``.

    Args:
        out_dir: destination folder; must be empty or absent unless ``overwrite``.
        num_clips: clips to write, numbered 1..num_clips; at least 5 (one per fold).
        seed: everything is a function of it.
        label_base: 1 writes the official 1-indexed labels, 0 the 0-indexed variant.
        write_frames: also write ``Clip/clip_224x224/{id:05d}/{id:05d}_{k:05d}.jpg`` (one per video frame).
        clip_seconds: range of clip durations.
        fps, width, height: format of ``Clip/original`` videos (even sizes).
        frame_size: side of the square face frames (the folder keeps its official name).
        sample_rate, channels: AAC audio of the original clips.
        p_video, p_audio: probability that the picture / the tone shows the true class.
        overwrite: allow a non-empty ``out_dir``; the files this function writes are replaced.
    """
    from PIL import Image

    started = time.perf_counter()
    out = Path(out_dir)
    cfg = MediaConfig(fps=fps, width=width, height=height, sample_rate=sample_rate, channels=channels)
    cfg.check()
    if num_clips < DFEW_FOLDS:
        raise ValueError(f"num_clips must be >= {DFEW_FOLDS} (one per fold), got {num_clips}")
    if label_base not in (0, 1):
        raise ValueError(f"label_base must be 0 or 1, got {label_base}")
    if frame_size < 16 or frame_size % 2:
        raise ValueError(f"frame_size must be even and >= 16, got {frame_size}")
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise ValueError(f"clip_seconds must be (min, max) with 0 < min <= max, got {clip_seconds}")
    for name, p in (("p_video", p_video), ("p_audio", p_audio)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    prepare_out_dir(out, ["Clip", "EmoLabel_DataSplit", META_NAME], overwrite)

    keys = [DFEW_TO_KEY[name] for name in DFEW_LABELS]
    labels: dict[int, int] = {}  # clip id -> 0-based class
    shown: list[list[str]] = []
    n_frames = 0
    for clip_id in range(1, num_clips + 1):
        rng = np.random.default_rng([seed, 10, clip_id])
        label = int(rng.integers(len(DFEW_LABELS)))
        labels[clip_id] = label
        video_key = shown_label(rng, keys[label], p_video, keys)
        audio_key = shown_label(rng, keys[label], p_audio, keys)
        shown.append([video_key, audio_key])
        style = Style.draw(rng, video_key, audio_key, BACKGROUND[CLIENT])
        duration_ms = round(float(rng.uniform(*clip_seconds)) * 1000)
        render_clip(out / "Clip" / "original" / f"{clip_id:05d}.mp4", style, duration_ms, cfg)
        if write_frames:
            times = np.arange(count_at_rate(duration_ms, fps)) / fps
            faces = render_frames(style, times, frame_size, frame_size)
            folder = out / "Clip" / "clip_224x224" / f"{clip_id:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, face in enumerate(faces, start=1):
                Image.fromarray(face).save(
                    folder / DFEW_FRAME_PATTERN.format(clip=clip_id, frame=k),
                    quality=90,
                )
            n_frames += len(faces)

    order = np.random.default_rng([seed, 11]).permutation(np.arange(1, num_clips + 1))
    parts = [set(part.tolist()) for part in np.array_split(order, DFEW_FOLDS)]
    folds = []
    for fold, test_ids in enumerate(parts, start=1):
        train_ids = set(labels) - test_ids
        for split_dir, ids in zip(DFEW_SPLIT_DIRS, (train_ids, test_ids), strict=True):
            path = out / "EmoLabel_DataSplit" / split_dir / f"set_{fold}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [
                "video_name,label",
                *(f"{i},{labels[i] + label_base}" for i in sorted(ids)),
            ]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        folds.append((len(train_ids), len(test_ids)))

    meta = {
        "generator": "multimood.data.synthetic.make_dfew",
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
        "settings": {
            "num_clips": num_clips,
            "label_base": label_base,
            "clip_seconds": list(clip_seconds),
            "fps": fps,
            "width": width,
            "height": height,
            "frame_size": frame_size,
            "sample_rate": sample_rate,
            "channels": channels,
            "p_video": p_video,
            "p_audio": p_audio,
        },
        "frame_pattern": DFEW_FRAME_PATTERN,
        "shown_columns": ["video", "audio"],
        "shown": shown,
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return DfewSummary(
        out_dir=out,
        clips=num_clips,
        frames=n_frames,
        folds=folds,
        label_base=label_base,
        bytes=folder_bytes(out),
        seconds=time.perf_counter() - started,
    )
