"""How a label shows in pictures and sound, and the clip renderer (pure functions of a style and time).

Every utterance (client and therapist) shows its speaker's emotion in four channels, each on its
own: it shows the true emotion with probability ``p_video``/``p_audio``/``p_text``/``p_description``
and otherwise a distractor drawn uniformly from the other six. The draws are independent, so each
channel alone beats chance by a wide margin and combining them beats any single one.

* video: a face-like ellipse on a dark background (dark grey for the client, grey-blue for the
  therapist) filled with the emotion's colour (:data:`EMOTION_COLOURS`, per-clip jitter of up to
  +-12 per channel and +-8% brightness), swaying sideways and opening its mouth at an
  emotion-specific rate (:data:`EMOTION_MOTION_HZ`). The mean colour of a frame survives H.264,
  padding to a square and resizing to 384 or 224 px.
* audio: a tone at the emotion's pitch (:data:`EMOTION_TONES_HZ`, a fourth apart, 175-1319 Hz)
  with a weaker second harmonic, a syllable-like amplitude envelope and light noise; the same
  tone in every channel, so it survives AAC, down-mixing to mono and resampling to 16 kHz.

The text and description channels are in :mod:`multimood.data.synthetic.text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimood.data.labels import (
    CLIENT,
    THERAPIST,
)
from multimood.data.synthetic.mp4 import write_clip

# The keys are MESC emotions plus DFEW's "surprise"; DFEW classes map onto them by name.
EMOTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (128, 128, 128),
    "depression": (100, 65, 40),
    "anger": (215, 40, 40),
    "disgust": (70, 165, 60),
    "joy": (240, 210, 40),
    "sadness": (45, 80, 210),
    "fear": (150, 60, 185),
    "surprise": (40, 205, 215),
}

# Pitches a fourth apart (ratio ~1.33): far apart on a log-frequency axis and on BEATs' mel bins.
EMOTION_TONES_HZ: dict[str, float] = {
    "depression": 175.0,
    "sadness": 233.0,
    "neutral": 311.0,
    "disgust": 415.0,
    "anger": 554.0,
    "fear": 740.0,
    "joy": 988.0,
    "surprise": 1319.0,
}

# Sway/mouth rates, below the Nyquist rate of 10 fps video.
EMOTION_MOTION_HZ: dict[str, float] = {
    "neutral": 0.4,
    "depression": 0.25,
    "sadness": 0.6,
    "disgust": 0.9,
    "fear": 2.6,
    "anger": 1.8,
    "joy": 1.3,
    "surprise": 2.2,
}

DFEW_TO_KEY: dict[str, str] = {
    "Happy": "joy",
    "Sad": "sadness",
    "Neutral": "neutral",
    "Angry": "anger",
    "Surprise": "surprise",
    "Disgust": "disgust",
    "Fear": "fear",
}

META_NAME = "synthetic_meta.json"
RECIPE_VERSION = 2  # 2: the situation's mood word follows the text channel
BACKGROUND = {CLIENT: (30, 30, 30), THERAPIST: (55, 60, 80)}
IDLE_COLOUR = (16, 16, 16)


@dataclass(frozen=True)
class Style:
    """What one clip shows and its per-clip jitter; rendering is a pure function of it."""

    video_key: str  # key of EMOTION_COLOURS / EMOTION_MOTION_HZ
    audio_key: str  # key of EMOTION_TONES_HZ
    background: tuple[int, int, int]
    colour_jitter: tuple[float, float, float]
    brightness: float
    sway_phase: float
    tone_phase: float
    noise_seed: int

    @staticmethod
    def draw(
        rng: np.random.Generator,
        video_key: str,
        audio_key: str,
        background: tuple[int, int, int],
    ) -> Style:
        jitter = rng.uniform(-12.0, 12.0, size=3)
        return Style(
            video_key=video_key,
            audio_key=audio_key,
            background=background,
            colour_jitter=(float(jitter[0]), float(jitter[1]), float(jitter[2])),
            brightness=float(rng.uniform(0.92, 1.08)),
            sway_phase=float(rng.uniform(0.0, 2 * np.pi)),
            tone_phase=float(rng.uniform(0.0, 2 * np.pi)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )


def render_frames(style: Style, times: np.ndarray, width: int, height: int) -> np.ndarray:
    """Frames at local times ``times`` (seconds from the utterance start): uint8 (T, height, width, 3)."""
    times = np.asarray(times, dtype=np.float64)
    colour = (
        np.asarray(EMOTION_COLOURS[style.video_key], dtype=np.float64) + style.colour_jitter
    ) * style.brightness
    palette = np.array(
        [style.background, np.clip(colour, 0, 255).round(), (20, 20, 20)],
        dtype=np.uint8,
    )
    # Shapes in units of the frame size: an ellipse (half-axes 0.28 x 0.40) centred at (cx, 0.5),
    # two eyes (0.035 x 0.045) and a mouth whose height follows the sway.
    y = (np.arange(height, dtype=np.float32) + 0.5) / height  # (H,)
    x = (np.arange(width, dtype=np.float32) + 0.5) / width  # (W,)
    wave = np.sin(2 * np.pi * EMOTION_MOTION_HZ[style.video_key] * times + style.sway_phase).astype(
        np.float32
    )
    dx = np.abs(x[None, :] - (0.5 + 0.08 * wave)[:, None])[:, None, :]  # (T, 1, W)

    def half_width(centre: float, half_height: float, half_w: float) -> np.ndarray:
        rows = 1.0 - ((y - centre) / half_height) ** 2
        return (half_w * np.sqrt(np.clip(rows, 0.0, None)) - (rows <= 0))[None, :, None]  # (1, H, 1)

    face = dx < half_width(0.5, 0.40, 0.28)  # (T, H, W)
    eyes = np.abs(dx - 0.1) < half_width(0.38, 0.045, 0.035)
    mouth_rows = np.abs(y[None, :] - 0.7) < (0.015 + 0.04 * np.abs(wave))[:, None]  # (T, H)
    mouth = (dx < 0.08) & mouth_rows[:, :, None]
    index = face.astype(np.uint8) + (face & (eyes | mouth))  # 0 background, 1 face, 2 features
    return np.take(palette, index, axis=0)  # (T, H, W, 3)


def render_audio(style: Style, start: int, stop: int, sample_rate: int, channels: int) -> np.ndarray:
    """Samples ``start..stop`` (counted from the utterance start) of the tone: float32 (channels, stop - start)."""
    n = stop - start
    t = (np.arange(start, stop, dtype=np.float64)) / sample_rate
    freq = EMOTION_TONES_HZ[style.audio_key]
    phase = 2 * np.pi * freq * t + style.tone_phase
    envelope = 0.55 + 0.45 * np.sin(np.pi * 3.0 * t + style.sway_phase) ** 2  # ~3 syllables/s
    signal = 0.3 * envelope * (np.sin(phase) + 0.25 * np.sin(2 * phase))
    # Noise indexed by local sample number, so a clip and its stretch of the episode agree.
    noise = np.random.default_rng(style.noise_seed).standard_normal(stop)[start:] if n else np.zeros(0)
    signal = signal + 0.01 * noise
    mono = signal.astype(np.float32)
    gains = (1.0, 0.85)[:channels]  # in-phase channels: down-mixing keeps the tone
    return np.stack([mono * g for g in gains])  # (channels, n)


def count_at_rate(duration_ms: int, rate: float) -> int:
    """Frames or samples in ``duration_ms`` at ``rate`` per second: rounded half up, at least one."""
    return max(1, int(np.floor(duration_ms * rate / 1000 + 0.5)))


def render_clip(path: Path, style: Style, duration_ms: int, cfg: MediaConfig) -> None:
    frames = render_frames(
        style,
        np.arange(count_at_rate(duration_ms, cfg.fps)) / cfg.fps,
        cfg.width,
        cfg.height,
    )
    n_samples = count_at_rate(duration_ms, cfg.sample_rate)
    audio = render_audio(style, 0, n_samples, cfg.sample_rate, cfg.channels)
    write_clip(path, frames, fps=cfg.fps, audio=audio, sample_rate=cfg.sample_rate)


@dataclass(frozen=True)
class MediaConfig:
    """Clip format shared by the writers."""

    fps: float = 10.0
    width: int = 160
    height: int = 120
    sample_rate: int = 44_100
    channels: int = 2

    def check(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even and >= 16, got {self.width}x{self.height}")
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {self.channels}")
        if self.sample_rate < 8_000:
            raise ValueError(f"sample_rate must be >= 8000 Hz, got {self.sample_rate}")
        if max(EMOTION_TONES_HZ.values()) * 2 >= self.sample_rate / 2:
            raise ValueError(f"sample_rate {self.sample_rate} is too low for the tones")


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def shown_label(rng: np.random.Generator, truth: str, p: float, vocabulary: Sequence[str]) -> str:
    """The true label with probability p, else a distractor drawn uniformly from the others."""
    if rng.random() < p:
        return truth
    others = [v for v in vocabulary if v != truth]
    return others[int(rng.integers(len(others)))]
