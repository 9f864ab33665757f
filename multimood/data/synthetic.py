"""Synthetic MESC and DFEW datasets in the real file formats, with labels that can be learned.

Nothing here reads the real data: layouts, column orders and value formats follow SPEC section 5,
and the tests compare them with the real annotation files column for column and key for key.

Writers
-------
:func:`write_clip`
    A real mp4 (H.264 video, AAC audio) written with PyAV, which ships its own FFmpeg.
:func:`make_mesc`
    ``MESC.csv``, ``train.json``/``val.json``/``test.json``, one clip per utterance in ``clips/``
    and optionally the episodes the clips would be cut from, in ``episodes/``.
:func:`make_dfew`
    ``Clip/original/*.mp4``, face-aligned frame folders ``Clip/clip_224x224/*/`` and the 5-fold
    split files ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv``.

``python -m multimood.data.synthetic {mesc,dfew} --out DIR [options]`` (or ``multimood synth ...``)
runs them from the command line.

MESC layout
-----------
::

    MESC.csv            Utterance,Speaker,Emotion,Strategy,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime
    train.json          the dialogues in neither val.json nor test.json (the real release has no train.json;
    val.json            readers rebuild it from MESC.csv, so it is written for convenience only)
    test.json
    clips/dia{Dialogue_ID}_utt{Utterance_ID}_{row}.mp4
    episodes/S{season:02d}E{episode:02d}.mp4      (episodes=True)
    synthetic_meta.json                           (generator settings and the label each modality shows)

``{row}`` in a clip name is the 0-based index of the utterance's data row in ``MESC.csv`` (the
header is not counted): the first utterance is ``dia0_utt0_0.mp4``. ``MESC.csv`` is written with
Python's ``csv`` module (minimal quoting, CRLF line ends), exactly how the real file is written:
every timestamp ``HH:MM:SS,mmm`` is quoted because of its comma, and so is an utterance with a
comma. The split files are JSON with a 4-space indent, non-ASCII kept, no final newline, as the
real ones.

Dialogues follow one another inside an episode (``dialogues_per_episode`` per episode,
``episodes_per_season`` episodes per season). Each utterance occupies ``StartTime..EndTime`` of its
episode; its clip is exactly that stretch: ``(End - Start) * fps`` frames and
``(End - Start) * sample_rate`` audio samples, each rounded half up (:func:`count_at_rate`), and
the episode file carries the same pictures and sound at the same times (an idle dark picture and
silence between utterances), so a clip-cutting tool can be tested end to end against the clips.

The generative recipe (MESC)
----------------------------
A dialogue has a problem type (10 categories) with a topic phrase, and a situation sentence that
names the topic and the client's opening mood. Turns come in blocks: a client block of 1-4 turns,
then a therapist block of 1-3 (a dialogue starts with the therapist 10% of the time), so
consecutive same-speaker turns are common, as in the real corpus.

* Client emotion: the first client turn draws from ``emotion_prior`` (uniform by default, so chance
  is 1/7; ``"mesc"`` uses the real client frequencies); each later client turn keeps the previous
  emotion with probability 0.6, otherwise draws again.
* Therapist strategy: a function of the most recent client emotion and of the history: each
  emotion has a primary and a secondary strategy (:data:`STRATEGY_RULES`); the therapist uses the
  primary one unless its own previous strategy in this dialogue was that one, then the secondary.
  A dialogue the therapist opens starts with ``Structuring the therapy``.
* Therapist emotion: a function of the most recent client emotion (:data:`THERAPIST_EMOTION`).
* With probability ``label_noise`` a therapist turn takes a uniformly random strategy and emotion
  instead (``Others`` only appears this way).
* Therapist response: a template per strategy (:data:`RESPONSE_TEMPLATES`) filled with the
  dialogue's topic and the cue word of the client's last utterance, after a sentence given by the
  therapist's emotion (:data:`RESPONSE_OPENERS`).

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
* text: a client utterance holds one cue word of the emotion (:data:`TEXT_CUES`). A therapist
  utterance is a generation target, so its text follows the true labels (opener and template
  above); only its picture, tone and description are noisy.
* description: the generated face/voice description (appended to the utterance in the split
  files, as in the real ones) holds a face cue word and a voice cue word of its own vocabularies
  (:data:`DESCRIPTION_CUES`, :data:`VOICE_CUES`).

The label each channel shows for every row is in ``synthetic_meta.json``.

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
clip number, lines end with ``\\n``. Fold ``k`` tests on the ``k``-th fifth of a seeded permutation of
the clips and trains on the rest. Labels are 1-indexed as in the official files (``label_base=1``,
1 Happy ... 7 Fear, :data:`multimood.data.labels.DFEW_LABELS`); ``label_base=0`` writes the
0-indexed variant some public copies use. Clips draw their class uniformly and show it with the
same colour/motion (``p_video``) and tone (``p_audio``) code as MESC; ``Surprise`` has a colour and
a pitch of its own.

Determinism and sizes
---------------------
Everything is a function of ``seed``: the same seed gives byte-identical CSV/JSON files and clips
with identical decoded content (with PyAV 18.1 the mp4 files are byte-identical too: x264 runs
single-threaded). Dialogue ``d`` draws from its own random stream, so growing ``num_dialogues``
keeps the earlier dialogues' text and labels. Defaults are small but realistic: 24 dialogues of
8-16 utterances of 1-3 s (about 300 clips, 17 MB), 160x120 px H.264 at 10 fps, 44.1 kHz stereo
AAC (so readers exercise down-mixing and resampling); DFEW: 35 clips of 1-3 s plus 224 px face
frames. Writing takes about 5 CPU-seconds per 100 such clips (one core), half of it in the AAC
encoder; 16 kHz mono (``sample_rate=16_000, channels=1``) takes about 2.5 s; episodes double the
media written.
"""

from __future__ import annotations

import csv
import inspect
import io
import itertools
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from multimood.data.clips import DEFAULT_EPISODE_PATTERN as EPISODE_PATTERN
from multimood.data.labels import CLIENT, DFEW_LABELS, EMOTIONS, STRATEGIES, THERAPIST, UNDEFINED_STRATEGY
from multimood.data.mesc import CSV_COLUMNS as MESC_COLUMNS
from multimood.data.mesc import clip_name

# ---------------------------------------------------------------------------------------------
# Low-level writer
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The signal codes (see the module docstring)
# ---------------------------------------------------------------------------------------------

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

TEXT_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("okay", "fine", "alright", "settled"),
    "depression": ("hopeless", "empty", "numb", "worthless"),
    "anger": ("furious", "angry", "outraged", "irritated"),
    "disgust": ("disgusted", "sickened", "repulsed", "revolted"),
    "joy": ("happy", "glad", "delighted", "cheerful"),
    "sadness": ("sad", "heartbroken", "tearful", "sorrowful"),
    "fear": ("scared", "afraid", "terrified", "frightened"),
}
DESCRIPTION_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("composed", "attentive", "even"),
    "depression": ("withdrawn", "listless", "drained"),
    "anger": ("tense", "hostile", "flushed"),
    "disgust": ("grimacing", "recoiling", "sneering"),
    "joy": ("beaming", "smiling", "lively"),
    "sadness": ("teary", "downcast", "mournful"),
    "fear": ("trembling", "wide-eyed", "jittery"),
}
_DESCRIPTION_VERBS = ("looks", "seems", "appears")
_DESCRIPTION_SETTINGS = (
    "sitting on a couch",
    "in a quiet office",
    "facing the camera",
    "leaning forward in a chair",
    "near a window",
)
VOICE_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("steady", "level"),
    "depression": ("flat", "monotone"),
    "anger": ("loud", "sharp"),
    "disgust": ("curt", "scornful"),
    "joy": ("bright", "warm"),
    "sadness": ("soft", "breaking"),
    "fear": ("shaky", "hushed"),
}
_DESCRIPTION_VOICES = ("The voice is {cue}.", "The voice sounds {cue}.", "The tone of voice is {cue}.")

# (category as the real split files spell it, topic phrase, what happened)
PROBLEM_TYPES: tuple[tuple[str, str, str], ...] = (
    ("Breakups or Divorce", "the breakup", "My partner ended our relationship last month"),
    ("Job Loss or Career Setbacks", "losing my job", "I was let go from my job in the spring"),
    ("Bereavement", "my father's death", "My father died after a short illness"),
    ("Occupational burnout", "work", "I have been working late every night for a year"),
    ("The relationship with friends and family", "my family", "My family keeps arguing about money"),
    ("Parental Influence", "my mother", "My mother still decides everything for me"),
    ("Childhood Shadow", "my childhood", "I keep dreaming about the house I grew up in"),
    ("Illness Coping", "my illness", "The doctors found a problem with my heart"),
    ("Therapeutic Relationship", "therapy", "I am not sure these sessions are helping me"),
    ("Post-Traumatic Stress Disorder", "the accident", "I was in a car accident two years ago"),
)

_CLIENT_TEMPLATES = (
    "I feel {cue} about {topic}.",
    "Honestly, {topic} leaves me {cue}.",
    "When I think of {topic}, I get {cue}.",
    "I am {cue}, and it is because of {topic}.",
    "You know, I was {cue} all week.",
    "It is {topic} again. I am just {cue}.",
    "I do not know why, but I feel {cue}.",
    "Well, {cue} is the word for it.",
)
_SITUATION_TEMPLATE = "{event}. Since then I have felt {cue} most days."

# emotion of the client's latest turn -> (primary, secondary) strategy
STRATEGY_RULES: dict[str, tuple[str, str]] = {
    "neutral": ("Open question", "Restatement"),
    "depression": ("Interpretation", "Approval"),
    "anger": ("Restatement", "Communication Skills"),
    "disgust": ("Interpretation", "Self-disclosure"),
    "joy": ("Approval", "Open question"),
    "sadness": ("Self-disclosure", "Interpretation"),
    "fear": ("Advisement", "Guiding the Pace and Depth of the Conversation"),
}
OPENING_STRATEGY = "Structuring the therapy"
THERAPIST_EMOTION: dict[str, str] = {
    "neutral": "neutral",
    "depression": "sadness",
    "anger": "neutral",
    "disgust": "neutral",
    "joy": "joy",
    "sadness": "sadness",
    "fear": "neutral",
}
RESPONSE_OPENERS: dict[str, str] = {
    "neutral": "",
    "depression": "That sounds heavy.",
    "anger": "That is not fair to you.",
    "disgust": "That must be hard to stomach.",
    "joy": "That is good to hear.",
    "sadness": "I am sorry you are going through this.",
    "fear": "That sounds frightening.",
}
RESPONSE_TEMPLATES: dict[str, str] = {
    "Open question": "What is it about {topic} that makes you feel {cue}?",
    "Approval": "You did well to face {topic}.",
    "Self-disclosure": "I have also felt {cue} about something like {topic}.",
    "Restatement": "So {topic} leaves you feeling {cue}.",
    "Interpretation": "It seems that {topic} touches something deeper in you.",
    "Advisement": "Perhaps you could take one small step with {topic} this week.",
    "Communication Skills": "I hear you. Please go on.",
    "Structuring the therapy": "Let us spend today talking about {topic}.",
    "Guiding the Pace and Depth of the Conversation": "Let us slow down and stay with that feeling for a moment.",
    "Others": "I see. Let us continue.",
}

# Client emotion frequencies in the real MESC.csv (neutral ... fear), for emotion_prior="mesc".
MESC_CLIENT_PRIOR: dict[str, float] = {
    "neutral": 0.381,
    "depression": 0.268,
    "anger": 0.139,
    "disgust": 0.090,
    "joy": 0.070,
    "sadness": 0.038,
    "fear": 0.014,
}

DFEW_FRAME_PATTERN = "{clip:05d}_{frame:05d}.jpg"
META_NAME = "synthetic_meta.json"
RECIPE_VERSION = 1

_BACKGROUND = {CLIENT: (30, 30, 30), THERAPIST: (55, 60, 80)}
_IDLE_COLOUR = (16, 16, 16)
_STAY_PROBABILITY = 0.6
_CLIENT_BLOCK = ((1, 2, 3, 4), (0.25, 0.3, 0.25, 0.2))
_THERAPIST_BLOCK = ((1, 2, 3), (0.6, 0.3, 0.1))


def synthetic_vocabulary() -> list[str]:
    """Lines holding every word the synthetic generators write (for the tiny tokenizer's corpus)."""
    lines = []
    for emotion in EMOTIONS:
        cues, desc = TEXT_CUES[emotion], DESCRIPTION_CUES[emotion]
        for i, template in enumerate(_CLIENT_TEMPLATES):
            topic = PROBLEM_TYPES[i % len(PROBLEM_TYPES)][1]
            lines.append(template.format(cue=cues[i % len(cues)], topic=topic))
        for i, cue in enumerate(desc):
            verb = _DESCRIPTION_VERBS[i % len(_DESCRIPTION_VERBS)]
            setting = _DESCRIPTION_SETTINGS[i % len(_DESCRIPTION_SETTINGS)]
            voice_cues = VOICE_CUES[emotion]
            voice = _DESCRIPTION_VOICES[i % len(_DESCRIPTION_VOICES)].format(
                cue=voice_cues[i % len(voice_cues)]
            )
            lines.append(f"The speaker {verb} {cue}, {setting}. {voice}")
        if RESPONSE_OPENERS[emotion]:
            lines.append(RESPONSE_OPENERS[emotion])
    for i, (strategy, template) in enumerate(RESPONSE_TEMPLATES.items()):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        topic = PROBLEM_TYPES[i % len(PROBLEM_TYPES)][1]
        lines.append(template.format(topic=topic, cue=TEXT_CUES[emotion][0]))
        lines.append(strategy)
    lines.append("The speaker is " + ", ".join(_DESCRIPTION_SETTINGS) + ".")
    for problem, topic, event in PROBLEM_TYPES:
        lines.append(f"{problem}: {_SITUATION_TEMPLATE.format(event=event, cue='hopeless')} {topic}")
    return lines


# ---------------------------------------------------------------------------------------------
# Rendering: pictures and sound as pure functions of a turn's style and local time
# ---------------------------------------------------------------------------------------------


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
        rng: np.random.Generator, video_key: str, audio_key: str, background: tuple[int, int, int]
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
    palette = np.array([style.background, np.clip(colour, 0, 255).round(), (20, 20, 20)], dtype=np.uint8)
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


def _render_clip(path: Path, style: Style, duration_ms: int, cfg: MediaConfig) -> None:
    frames = render_frames(
        style, np.arange(count_at_rate(duration_ms, cfg.fps)) / cfg.fps, cfg.width, cfg.height
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


# ---------------------------------------------------------------------------------------------
# MESC
# ---------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One synthetic utterance: its CSV fields, its description and the label each channel shows."""

    speaker: str
    emotion: str
    strategy: str
    utterance: str
    description: str
    duration_ms: int
    gap_ms: int  # silence after this turn
    shown: dict[str, str]  # channel -> emotion it shows: video, audio, text, description
    style: Style
    start_ms: int = 0
    end_ms: int = 0


@dataclass
class Dialogue:
    """One synthetic dialogue with its split-file context."""

    problem_type: str
    situation: str
    turns: list[Turn]
    season: int = 0
    episode: int = 0


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _shown(rng: np.random.Generator, truth: str, p: float, vocabulary: Sequence[str]) -> str:
    """The true label with probability p, else a distractor drawn uniformly from the others."""
    if rng.random() < p:
        return truth
    others = [v for v in vocabulary if v != truth]
    return others[int(rng.integers(len(others)))]


def _describe(rng: np.random.Generator, label: str) -> str:
    cue = _pick(rng, DESCRIPTION_CUES[label])
    voice_cue = _pick(rng, VOICE_CUES[label])
    verb, setting = _pick(rng, _DESCRIPTION_VERBS), _pick(rng, _DESCRIPTION_SETTINGS)
    voice = _pick(rng, _DESCRIPTION_VOICES).format(cue=voice_cue)
    return f"The speaker {verb} {cue}, {setting}. {voice}"


@dataclass(frozen=True)
class _Recipe:
    turns: tuple[int, int]
    clip_seconds: tuple[float, float]
    p: dict[str, float]
    label_noise: float
    prior: np.ndarray  # (7,) over EMOTIONS


def _make_dialogue(rng: np.random.Generator, recipe: _Recipe) -> Dialogue:
    problem_type, topic, event = PROBLEM_TYPES[int(rng.integers(len(PROBLEM_TYPES)))]
    n_turns = int(rng.integers(recipe.turns[0], recipe.turns[1] + 1))
    speakers: list[str] = []
    speaker = THERAPIST if rng.random() < 0.1 else CLIENT
    while len(speakers) < n_turns:
        sizes, probs = _CLIENT_BLOCK if speaker == CLIENT else _THERAPIST_BLOCK
        speakers += [speaker] * int(rng.choice(sizes, p=probs))
        speaker = THERAPIST if speaker == CLIENT else CLIENT
    speakers = speakers[:n_turns]
    if not any(a == CLIENT and b == THERAPIST for a, b in itertools.pairwise(speakers)):
        speakers[-1] = THERAPIST  # every dialogue yields at least one training sample

    client_emotion: str | None = None
    last_cue = TEXT_CUES["neutral"][0]
    last_strategy: str | None = None
    turns: list[Turn] = []
    for speaker in speakers:
        if speaker == CLIENT:
            if client_emotion is None or rng.random() >= _STAY_PROBABILITY:
                client_emotion = EMOTIONS[int(rng.choice(len(EMOTIONS), p=recipe.prior))]
            emotion, strategy = client_emotion, UNDEFINED_STRATEGY
        else:
            if client_emotion is None:
                emotion, strategy = "neutral", OPENING_STRATEGY
            else:
                primary, secondary = STRATEGY_RULES[client_emotion]
                strategy = secondary if last_strategy == primary else primary
                emotion = THERAPIST_EMOTION[client_emotion]
            if rng.random() < recipe.label_noise:
                strategy, emotion = _pick(rng, STRATEGIES), _pick(rng, EMOTIONS)
            last_strategy = strategy
        shown = {
            ch: _shown(rng, emotion, recipe.p[ch], EMOTIONS)
            for ch in ("video", "audio", "text", "description")
        }
        if speaker == CLIENT:
            last_cue = _pick(rng, TEXT_CUES[shown["text"]])
            utterance = _pick(rng, _CLIENT_TEMPLATES).format(cue=last_cue, topic=topic)
        else:
            # A response is a generation target, so its text follows the true labels: the opener
            # the therapist's emotion, the body the strategy, echoing the client's last cue word.
            shown["text"] = emotion
            body = RESPONSE_TEMPLATES[strategy].format(topic=topic, cue=last_cue)
            utterance = f"{RESPONSE_OPENERS[emotion]} {body}".strip()
        lo, hi = recipe.clip_seconds
        turns.append(
            Turn(
                speaker=speaker,
                emotion=emotion,
                strategy=strategy,
                utterance=utterance,
                description=_describe(rng, shown["description"]),
                duration_ms=round(float(rng.uniform(lo, hi)) * 1000),
                gap_ms=int(rng.integers(100, 600)),
                shown=shown,
                style=Style.draw(rng, shown["video"], shown["audio"], _BACKGROUND[speaker]),
            )
        )
    first_client = next((t.emotion for t in turns if t.speaker == CLIENT), "neutral")
    situation = _SITUATION_TEMPLATE.format(event=event, cue=_pick(rng, TEXT_CUES[first_client]))
    return Dialogue(problem_type=problem_type, situation=situation, turns=turns)


def _timestamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def _prepare_out_dir(out_dir: Path, owned: Sequence[str], overwrite: bool) -> None:
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


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class MescSummary:
    """What :func:`make_mesc` wrote."""

    out_dir: Path
    dialogues: int
    utterances: int
    client_utterances: int
    splits: dict[str, int]  # split -> dialogues
    clips: int
    episodes: int
    media_seconds: float  # total utterance duration
    bytes: int
    seconds: float  # wall time
    files: dict[str, Path] = field(default_factory=dict)

    def __str__(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        rate = f", {self.seconds / self.clips * 100:.1f} s per 100 clips" if self.clips else ""
        return (
            f"MESC (synthetic) in {self.out_dir}: {self.dialogues} dialogues ({splits}), "
            f"{self.utterances} utterances ({self.client_utterances} client), {self.clips} clips, "
            f"{self.episodes} episodes, {self.media_seconds:.1f} s of media, "
            f"{self.bytes / 1e6:.2f} MB, written in {self.seconds:.1f} s{rate}"
        )


def make_mesc(
    out_dir: str | Path,
    *,
    num_dialogues: int = 24,
    seed: int = 0,
    turns: tuple[int, int] = (8, 16),
    clip_seconds: tuple[float, float] = (1.0, 3.0),
    fps: float = 10.0,
    width: int = 160,
    height: int = 120,
    sample_rate: int = 44_100,
    channels: int = 2,
    p_video: float = 0.7,
    p_audio: float = 0.65,
    p_text: float = 0.6,
    p_description: float = 0.5,
    label_noise: float = 0.05,
    emotion_prior: str = "uniform",
    split_fraction: float = 0.1,
    dialogues_per_episode: int = 4,
    episodes_per_season: int = 6,
    clips: bool = True,
    episodes: bool = False,
    overwrite: bool = False,
) -> MescSummary:
    """Write a synthetic MESC dataset (annotations, clips, optional episodes) into ``out_dir``.

    Args:
        out_dir: destination folder; must be empty or absent unless ``overwrite``.
        num_dialogues: dialogues to write (Dialogue_ID 0..num_dialogues-1); at least 3.
        seed: everything is a function of it.
        turns: inclusive range of utterances per dialogue.
        clip_seconds: range of utterance durations in seconds.
        fps, width, height: video format of clips and episodes (even sizes).
        sample_rate, channels: AAC audio format (1 or 2 channels).
        p_video, p_audio, p_text, p_description: probability that a channel shows the true
            emotion rather than a distractor.
        label_noise: probability that a therapist turn's strategy and emotion are random.
        emotion_prior: ``"uniform"`` or ``"mesc"`` (the real client emotion frequencies).
        split_fraction: share of dialogues in val.json and in test.json each (at least one each).
        dialogues_per_episode, episodes_per_season: how dialogues are laid out in time.
        clips: write ``clips/*.mp4``; False writes the annotations only (fast).
        episodes: also write ``episodes/S{season:02d}E{episode:02d}.mp4``.
        overwrite: allow a non-empty ``out_dir``; the files this function writes are replaced.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    cfg = MediaConfig(fps=fps, width=width, height=height, sample_rate=sample_rate, channels=channels)
    cfg.check()
    if num_dialogues < 3:
        raise ValueError(
            f"num_dialogues must be >= 3 (train, val and test each need one), got {num_dialogues}"
        )
    if not 2 <= turns[0] <= turns[1]:
        raise ValueError(f"turns must be (min, max) with 2 <= min <= max, got {turns}")
    if not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise ValueError(f"clip_seconds must be (min, max) with 0 < min <= max, got {clip_seconds}")
    probs = {"video": p_video, "audio": p_audio, "text": p_text, "description": p_description}
    for name, p in [*((f"p_{k}", v) for k, v in probs.items()), ("label_noise", label_noise)]:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if emotion_prior == "uniform":
        prior = np.full(len(EMOTIONS), 1.0 / len(EMOTIONS))
    elif emotion_prior == "mesc":
        prior = np.array([MESC_CLIENT_PRIOR[e] for e in EMOTIONS])
        prior = prior / prior.sum()
    else:
        raise ValueError(f"emotion_prior must be 'uniform' or 'mesc', got {emotion_prior!r}")
    if dialogues_per_episode < 1 or episodes_per_season < 1:
        raise ValueError("dialogues_per_episode and episodes_per_season must be >= 1")
    n_held = max(1, round(num_dialogues * split_fraction))
    if 2 * n_held >= num_dialogues:
        raise ValueError(
            f"split_fraction {split_fraction} leaves no training dialogue out of {num_dialogues}"
        )

    recipe = _Recipe(turns=turns, clip_seconds=clip_seconds, p=probs, label_noise=label_noise, prior=prior)
    dialogues: list[Dialogue] = []
    seen: set[tuple[str, ...]] = set()
    for dialogue_id in range(num_dialogues):
        rng = np.random.default_rng([seed, 0, dialogue_id])
        # Readers match split-file dialogues to the CSV by their utterances: keep them unique.
        for _ in range(100):
            dialogue = _make_dialogue(rng, recipe)
            key = tuple(t.utterance for t in dialogue.turns)
            if key not in seen:
                break
        else:
            raise RuntimeError(f"could not draw a unique dialogue {dialogue_id}; widen `turns`")
        seen.add(key)
        dialogues.append(dialogue)

    # Lay the dialogues out in time, episode by episode.
    for first in range(0, num_dialogues, dialogues_per_episode):
        index = first // dialogues_per_episode
        season, episode = index // episodes_per_season + 1, index % episodes_per_season + 1
        rng = np.random.default_rng([seed, 1, season, episode])
        clock = int(rng.integers(5_000, 20_000))
        for dialogue in dialogues[first : first + dialogues_per_episode]:
            dialogue.season, dialogue.episode = season, episode
            for turn in dialogue.turns:
                turn.start_ms, turn.end_ms = clock, clock + turn.duration_ms
                clock = turn.end_ms + turn.gap_ms
            clock += int(rng.integers(2_000, 6_000))

    split_rng = np.random.default_rng([seed, 2])
    order = split_rng.permutation(num_dialogues)
    held = {"val": sorted(order[:n_held].tolist()), "test": sorted(order[n_held : 2 * n_held].tolist())}
    held_ids = set(held["val"]) | set(held["test"])
    split_ids = {"train": [d for d in range(num_dialogues) if d not in held_ids], **held}

    _prepare_out_dir(
        out, ["MESC.csv", "train.json", "val.json", "test.json", "clips", "episodes", META_NAME], overwrite
    )
    files: dict[str, Path] = {}

    # MESC.csv: Python's csv module writes it exactly as the real file is written.
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MESC_COLUMNS)
    rows: list[tuple[int, int, Turn]] = []  # (dialogue id, utterance id, turn) in row order
    for dialogue_id, dialogue in enumerate(dialogues):
        for utterance_id, turn in enumerate(dialogue.turns):
            writer.writerow(
                [
                    turn.utterance,
                    turn.speaker,
                    turn.emotion,
                    turn.strategy,
                    dialogue_id,
                    utterance_id,
                    dialogue.season,
                    dialogue.episode,
                    _timestamp(turn.start_ms),
                    _timestamp(turn.end_ms),
                ]
            )
            rows.append((dialogue_id, utterance_id, turn))
    files["csv"] = out / "MESC.csv"
    files["csv"].write_bytes(buffer.getvalue().encode("utf-8"))

    for split, ids in split_ids.items():
        payload = [
            {
                "problem_type": dialogues[d].problem_type,
                "situation": dialogues[d].situation,
                "dialog": [
                    {
                        "text": f"{t.utterance} {t.description}",
                        "speaker": "user" if t.speaker == CLIENT else "sys",
                        "emotion": t.emotion,
                        **({"strategy": t.strategy} if t.speaker == THERAPIST else {}),
                    }
                    for t in dialogues[d].turns
                ],
            }
            for d in ids
        ]
        files[split] = out / f"{split}.json"
        files[split].write_bytes(json.dumps(payload, indent=4, ensure_ascii=False).encode("utf-8"))

    meta = {
        "generator": "multimood.data.synthetic.make_mesc",
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
        "settings": {
            "num_dialogues": num_dialogues,
            "turns": list(turns),
            "clip_seconds": list(clip_seconds),
            "fps": fps,
            "width": width,
            "height": height,
            "sample_rate": sample_rate,
            "channels": channels,
            "p": probs,
            "label_noise": label_noise,
            "emotion_prior": emotion_prior,
            "split_fraction": split_fraction,
            "dialogues_per_episode": dialogues_per_episode,
            "episodes_per_season": episodes_per_season,
        },
        "splits": split_ids,
        "clip_pattern": "dia{dialogue}_utt{utterance}_{row}.mp4",
        "episode_pattern": EPISODE_PATTERN,
        "shown_columns": ["video", "audio", "text", "description"],
        "shown": [[t.shown[c] for c in ("video", "audio", "text", "description")] for _, _, t in rows],
    }
    files["meta"] = out / META_NAME
    files["meta"].write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    n_clips = 0
    if clips:
        clip_dir = out / "clips"
        for row, (dialogue_id, utterance_id, turn) in enumerate(rows):
            name = clip_name(dialogue_id, utterance_id, row)
            _render_clip(clip_dir / name, turn.style, turn.end_ms - turn.start_ms, cfg)
            n_clips += 1
        files["clips"] = clip_dir

    n_episodes = 0
    if episodes:
        by_episode: dict[tuple[int, int], list[Turn]] = {}
        for dialogue in dialogues:
            by_episode.setdefault((dialogue.season, dialogue.episode), []).extend(dialogue.turns)
        for (season, episode), episode_turns in by_episode.items():
            path = out / "episodes" / EPISODE_PATTERN.format(season=season, episode=episode)
            _write_episode(path, episode_turns, cfg)
            n_episodes += 1
        files["episodes"] = out / "episodes"

    return MescSummary(
        out_dir=out,
        dialogues=num_dialogues,
        utterances=len(rows),
        client_utterances=sum(t.speaker == CLIENT for _, _, t in rows),
        splits={k: len(v) for k, v in split_ids.items()},
        clips=n_clips,
        episodes=n_episodes,
        media_seconds=sum(t.end_ms - t.start_ms for _, _, t in rows) / 1000,
        bytes=_folder_bytes(out),
        seconds=time.perf_counter() - started,
        files=files,
    )


def _write_episode(path: Path, turns: list[Turn], cfg: MediaConfig) -> None:
    """One episode: each turn's pictures and sound at its StartTime..EndTime, idle in between."""
    turns = sorted(turns, key=lambda t: t.start_ms)
    total_ms = turns[-1].end_ms + 2_000
    n_frames = count_at_rate(total_ms, cfg.fps)
    idle = np.empty((cfg.height, cfg.width, 3), dtype=np.uint8)
    idle[...] = _IDLE_COLOUR

    def frames() -> Iterator[np.ndarray]:
        k = 0
        for turn in turns:
            start, end = turn.start_ms / 1000, turn.end_ms / 1000
            # Frame k shows time k / fps; a turn owns the frames whose time falls in [start, end).
            first, stop = int(np.ceil(start * cfg.fps - 1e-9)), int(np.ceil(end * cfg.fps - 1e-9))
            while k < first:
                yield idle
                k += 1
            if stop > first:
                yield from render_frames(
                    turn.style, np.arange(first, stop) / cfg.fps - start, cfg.width, cfg.height
                )
                k = stop
        while k < n_frames:
            yield idle
            k += 1

    audio = np.zeros((cfg.channels, count_at_rate(total_ms, cfg.sample_rate)), dtype=np.float32)
    for turn in turns:
        first = int(np.floor(turn.start_ms * cfg.sample_rate / 1000 + 0.5))
        length = count_at_rate(turn.end_ms - turn.start_ms, cfg.sample_rate)
        audio[:, first : first + length] = render_audio(turn.style, 0, length, cfg.sample_rate, cfg.channels)
    write_clip(path, frames(), fps=cfg.fps, audio=audio, sample_rate=cfg.sample_rate)


# ---------------------------------------------------------------------------------------------
# DFEW
# ---------------------------------------------------------------------------------------------

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
    _prepare_out_dir(out, ["Clip", "EmoLabel_DataSplit", META_NAME], overwrite)

    keys = [DFEW_TO_KEY[name] for name in DFEW_LABELS]
    labels: dict[int, int] = {}  # clip id -> 0-based class
    shown: list[list[str]] = []
    n_frames = 0
    for clip_id in range(1, num_clips + 1):
        rng = np.random.default_rng([seed, 10, clip_id])
        label = int(rng.integers(len(DFEW_LABELS)))
        labels[clip_id] = label
        video_key = _shown(rng, keys[label], p_video, keys)
        audio_key = _shown(rng, keys[label], p_audio, keys)
        shown.append([video_key, audio_key])
        style = Style.draw(rng, video_key, audio_key, _BACKGROUND[CLIENT])
        duration_ms = round(float(rng.uniform(*clip_seconds)) * 1000)
        _render_clip(out / "Clip" / "original" / f"{clip_id:05d}.mp4", style, duration_ms, cfg)
        if write_frames:
            times = np.arange(count_at_rate(duration_ms, fps)) / fps
            faces = render_frames(style, times, frame_size, frame_size)
            folder = out / "Clip" / "clip_224x224" / f"{clip_id:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, face in enumerate(faces, start=1):
                Image.fromarray(face).save(
                    folder / DFEW_FRAME_PATTERN.format(clip=clip_id, frame=k), quality=90
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
            lines = ["video_name,label", *(f"{i},{labels[i] + label_base}" for i in sorted(ids))]
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
        bytes=_folder_bytes(out),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _pair(kind: type) -> Callable[[str], tuple]:
    """An argparse type for ``a,b`` (or ``AxB``)."""

    def parse(text: str) -> tuple:
        parts = text.replace("x", ",").split(",")
        if len(parts) != 2:
            raise ValueError(f"expected two values like 1,3 (or 160x120), got {text!r}")
        return tuple(kind(p) for p in parts)

    parse.__name__ = f"pair of {kind.__name__}"
    return parse


def main(argv: list[str] | None = None) -> int:
    """``multimood synth {mesc,dfew} --out DIR [options]``: write a synthetic dataset and print a summary."""
    import argparse

    from multimood.cli import make_parser

    mesc_defaults = {k: v.default for k, v in inspect.signature(make_mesc).parameters.items()}
    dfew_defaults = {k: v.default for k, v in inspect.signature(make_dfew).parameters.items()}

    def add(
        p: argparse.ArgumentParser, flag: str, defaults: dict, name: str, help: str, **kw: object
    ) -> None:
        default = defaults[name]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument(flag, dest=name, default=default, help=f"{help} (default {shown})", **kw)

    parser = make_parser("synth", "Write a synthetic MESC or DFEW dataset in the real file formats.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    mesc = sub.add_parser("mesc", help="MESC.csv, split JSON files, one clip per utterance, episodes")
    dfew = sub.add_parser("dfew", help="Clip/original, Clip/clip_224x224 frames, 5-fold split files")
    for p, d in ((mesc, mesc_defaults), (dfew, dfew_defaults)):
        p.add_argument("--out", required=True, type=Path, help="destination folder (empty or absent)")
        p.add_argument(
            "--force", action="store_true", help="write into a non-empty folder, replacing our files"
        )
        add(p, "--seed", d, "seed", "random seed", type=int)
        add(p, "--clip-seconds", d, "clip_seconds", "min,max seconds per clip", type=_pair(float))
        add(p, "--fps", d, "fps", "video frame rate", type=float)
        size = (d["width"], d["height"])
        p.add_argument(
            "--size", type=_pair(int), default=size, help=f"video WIDTHxHEIGHT (default {size[0]}x{size[1]})"
        )
        add(p, "--sample-rate", d, "sample_rate", "audio sample rate", type=int)
        add(p, "--channels", d, "channels", "audio channels", type=int, choices=(1, 2))
        add(p, "--p-video", d, "p_video", "P(the picture shows the true emotion)", type=float)
        add(p, "--p-audio", d, "p_audio", "P(the tone shows the true emotion)", type=float)
    add(mesc, "--dialogues", mesc_defaults, "num_dialogues", "number of dialogues", type=int)
    add(mesc, "--turns", mesc_defaults, "turns", "min,max utterances per dialogue", type=_pair(int))
    add(
        mesc,
        "--p-text",
        mesc_defaults,
        "p_text",
        "P(the utterance's cue word is the true emotion)",
        type=float,
    )
    add(mesc, "--p-description", mesc_defaults, "p_description", "P(the description shows it)", type=float)
    add(
        mesc,
        "--label-noise",
        mesc_defaults,
        "label_noise",
        "P(a therapist turn's labels are random)",
        type=float,
    )
    add(
        mesc,
        "--emotion-prior",
        mesc_defaults,
        "emotion_prior",
        "client emotion prior",
        choices=("uniform", "mesc"),
    )
    add(
        mesc,
        "--split-fraction",
        mesc_defaults,
        "split_fraction",
        "share of dialogues in val and in test",
        type=float,
    )
    add(
        mesc,
        "--dialogues-per-episode",
        mesc_defaults,
        "dialogues_per_episode",
        "dialogues per episode",
        type=int,
    )
    add(mesc, "--episodes-per-season", mesc_defaults, "episodes_per_season", "episodes per season", type=int)
    mesc.add_argument("--no-clips", dest="clips", action="store_false", help="write the annotations only")
    mesc.add_argument("--episodes", action="store_true", help="also write the episodes the clips come from")
    add(dfew, "--clips", dfew_defaults, "num_clips", "number of clips", type=int)
    add(
        dfew,
        "--label-base",
        dfew_defaults,
        "label_base",
        "1: official labels, 0: zero-indexed",
        type=int,
        choices=(0, 1),
    )
    add(dfew, "--frame-size", dfew_defaults, "frame_size", "side of the square face frames", type=int)
    dfew.add_argument(
        "--no-frames", dest="write_frames", action="store_false", help="skip the face frame folders"
    )

    args = vars(parser.parse_args(argv))
    dataset, out, overwrite = args.pop("dataset"), args.pop("out"), args.pop("force")
    args["width"], args["height"] = args.pop("size")
    try:
        make = make_mesc if dataset == "mesc" else make_dfew
        summary = make(out, overwrite=overwrite, **args)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        print(f"multimood synth: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
