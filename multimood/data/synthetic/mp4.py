"""Writing real media files: an mp4 (H.264 + AAC) through PyAV, and the generators' output folders."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray] | None,
    fps: float = 10.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> Path:
    """Write an mp4 with an H.264 video track and/or an AAC audio track.

    frames: uint8 (T, H, W, 3) RGB, or an iterable of (H, W, 3) frames (streamed, for long files),
    H and W even (H.264 with yuv420p needs even sizes); None for an audio-only file. audio:
    float32 in [-1, 1], shape (channels, samples) or (samples,) for mono; None for a silent
    (video-only) file. The two tracks are interleaved in time, as in a normal video file.
    """
    import av

    if frames is None and audio is None:
        raise ValueError("write_clip needs frames, audio, or both")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_iter: Iterator[np.ndarray] | None = None
    first: np.ndarray | None = None
    if frames is not None:
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[0] == 0):
            raise ValueError(
                f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
            )
        frame_iter = iter(frames)
        first = next(frame_iter, None)
        if first is None:
            raise ValueError("frames is empty")
        if first.dtype != np.uint8 or first.ndim != 3 or first.shape[-1] != 3:
            raise ValueError(f"each frame must be uint8 (H, W, 3), got {first.dtype} {first.shape}")
        if first.shape[0] % 2 or first.shape[1] % 2:
            raise ValueError(f"frame size must be even for yuv420p, got {first.shape[1]}x{first.shape[0]}")
    if audio is not None:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if audio.shape[0] not in (1, 2):
            raise ValueError(f"audio must have 1 or 2 channels, got shape {audio.shape}")
        audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0))

    with av.open(str(path), mode="w", format="mp4") as container:
        video_stream = audio_stream = None
        if first is not None:
            video_stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video_stream.height, video_stream.width = first.shape[:2]
            video_stream.pix_fmt = "yuv420p"
            # Deterministic, fast encode: one thread, no B-frame reordering randomness.
            video_stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        if audio is not None:
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            audio_stream = container.add_stream("aac", rate=sample_rate, layout=layout)
            audio_stream.bit_rate = 64_000 * audio.shape[0]
            # FFmpeg's default AAC coder ("twoloop") is about 2x slower on tones and gains nothing here.
            audio_stream.options = {"aac_coder": "fast"}

        chunk = 1024  # AAC frame size
        audio_pos = 0

        def mux_audio_until(sample: int) -> None:
            nonlocal audio_pos
            assert audio is not None and audio_stream is not None
            while audio_pos < min(sample, audio.shape[1]):
                piece = np.ascontiguousarray(audio[:, audio_pos : audio_pos + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=audio_stream.layout.name)
                frame.sample_rate = sample_rate
                frame.pts = audio_pos
                container.mux(audio_stream.encode(frame))
                audio_pos += piece.shape[1]

        if video_stream is not None:
            assert first is not None and frame_iter is not None
            index = 0
            image: np.ndarray | None = first
            while image is not None:
                if image.shape != first.shape or image.dtype != np.uint8:
                    raise ValueError(
                        f"frame {index} is {image.dtype} {image.shape}, expected uint8 {first.shape}"
                    )
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(video_stream.encode(frame))
                if audio_stream is not None:
                    mux_audio_until(round((index + 1) / fps * sample_rate))
                index += 1
                image = next(frame_iter, None)
            container.mux(video_stream.encode())
        if audio_stream is not None:
            mux_audio_until(audio.shape[1])  # type: ignore[union-attr]
            container.mux(audio_stream.encode())
    return path


def prepare_out_dir(out_dir: Path, owned: Sequence[str], overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove only what this writer owns."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; choose an empty folder or pass overwrite=True (CLI: --force)"
            )
        for name in owned:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
