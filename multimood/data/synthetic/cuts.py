"""Episodes whose every frame shows its own index, and clips cut from them the way users cut them.

The frame index is drawn as a binary code of bright and dark blocks (with its bitwise complement
underneath, so a damaged or blended frame reads as unreadable, never as another index). Blocks
this large survive H.264 at x264's default quality, so a decoded clip tells exactly which episode
frames it presents: the oracle for "the sampled frames are the right ones".

Episodes are encoded and clips are cut with the ``ffmpeg`` command-line tool that the
``imageio-ffmpeg`` wheel ships (a development dependency), because the point is to reproduce what
users do: ``ffmpeg -ss START -t DUR -i episode.mp4 -c copy clip.mp4`` (stream copy: the clip starts
at the keyframe before ``START`` and carries an MP4 edit list that hides the pre-roll) or the same
command without ``-c copy`` (re-encoded with x264's defaults: B-frames, scene-cut keyframes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

MARK_BITS = 12  # up to 4,096 frames: 160 s at 25 fps
_MARK_COLUMNS = 6
_MARK_ROWS = 2 * (MARK_BITS // _MARK_COLUMNS)  # the code, then its complement
_MARK_HEIGHT = 0.6  # the blocks fill the top 60% of the frame; the scene shows below
BRIGHT, DARK = 235, 20  # video-range extremes: no clipping in yuv420p


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by ``imageio-ffmpeg`` (``pip install -e '.[dev]'``)."""
    try:
        import imageio_ffmpeg
    except ImportError as error:  # a development dependency, not needed for training
        raise RuntimeError(
            "making test media needs the ffmpeg binary of imageio-ffmpeg: pip install -e '.[dev]'"
        ) from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def _cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each mark cell, row-major; cell k < MARK_BITS holds bit k."""
    cell_h, cell_w = int(height * _MARK_HEIGHT) // _MARK_ROWS, width // _MARK_COLUMNS
    return [
        (r * cell_h, (r + 1) * cell_h, c * cell_w, (c + 1) * cell_w)
        for r in range(_MARK_ROWS)
        for c in range(_MARK_COLUMNS)
    ]


def draw_mark(frame: np.ndarray, index: int) -> np.ndarray:
    """Draw ``index`` into an (H, W, 3) uint8 frame in place: bit k of the index, then its complement."""
    if not 0 <= index < 2**MARK_BITS:
        raise ValueError(f"frame index {index} does not fit in {MARK_BITS} bits")
    height, width = frame.shape[:2]
    bits = [(index >> k) & 1 for k in range(MARK_BITS)]
    for k, (top, bottom, left, right) in enumerate(_cells(width, height)):
        bit = bits[k] if k < MARK_BITS else 1 - bits[k - MARK_BITS]
        frame[top:bottom, left:right] = BRIGHT if bit else DARK
    return frame


def read_mark(frame: np.ndarray) -> int:
    """The index drawn by :func:`draw_mark` in an (H, W, 3) RGB frame, or -1 if it does not read.

    Each cell's centre half is averaged; a code whose complement row disagrees is unreadable.
    """
    height, width = frame.shape[:2]
    grey = np.asarray(frame, dtype=np.float32).mean(-1)
    bits = []
    for top, bottom, left, right in _cells(width, height):
        dy, dx = (bottom - top) // 4, (right - left) // 4
        bits.append(int(grey[top + dy : bottom - dy, left + dx : right - dx].mean() > (BRIGHT + DARK) / 2))
    code, check = bits[:MARK_BITS], bits[MARK_BITS:]
    if any(a == b for a, b in zip(code, check, strict=True)):
        return -1
    return sum(bit << k for k, bit in enumerate(code))


def marks_of_video(
    video: torch.Tensor,
    width: int,
    height: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> list[int]:
    """Frame indices shown by a :func:`multimood.data.media.load_video` output (T, 3, S, S).

    Undoes the normalisation and crops the centred content of a ``width`` x ``height`` source
    (the loader pads to a square) before reading each frame's mark.
    """
    size = video.shape[-1]
    scale = size / max(width, height)
    h, w = round(height * scale), round(width * scale)
    top, left = (size - h) // 2, (size - w) // 2
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    rgb = ((video * s + m) * 255).clamp(0, 255)[:, :, top : top + h, left : left + w]
    return [read_mark(frame.permute(1, 2, 0).numpy()) for frame in rgb]


def presented_marks(path: str | Path) -> list[int]:
    """The marks of every frame FFmpeg presents for a file (full decode, edit lists honoured): the
    oracle sampled frames are checked against."""
    import av

    with av.open(str(path)) as container:
        return [read_mark(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def marked_frames(
    num_frames: int,
    width: int,
    height: int,
    scene_frames: tuple[int, int] = (40, 90),
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Frames with their index marked above a moving, textured scene that cuts to a new one every
    ``scene_frames`` (random range) frames, so that x264 places scene-cut keyframes as in TV."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    scene_top = int(height * _MARK_HEIGHT)
    next_cut, backdrop = 0, None
    for t in range(num_frames):
        if t == next_cut:
            base = rng.integers(40, 200, 3)
            texture = rng.normal(0, 18, (height, width, 1))
            backdrop = np.clip(base + texture + 40 * np.sin(xx / (7 + rng.integers(0, 9)))[..., None], 0, 255)
            next_cut = t + int(rng.integers(*scene_frames))
        assert backdrop is not None
        frame = np.roll(backdrop, 3 * t, axis=1).astype(np.uint8)  # a pan: every frame differs
        centre = width / 2 + width / 4 * np.sin(t / 7)
        blob = ((xx - centre) / (width / 10)) ** 2 + ((yy - scene_top) / (height / 6)) ** 2 < 1
        frame[blob & (yy >= scene_top)] = (205, 165, 140)
        yield draw_mark(frame, t)


def write_marked_episode(
    path: str | Path,
    seconds: float,
    fps: int = 25,
    width: int = 128,
    height: int = 96,
    x264: Sequence[str] = (),
    audio: bool = True,
    seed: int = 0,
) -> Path:
    """Encode an episode of marked frames with the ffmpeg binary: H.264 (x264 defaults plus
    ``x264`` arguments, e.g. ``("-g", "25")``) and, with ``audio``, a 44.1 kHz stereo AAC tone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_frames = round(seconds * fps)
    command = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
    if audio:
        command += ["-f", "lavfi", "-t", str(num_frames / fps), "-i", "sine=frequency=330:sample_rate=44100"]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p", *x264]
    if audio:
        command += ["-c:a", "aac", "-ac", "2"]
    command.append(str(path))
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    for frame in marked_frames(num_frames, width, height, seed=seed):
        process.stdin.write(frame.tobytes())
    process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {stderr[-500:]}")
    return path


def cut(
    episode: str | Path, out: str | Path, start: float, duration: float, copy: bool, args: Sequence[str] = ()
) -> Path:
    """``ffmpeg -ss START -t DUR -i EPISODE [-c copy] OUT``: a stream copy (edit list) or a re-encode
    with the encoders' defaults (x264, AAC)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-ss", f"{start:.6f}", "-t", f"{duration:.6f}"]
    command += ["-i", str(episode), *(["-c", "copy"] if copy else []), *args, str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed cutting {out}: {result.stderr[-500:]}")
    return out


__all__ = [
    "MARK_BITS",
    "cut",
    "draw_mark",
    "ffmpeg_exe",
    "marked_frames",
    "marks_of_video",
    "presented_marks",
    "read_mark",
    "write_marked_episode",
]
