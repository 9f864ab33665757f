"""Synthetic media and datasets in the real file formats.

The low-level writer :func:`write_clip` produces a real mp4 (H.264 video, AAC audio) with PyAV,
which ships its own FFmpeg, so no system packages are needed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(
    path: str | Path,
    frames: np.ndarray | None,
    fps: float = 10.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> Path:
    """Write an mp4 with an H.264 video track and/or an AAC audio track.

    frames: uint8 (T, H, W, 3) RGB, H and W even (H.264 with yuv420p needs even sizes); None for
    an audio-only file. audio: float32 in [-1, 1], shape (channels, samples) or (samples,) for mono;
    None for a silent (video-only) file.
    """
    import av

    if frames is None and audio is None:
        raise ValueError("write_clip needs frames, audio, or both")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        video_stream = audio_stream = None
        if frames is not None:
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
            height, width = frames.shape[1:3]
            if height % 2 or width % 2:
                raise ValueError(f"frame size must be even for yuv420p, got {width}x{height}")
            video_stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video_stream.width, video_stream.height = width, height
            video_stream.pix_fmt = "yuv420p"
            # Deterministic, fast encode: one thread, no B-frame reordering randomness.
            video_stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            layout = {1: "mono", 2: "stereo"}.get(audio.shape[0])
            if layout is None:
                raise ValueError(f"audio must have 1 or 2 channels, got shape {audio.shape}")
            audio_stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        if video_stream is not None:
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(video_stream.encode(frame))
            container.mux(video_stream.encode())
        if audio_stream is not None:
            chunk = 1024
            planar = np.ascontiguousarray(np.clip(audio, -1.0, 1.0))
            for start in range(0, planar.shape[1], chunk):
                piece = np.ascontiguousarray(planar[:, start : start + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=audio_stream.layout.name)
                frame.sample_rate = sample_rate
                frame.pts = start
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode())
    return path
