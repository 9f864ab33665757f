"""The synthetic MESC: annotations in the real formats, one clip per utterance, optional episodes.

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

* Client emotion: the first client utterance draws from ``emotion_prior`` (uniform by default, so
  chance is 1/7; ``"mesc"`` uses the real client frequencies); each later client utterance keeps
  the previous client emotion with probability ``emotion_stay`` (0.6 by default, one value for the
  next utterance of the same client turn and one for the first utterance of a later client turn),
  otherwise draws again. ``emotion_stay=(1, 0)`` gives each client turn one emotion, drawn afresh
  per turn, so the dialogue history says nothing about the current turn's emotion (the demo uses
  it to show what a single informative modality is worth).
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


How each label shows in the media and the text: :mod:`multimood.data.synthetic.signals` and
:mod:`multimood.data.synthetic.text`. The label each channel shows for every row is in ``synthetic_meta.json``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multimood.data.clips import DEFAULT_EPISODE_PATTERN as EPISODE_PATTERN
from multimood.data.labels import (
    CLIENT,
    EMOTIONS,
    STRATEGIES,
    THERAPIST,
    UNDEFINED_STRATEGY,
)
from multimood.data.mesc import CSV_COLUMNS as MESC_COLUMNS
from multimood.data.mesc import clip_name
from multimood.data.synthetic.mp4 import folder_bytes, prepare_out_dir, write_clip
from multimood.data.synthetic.signals import (
    BACKGROUND,
    IDLE_COLOUR,
    META_NAME,
    RECIPE_VERSION,
    MediaConfig,
    Style,
    count_at_rate,
    pick,
    render_audio,
    render_clip,
    render_frames,
    shown_label,
)
from multimood.data.synthetic.text import (
    CLIENT_TEMPLATES,
    DESCRIPTION_CUES,
    DESCRIPTION_SETTINGS,
    DESCRIPTION_VERBS,
    DESCRIPTION_VOICES,
    PROBLEM_TYPES,
    RESPONSE_OPENERS,
    RESPONSE_TEMPLATES,
    SITUATION_TEMPLATE,
    TEXT_CUES,
    VOICE_CUES,
)

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

_CLIENT_BLOCK = ((1, 2, 3, 4), (0.25, 0.3, 0.25, 0.2))
_THERAPIST_BLOCK = ((1, 2, 3), (0.6, 0.3, 0.1))


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


def _describe(rng: np.random.Generator, label: str) -> str:
    cue = pick(rng, DESCRIPTION_CUES[label])
    voice_cue = pick(rng, VOICE_CUES[label])
    verb, setting = pick(rng, DESCRIPTION_VERBS), pick(rng, DESCRIPTION_SETTINGS)
    voice = pick(rng, DESCRIPTION_VOICES).format(cue=voice_cue)
    return f"The speaker {verb} {cue}, {setting}. {voice}"


@dataclass(frozen=True)
class _Recipe:
    turns: tuple[int, int]
    clip_seconds: tuple[float, float]
    p: dict[str, float]
    label_noise: float
    prior: np.ndarray  # (7,) over EMOTIONS
    emotion_stay: tuple[float, float]  # (within a client turn, from one client turn to the next)
    response_words: int | None  # therapist utterances cut to this many words; None: whole


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
    previous_speaker: str | None = None
    for speaker in speakers:
        if speaker == CLIENT:
            stay = recipe.emotion_stay[0 if previous_speaker == CLIENT else 1]
            if client_emotion is None or rng.random() >= stay:
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
                strategy, emotion = pick(rng, STRATEGIES), pick(rng, EMOTIONS)
            last_strategy = strategy
        shown = {
            ch: shown_label(rng, emotion, recipe.p[ch], EMOTIONS)
            for ch in ("video", "audio", "text", "description")
        }
        if speaker == CLIENT:
            last_cue = pick(rng, TEXT_CUES[shown["text"]])
            utterance = pick(rng, CLIENT_TEMPLATES).format(cue=last_cue, topic=topic)
        else:
            # A response is a generation target, so its text follows the true labels: the opener
            # the therapist's emotion, the body the strategy, echoing the client's last cue word.
            shown["text"] = emotion
            body = RESPONSE_TEMPLATES[strategy].format(topic=topic, cue=last_cue)
            utterance = _shorten(f"{RESPONSE_OPENERS[emotion]} {body}".strip(), recipe.response_words)
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
                style=Style.draw(rng, shown["video"], shown["audio"], BACKGROUND[speaker]),
            )
        )
        previous_speaker = speaker
    # The situation is text: it names the opening mood as the text channel shows it (with p_text),
    # so text stays exactly as informative as p_text says.
    first_client = next((t.shown["text"] for t in turns if t.speaker == CLIENT), "neutral")
    situation = SITUATION_TEMPLATE.format(event=event, cue=pick(rng, TEXT_CUES[first_client]))
    return Dialogue(problem_type=problem_type, situation=situation, turns=turns)


def _shorten(text: str, words: int | None) -> str:
    """The first ``words`` words of ``text``, ending in a full stop (the whole text when None or shorter)."""
    parts = text.split()
    if words is None or len(parts) <= words:
        return text
    return " ".join(parts[:words]).rstrip(",.?!") + "."


def _timestamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


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
    emotion_stay: tuple[float, float] = (0.6, 0.6),
    response_words: int | None = None,
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
        emotion_stay: probability that a client utterance keeps the previous client emotion:
            (next utterance of the same client turn, first utterance of a later client turn).
        response_words: cut every therapist utterance (the response to generate) to its first
            this many words, ending in a full stop; None (default) keeps the whole template. The
            opener (therapist's emotion) comes first, then the strategy's template.
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
    probs = {
        "video": p_video,
        "audio": p_audio,
        "text": p_text,
        "description": p_description,
    }
    for name, p in [
        *((f"p_{k}", v) for k, v in probs.items()),
        ("label_noise", label_noise),
        ("emotion_stay[0]", emotion_stay[0]),
        ("emotion_stay[1]", emotion_stay[1]),
    ]:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if emotion_prior == "uniform":
        prior = np.full(len(EMOTIONS), 1.0 / len(EMOTIONS))
    elif emotion_prior == "mesc":
        prior = np.array([MESC_CLIENT_PRIOR[e] for e in EMOTIONS])
        prior = prior / prior.sum()
    else:
        raise ValueError(f"emotion_prior must be 'uniform' or 'mesc', got {emotion_prior!r}")
    if response_words is not None and response_words < 1:
        raise ValueError(f"response_words must be >= 1 or None, got {response_words}")
    if dialogues_per_episode < 1 or episodes_per_season < 1:
        raise ValueError("dialogues_per_episode and episodes_per_season must be >= 1")
    n_held = max(1, round(num_dialogues * split_fraction))
    if 2 * n_held >= num_dialogues:
        raise ValueError(
            f"split_fraction {split_fraction} leaves no training dialogue out of {num_dialogues}"
        )

    recipe = _Recipe(
        turns=turns,
        clip_seconds=clip_seconds,
        p=probs,
        label_noise=label_noise,
        prior=prior,
        emotion_stay=(float(emotion_stay[0]), float(emotion_stay[1])),
        response_words=response_words,
    )
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
        season, episode = (
            index // episodes_per_season + 1,
            index % episodes_per_season + 1,
        )
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
    held = {
        "val": sorted(order[:n_held].tolist()),
        "test": sorted(order[n_held : 2 * n_held].tolist()),
    }
    held_ids = set(held["val"]) | set(held["test"])
    split_ids = {
        "train": [d for d in range(num_dialogues) if d not in held_ids],
        **held,
    }

    prepare_out_dir(
        out,
        [
            "MESC.csv",
            "train.json",
            "val.json",
            "test.json",
            "clips",
            "episodes",
            META_NAME,
        ],
        overwrite,
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
            "emotion_stay": list(emotion_stay),
            "response_words": response_words,
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
            render_clip(clip_dir / name, turn.style, turn.end_ms - turn.start_ms, cfg)
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
        bytes=folder_bytes(out),
        seconds=time.perf_counter() - started,
        files=files,
    )


def _write_episode(path: Path, turns: list[Turn], cfg: MediaConfig) -> None:
    """One episode: each turn's pictures and sound at its StartTime..EndTime, idle in between."""
    turns = sorted(turns, key=lambda t: t.start_ms)
    total_ms = turns[-1].end_ms + 2_000
    n_frames = count_at_rate(total_ms, cfg.fps)
    idle = np.empty((cfg.height, cfg.width, 3), dtype=np.uint8)
    idle[...] = IDLE_COLOUR

    def frames() -> Iterator[np.ndarray]:
        k = 0
        for turn in turns:
            start, end = turn.start_ms / 1000, turn.end_ms / 1000
            # Frame k shows time k / fps; a turn owns the frames whose time falls in [start, end).
            first, stop = (
                int(np.ceil(start * cfg.fps - 1e-9)),
                int(np.ceil(end * cfg.fps - 1e-9)),
            )
            while k < first:
                yield idle
                k += 1
            if stop > first:
                yield from render_frames(
                    turn.style,
                    np.arange(first, stop) / cfg.fps - start,
                    cfg.width,
                    cfg.height,
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
