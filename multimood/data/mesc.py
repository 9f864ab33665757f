"""The MESC corpus: read ``MESC.csv`` and the split files, rebuild the splits, build one sample per therapist turn.

Files (SPEC section 5, all in one folder):

``MESC.csv``
    Every utterance of the corpus, one row each, with ``Dialogue_ID``/``Utterance_ID``, speaker,
    emotion, strategy and the episode time span its clip is cut from.
``val.json``, ``test.json`` (and ``train.json`` when a user has it)
    Lists of dialogues with ``problem_type``, ``situation`` and ``dialog`` (``text``, ``speaker``
    ``user``/``sys``, ``emotion``, ``strategy`` on ``sys`` rows). Each ``text`` is the utterance
    followed by a generated description of the speaker's face and voice. They carry no
    ``Dialogue_ID``.

Split reconstruction
    A split dialogue *matches* a CSV dialogue when both have the same number of utterances, the
    speakers agree (``user`` = Client, ``sys`` = Therapist) and every split ``text`` starts with
    the stripped CSV ``Utterance``. Every val/test dialogue must match exactly one CSV dialogue and
    no CSV dialogue may be claimed twice (``strict=True``; with ``strict=False`` the offenders are
    left out and listed in the report). Train is every CSV dialogue that val/test did not claim.
    ``train.json``, when present, only adds problem type, situation and descriptions to the train
    dialogues it matches. The description of an utterance is the rest of the split ``text`` after
    the CSV utterance (leading spaces and separators ``,;:`` removed).

Samples (one per therapist utterance; paper section 3, SPEC section 5)
    For therapist utterance ``t`` of a dialogue:

    * target: utterance ``t`` with its emotion and strategy (the answer the model writes);
    * current client turn: the most recent run of consecutive client utterances before ``t``
      (indices ``s..c``); its clip files give the video and audio; the client's emotion label is
      the emotion of the *last* utterance of that run (``c``), the most recent client utterance;
    * reply so far: the therapist utterances between that run and the target (``c+1..t-1``).
      Therapists often speak several utterances in a row (5,611 of 10,326 therapist utterances
      follow another therapist utterance), and a target that continues a reply only makes sense
      with the reply's earlier sentences in view, so they are kept: they are the *last* turns of
      the history (below), after everything that preceded the client run;
    * history: every utterance before the client run (``0..s-1``), then the reply so far, in
      dialogue order; the current client run itself is not repeated there (it is the
      ``Client utterance`` of the prompt). ``history_turns=N`` keeps the last ``N`` of these
      turns (paper table 7: 0, 5, 9 or all), so the reply so far is the last to be cut; with
      ``N=0`` the sample has no history at all (the reply so far stays available in
      ``Sample.reply_so_far``);
    * a therapist utterance with no client utterance before it in its dialogue (the dialogue
      opens with the therapist) has no client emotion and no client clip: it yields no sample and
      is counted in the report with the reason :data:`NO_CLIENT_TURN`. It still appears as a
      history turn of the later samples of its dialogue.

Labels are checked against :mod:`multimood.data.labels`: emotions exactly, strategies up to case
(three rows spell ``open question``); ``undefined`` is the strategy of client rows and only of
them. Any other value is an error naming the file and the CSV line (or JSON position).

The utterance text is private clinical-style material: nothing here prints or logs it; the
report holds counts and identifiers only.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from multimood.data import labels

SPLITS: tuple[str, ...] = ("train", "val", "test")
CSV_NAME = "MESC.csv"
SPLIT_FILES: dict[str, str] = {"train": "train.json", "val": "val.json", "test": "test.json"}
CSV_COLUMNS: tuple[str, ...] = (
    "Utterance",
    "Speaker",
    "Emotion",
    "Strategy",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
# Speaker names in the split files.
SPLIT_SPEAKERS: dict[str, str] = {"user": labels.CLIENT, "sys": labels.THERAPIST}

NO_CLIENT_TURN = "no client utterance before this therapist utterance in its dialogue"

_TIME = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})[,.](\d{3})$")
# Separators the split text sometimes keeps between an utterance and its description.
_DESCRIPTION_LEAD = " \t\r\n,;:"


class MESCFormatError(ValueError):
    """A MESC file holds a value the reader cannot accept; the message names the file and line or key."""


class MESCMatchError(ValueError):
    """Split dialogues could not be matched one-to-one to ``MESC.csv`` dialogues."""


# --------------------------------------------------------------------------------------------
# Data types


@dataclass(frozen=True)
class Turn:
    """One utterance of a dialogue, as read from ``MESC.csv`` (plus its description, if any).

    ``row`` is the 0-based data-row index in ``MESC.csv`` (it is part of the clip name); ``line``
    is the 1-based line of the file where the row starts (the header is line 1), for messages.
    ``strategy`` is None for client utterances. Times are integer milliseconds in the episode.
    The text and description are left out of the repr, so they never reach logs by accident.
    """

    dialogue_id: int
    utterance_id: int
    row: int
    line: int
    speaker: str
    text: str = field(repr=False)  # private material: kept out of reprs, logs and test failures
    emotion: str
    strategy: str | None
    season: int
    episode: int
    start_ms: int
    end_ms: int
    description: str | None = field(default=None, repr=False)

    @property
    def is_client(self) -> bool:
        return self.speaker == labels.CLIENT

    @property
    def is_therapist(self) -> bool:
        return self.speaker == labels.THERAPIST

    @property
    def clip_name(self) -> str:
        """File name of this utterance's clip, as the MESC authors name them."""
        return clip_name(self.dialogue_id, self.utterance_id, self.row)

    @property
    def start(self) -> float:
        """Start time in the episode, in seconds."""
        return self.start_ms / 1000.0

    @property
    def end(self) -> float:
        """End time in the episode, in seconds."""
        return self.end_ms / 1000.0


@dataclass(frozen=True)
class Dialogue:
    """One MESC dialogue: its turns in order, and the split-file context when a split file has it."""

    dialogue_id: int
    split: str
    turns: tuple[Turn, ...]
    problem_type: str | None = None
    situation: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Sample:
    """One training/evaluation example: predict the labels and text of one therapist utterance.

    See the module docstring for how each part is chosen. ``history`` is already cut to the
    requested length; ``reply_so_far`` (therapist utterances between the client run and the
    target) is always given in full, and is also the tail of ``history`` when history is kept.
    """

    split: str
    dialogue_id: int
    target: Turn
    client_turns: tuple[Turn, ...]
    history: tuple[Turn, ...]
    reply_so_far: tuple[Turn, ...]
    problem_type: str | None = None
    situation: str | None = field(default=None, repr=False)

    @property
    def sample_id(self) -> str:
        """Stable identifier: the target utterance's ``dia{D}_utt{U}``."""
        return f"dia{self.dialogue_id}_utt{self.target.utterance_id}"

    @property
    def client_emotion(self) -> str:
        """Task 1 label: the emotion of the most recent client utterance."""
        return self.client_turns[-1].emotion

    @property
    def therapist_emotion(self) -> str:
        """Task 2 label: the target utterance's emotion."""
        return self.target.emotion

    @property
    def strategy(self) -> str:
        """Task 3 label: the target utterance's strategy (canonical spelling)."""
        assert self.target.strategy is not None  # therapist turns always carry one
        return self.target.strategy

    @property
    def response(self) -> str:
        """Task 4 reference: the target utterance's text."""
        return self.target.text

    @property
    def client_utterance(self) -> str:
        """The current client run's utterances joined with spaces (no descriptions)."""
        return " ".join(turn.text for turn in self.client_turns)

    @property
    def client_text(self) -> str:
        """The ``Client utterance`` of the prompt: each utterance of the run followed by its
        description in brackets when it has one (none when built with ``descriptions=False``)."""
        return " ".join(_with_description(turn.text, turn.description) for turn in self.client_turns)

    @property
    def clip_names(self) -> tuple[str, ...]:
        """Clip files of the current client run, oldest first: the sample's video and audio."""
        return tuple(turn.clip_name for turn in self.client_turns)


@dataclass(frozen=True)
class DroppedSample:
    """A therapist utterance that yields no sample, and why."""

    split: str
    dialogue_id: int
    utterance_id: int
    row: int
    reason: str


@dataclass
class SplitCounts:
    """Sizes of one split."""

    dialogues: int = 0
    utterances: int = 0
    client_utterances: int = 0
    therapist_utterances: int = 0
    utterances_with_description: int = 0
    dialogues_with_context: int = 0
    samples: int = 0
    dropped: int = 0


@dataclass
class MESCLoadReport:
    """What :func:`load_mesc` read, rebuilt and dropped. Counts and identifiers only, never text."""

    data_dir: str
    split_files: dict[str, str] = field(default_factory=dict)
    counts: dict[str, SplitCounts] = field(default_factory=dict)
    dropped: list[DroppedSample] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    strategy_case_normalised: int = 0
    history_turns: int | None = None
    descriptions: bool = True

    def dropped_by_reason(self) -> dict[str, dict[str, int]]:
        """``{split: {reason: count}}``."""
        out: dict[str, Counter[str]] = {split: Counter() for split in self.counts}
        for item in self.dropped:
            out.setdefault(item.split, Counter())[item.reason] += 1
        return {split: dict(counter) for split, counter in out.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (dropped samples as identifiers)."""
        return {
            "data_dir": self.data_dir,
            "split_files": dict(self.split_files),
            "history_turns": self.history_turns,
            "descriptions": self.descriptions,
            "counts": {split: vars(counts).copy() for split, counts in self.counts.items()},
            "dropped_by_reason": self.dropped_by_reason(),
            "dropped": [vars(item).copy() for item in self.dropped],
            "unmatched": list(self.unmatched),
            "ambiguous": list(self.ambiguous),
            "strategy_case_normalised": self.strategy_case_normalised,
        }

    def summary(self) -> str:
        """A short table for logs."""
        lines = [
            f"MESC from {self.data_dir} (history_turns={self.history_turns}, descriptions={self.descriptions})"
        ]
        header = f"  {'split':<6}{'dialogues':>10}{'utterances':>11}{'client':>8}{'therapist':>10}{'w/ desc':>9}{'samples':>9}{'dropped':>9}"
        lines.append(header)
        for split, c in self.counts.items():
            lines.append(
                f"  {split:<6}{c.dialogues:>10,}{c.utterances:>11,}{c.client_utterances:>8,}"
                f"{c.therapist_utterances:>10,}{c.utterances_with_description:>9,}{c.samples:>9,}{c.dropped:>9,}"
            )
        for split, reasons in self.dropped_by_reason().items():
            for reason, n in reasons.items():
                lines.append(f"  dropped from {split}: {n} ({reason})")
        if self.strategy_case_normalised:
            lines.append(f"  strategy spellings normalised for case: {self.strategy_case_normalised} rows")
        lines.extend(f"  unmatched: {item}" for item in self.unmatched)
        lines.extend(f"  ambiguous: {item}" for item in self.ambiguous)
        return "\n".join(lines)


@dataclass(frozen=True)
class MESCData:
    """Everything :func:`load_mesc` returns: dialogues and samples per split, and the report."""

    dialogues: dict[str, tuple[Dialogue, ...]]
    samples: dict[str, tuple[Sample, ...]]
    report: MESCLoadReport


# --------------------------------------------------------------------------------------------
# Small helpers


def clip_name(dialogue_id: int, utterance_id: int, row: int) -> str:
    """``dia{Dialogue_ID}_utt{Utterance_ID}_{row}.mp4``, ``row`` the 0-based data row in MESC.csv."""
    return f"dia{dialogue_id}_utt{utterance_id}_{row}.mp4"


def parse_timestamp(value: str) -> int:
    """``HH:MM:SS,mmm`` (subtitle style; ``.`` accepted too) to integer milliseconds."""
    match = _TIME.match(value.strip())
    if match is None:
        raise ValueError(f"timestamp {value!r} is not HH:MM:SS,mmm")
    hours, minutes, seconds, millis = (int(g) for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise ValueError(f"timestamp {value!r} has minutes or seconds above 59")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def _with_description(text: str, description: str | None) -> str:
    return f"{text} [Description: {description}]" if description else text


def format_history_turn(turn: Turn, with_description: bool = True) -> str:
    """One history turn as text for the conversation compressor (paper 3.2: "U_i includes role
    information, utterance content, emotional labels, and therapist strategy labels").

    Format (one line; the compressor appends its own ``<MEM>`` token)::

        Client (emotion: sadness): <utterance>
        Therapist (emotion: neutral; strategy: Open question): <utterance>

    With ``with_description`` and a description on the turn, `` [Description: <text>]`` follows
    the utterance. Client turns carry no strategy.
    """
    tags = f"emotion: {turn.emotion}"
    if turn.strategy is not None:
        tags += f"; strategy: {turn.strategy}"
    text = _with_description(turn.text, turn.description if with_description else None)
    return f"{turn.speaker} ({tags}): {text}"


# --------------------------------------------------------------------------------------------
# Reading MESC.csv


def _int_field(value: str, name: str, where: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise MESCFormatError(f"{where}: {name} {value!r} is not an integer") from None
    if number < 0:
        raise MESCFormatError(f"{where}: {name} {value!r} is negative")
    return number


def _check_labels(speaker: str, emotion: str, strategy: str, where: str) -> tuple[str, str | None, bool]:
    """Return ``(emotion, strategy or None, case_was_normalised)`` or raise naming ``where``."""
    if emotion not in labels.EMOTIONS:
        raise MESCFormatError(
            f"{where}: unknown emotion {emotion!r}; expected one of {', '.join(labels.EMOTIONS)}"
        )
    if speaker == labels.CLIENT:
        if strategy != labels.UNDEFINED_STRATEGY:
            raise MESCFormatError(
                f"{where}: client rows carry strategy {labels.UNDEFINED_STRATEGY!r}, got {strategy!r}"
            )
        return emotion, None, False
    if strategy.strip().lower() == labels.UNDEFINED_STRATEGY:
        raise MESCFormatError(f"{where}: therapist row has strategy {strategy!r}; only client rows may")
    try:
        canonical = labels.canonical_strategy(strategy)
    except ValueError as err:
        raise MESCFormatError(f"{where}: {err}") from None
    return emotion, canonical, canonical != strategy


def read_mesc_csv(path: str | Path) -> tuple[list[tuple[Turn, ...]], int]:
    """Read and check ``MESC.csv``; return its dialogues (turns in order) and how many strategy
    spellings were normalised for case.

    Checks: the ten columns, speakers, emotions, strategies (see module docstring), integer ids,
    timestamps with ``EndTime > StartTime``, non-empty utterances, and that each dialogue's rows are
    contiguous with ``Utterance_ID`` counting 0, 1, 2, ... Every error names the file and line.
    """
    path = Path(path)
    dialogues: list[list[Turn]] = []
    seen_ids: set[int] = set()
    normalised = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise MESCFormatError(
                f"{path}: empty file, expected a header with {', '.join(CSV_COLUMNS)}"
            ) from None
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise MESCFormatError(f"{path} line 1: missing column(s) {', '.join(missing)}")
        index = {name: header.index(name) for name in CSV_COLUMNS}
        row = 0
        start_line = reader.line_num + 1
        for record in reader:
            line, start_line = start_line, reader.line_num + 1
            where = f"{path} line {line}"
            if not any(cell.strip() for cell in record):
                continue  # a blank line is not a data row
            if len(record) != len(header):
                raise MESCFormatError(f"{where}: {len(record)} fields, the header has {len(header)}")
            value = {name: record[i] for name, i in index.items()}
            speaker = value["Speaker"].strip()
            if speaker not in labels.SPEAKERS:
                raise MESCFormatError(f"{where}: unknown Speaker {speaker!r}; expected Client or Therapist")
            emotion, strategy, was_normalised = _check_labels(
                speaker, value["Emotion"].strip(), value["Strategy"].strip(), where
            )
            normalised += was_normalised
            text = value["Utterance"].strip()
            if not text:
                raise MESCFormatError(f"{where}: empty Utterance")
            dialogue_id = _int_field(value["Dialogue_ID"], "Dialogue_ID", where)
            utterance_id = _int_field(value["Utterance_ID"], "Utterance_ID", where)
            try:
                start_ms = parse_timestamp(value["StartTime"])
                end_ms = parse_timestamp(value["EndTime"])
            except ValueError as err:
                raise MESCFormatError(f"{where}: {err}") from None
            if end_ms <= start_ms:
                raise MESCFormatError(
                    f"{where}: EndTime {value['EndTime']!r} is not after StartTime {value['StartTime']!r}"
                )
            turn = Turn(
                dialogue_id=dialogue_id,
                utterance_id=utterance_id,
                row=row,
                line=line,
                speaker=speaker,
                text=text,
                emotion=emotion,
                strategy=strategy,
                season=_int_field(value["Season"], "Season", where),
                episode=_int_field(value["Episode"], "Episode", where),
                start_ms=start_ms,
                end_ms=end_ms,
            )
            if dialogues and dialogues[-1][0].dialogue_id == dialogue_id:
                expected = len(dialogues[-1])
            else:
                if dialogue_id in seen_ids:
                    raise MESCFormatError(
                        f"{where}: rows of Dialogue_ID {dialogue_id} are not contiguous (it appeared earlier)"
                    )
                seen_ids.add(dialogue_id)
                dialogues.append([])
                expected = 0
            if utterance_id != expected:
                raise MESCFormatError(
                    f"{where}: Utterance_ID {utterance_id} in Dialogue_ID {dialogue_id}, expected {expected}"
                )
            dialogues[-1].append(turn)
            row += 1
    if not dialogues:
        raise MESCFormatError(f"{path}: no data rows")
    return [tuple(turns) for turns in dialogues], normalised


# --------------------------------------------------------------------------------------------
# Reading the split files


@dataclass(frozen=True)
class SplitUtterance:
    """One ``dialog`` entry of a split file (speaker mapped to Client/Therapist)."""

    text: str = field(repr=False)
    speaker: str
    emotion: str
    strategy: str | None


@dataclass(frozen=True)
class SplitDialogue:
    """One dialogue of a split file; ``index`` is its position in the file's list."""

    index: int
    problem_type: str | None
    situation: str | None = field(repr=False)
    utterances: tuple[SplitUtterance, ...]


def _optional_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MESCFormatError(f"{where}: expected a string, got {type(value).__name__}")
    return value.strip() or None


def read_split_file(path: str | Path) -> list[SplitDialogue]:
    """Read and check a split file (``val.json``/``test.json``/``train.json``).

    Errors name the file and the JSON position, e.g. ``val.json [3].dialog[5].emotion``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MESCFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise MESCFormatError(f"{path}: expected a list of dialogues, got {type(data).__name__}")
    out: list[SplitDialogue] = []
    for i, item in enumerate(data):
        where = f"{path} [{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("dialog"), list):
            raise MESCFormatError(f"{where}: expected an object with a 'dialog' list")
        utterances = []
        for j, entry in enumerate(item["dialog"]):
            at = f"{where}.dialog[{j}]"
            if not isinstance(entry, dict):
                raise MESCFormatError(f"{at}: expected an object")
            text, speaker = entry.get("text"), entry.get("speaker")
            if not isinstance(text, str) or not text.strip():
                raise MESCFormatError(f"{at}.text: missing or empty")
            if speaker not in SPLIT_SPEAKERS:
                raise MESCFormatError(f"{at}.speaker: {speaker!r} is not 'user' or 'sys'")
            speaker = SPLIT_SPEAKERS[speaker]
            emotion = entry.get("emotion")
            if emotion not in labels.EMOTIONS:
                raise MESCFormatError(
                    f"{at}.emotion: unknown emotion {emotion!r}; expected one of {', '.join(labels.EMOTIONS)}"
                )
            strategy = entry.get("strategy")
            if speaker == labels.THERAPIST:
                if not isinstance(strategy, str):
                    raise MESCFormatError(f"{at}.strategy: therapist ('sys') entries need a strategy")
                try:
                    strategy = labels.canonical_strategy(strategy)
                except ValueError as err:
                    raise MESCFormatError(f"{at}.strategy: {err}") from None
            elif strategy not in (None, labels.UNDEFINED_STRATEGY):
                raise MESCFormatError(
                    f"{at}.strategy: client ('user') entries carry no strategy, got {strategy!r}"
                )
            else:
                strategy = None
            utterances.append(SplitUtterance(text.strip(), speaker, emotion, strategy))
        out.append(
            SplitDialogue(
                index=i,
                problem_type=_optional_text(item.get("problem_type"), f"{where}.problem_type"),
                situation=_optional_text(item.get("situation"), f"{where}.situation"),
                utterances=tuple(utterances),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Matching split dialogues to CSV dialogues


def _matches(split_dialogue: SplitDialogue, turns: Sequence[Turn]) -> bool:
    return all(u.text.startswith(t.text) for u, t in zip(split_dialogue.utterances, turns, strict=True))


def match_dialogues(
    split_dialogues: Sequence[SplitDialogue], csv_dialogues: Sequence[tuple[Turn, ...]]
) -> dict[int, list[int]]:
    """For each split dialogue (by ``index``), the positions in ``csv_dialogues`` it matches.

    A match needs the same length, the same speakers in order, and every split text starting
    with the CSV utterance (stripped). Callers decide what zero or several matches mean.
    """
    by_signature: dict[tuple[str, ...], list[int]] = {}
    for position, turns in enumerate(csv_dialogues):
        by_signature.setdefault(tuple(t.speaker for t in turns), []).append(position)
    result: dict[int, list[int]] = {}
    for dialogue in split_dialogues:
        signature = tuple(u.speaker for u in dialogue.utterances)
        candidates = by_signature.get(signature, [])
        result[dialogue.index] = [p for p in candidates if _matches(dialogue, csv_dialogues[p])]
    return result


def _description(split_text: str, utterance: str) -> str | None:
    rest = split_text[len(utterance) :].lstrip(_DESCRIPTION_LEAD).strip()
    return rest or None


def _attach(turns: tuple[Turn, ...], split_dialogue: SplitDialogue, split_path: Path) -> tuple[Turn, ...]:
    """Turns with descriptions from the split dialogue; labels must agree with the CSV."""
    out = []
    for j, (turn, utterance) in enumerate(zip(turns, split_dialogue.utterances, strict=True)):
        if (utterance.emotion, utterance.strategy) != (turn.emotion, turn.strategy):
            raise MESCMatchError(
                f"{split_path} [{split_dialogue.index}].dialog[{j}] matches {CSV_NAME} line {turn.line} "
                f"(Dialogue_ID {turn.dialogue_id}) by text but its labels differ: "
                f"{utterance.emotion}/{utterance.strategy} vs {turn.emotion}/{turn.strategy}"
            )
        out.append(replace(turn, description=_description(utterance.text, turn.text)))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Samples


def _check_history_turns(history_turns: int | None) -> None:
    if history_turns is not None and (
        isinstance(history_turns, bool) or not isinstance(history_turns, int) or history_turns < 0
    ):
        raise ValueError(f"history_turns must be None (all) or an integer >= 0, got {history_turns!r}")


def _strip_descriptions(turns: Iterable[Turn]) -> tuple[Turn, ...]:
    return tuple(replace(t, description=None) if t.description is not None else t for t in turns)


def build_samples(
    dialogue: Dialogue, history_turns: int | None = None, descriptions: bool = True
) -> tuple[list[Sample], list[DroppedSample]]:
    """One sample per therapist utterance of ``dialogue`` (module docstring), and the dropped ones.

    history_turns: keep the last N history turns (None = all; paper table 7 uses 0, 5, 9, all).
    descriptions: keep the generated face/voice descriptions (False = the paper's "w/o desc").
    """
    _check_history_turns(history_turns)
    turns = dialogue.turns if descriptions else _strip_descriptions(dialogue.turns)
    samples: list[Sample] = []
    dropped: list[DroppedSample] = []
    last_client = -1  # index of the most recent client utterance
    run_start = -1  # first index of the client run ending at last_client
    for t, turn in enumerate(turns):
        if turn.is_client:
            if t == 0 or not turns[t - 1].is_client:
                run_start = t  # a new client run begins
            last_client = t
            continue
        if last_client < 0:
            dropped.append(
                DroppedSample(
                    dialogue.split, dialogue.dialogue_id, turn.utterance_id, turn.row, NO_CLIENT_TURN
                )
            )
            continue
        reply_so_far = turns[last_client + 1 : t]
        history = turns[:run_start] + reply_so_far
        if history_turns is not None:
            history = history[-history_turns:] if history_turns else ()
        samples.append(
            Sample(
                split=dialogue.split,
                dialogue_id=dialogue.dialogue_id,
                target=turn,
                client_turns=turns[run_start : last_client + 1],
                history=history,
                reply_so_far=reply_so_far,
                problem_type=dialogue.problem_type,
                situation=dialogue.situation,
            )
        )
    return samples, dropped


# --------------------------------------------------------------------------------------------
# The whole corpus


def load_dialogues(
    data_dir: str | Path, strict: bool = True
) -> tuple[dict[str, tuple[Dialogue, ...]], MESCLoadReport]:
    """Read ``MESC.csv`` and the split files in ``data_dir`` and rebuild train/val/test dialogues.

    ``val.json`` and ``test.json`` are required; ``train.json`` is optional (it only adds context
    and descriptions to train dialogues). With ``strict`` (default) a val/test dialogue that
    matches no CSV dialogue or several, or a CSV dialogue claimed twice, raises
    :class:`MESCMatchError`; without it they are left out and listed in the report. Unmatched
    ``train.json`` dialogues are only reported (they never change which dialogues are train).
    """
    data_dir = Path(data_dir)
    csv_path = data_dir / CSV_NAME
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found (the MESC annotations folder needs {CSV_NAME})")
    csv_dialogues, normalised = read_mesc_csv(csv_path)
    report = MESCLoadReport(data_dir=str(data_dir), strategy_case_normalised=normalised)
    claimed: dict[int, str] = {}  # CSV position -> "val.json [i]"
    assigned: dict[str, list[Dialogue]] = {split: [] for split in SPLITS}

    for split in ("val", "test"):
        split_path = data_dir / SPLIT_FILES[split]
        if not split_path.is_file():
            raise FileNotFoundError(f"{split_path} not found (the {split} split of MESC)")
        report.split_files[split] = str(split_path)
        split_dialogues = read_split_file(split_path)
        matches = match_dialogues(split_dialogues, csv_dialogues)
        for dialogue in split_dialogues:
            found = matches[dialogue.index]
            name = f"{split_path.name} [{dialogue.index}]"
            if not found:
                report.unmatched.append(f"{name}: no {CSV_NAME} dialogue matches")
                continue
            if len(found) > 1:
                ids = ", ".join(str(csv_dialogues[p][0].dialogue_id) for p in found)
                report.ambiguous.append(f"{name}: matches several {CSV_NAME} dialogues (Dialogue_ID {ids})")
                continue
            position = found[0]
            if position in claimed:
                report.ambiguous.append(
                    f"{name}: matches Dialogue_ID {csv_dialogues[position][0].dialogue_id}, "
                    f"already matched by {claimed[position]}"
                )
                continue
            claimed[position] = name
            turns = _attach(csv_dialogues[position], dialogue, split_path)
            assigned[split].append(
                Dialogue(turns[0].dialogue_id, split, turns, dialogue.problem_type, dialogue.situation)
            )
    problems = report.unmatched + report.ambiguous
    if strict and problems:
        raise MESCMatchError(
            f"{len(problems)} val/test dialogue(s) could not be matched one-to-one to {csv_path}:\n  "
            + "\n  ".join(problems)
        )

    train_context: dict[int, tuple[SplitDialogue, Path]] = {}
    train_path = data_dir / SPLIT_FILES["train"]
    if train_path.is_file():
        report.split_files["train"] = str(train_path)
        free = [p for p in range(len(csv_dialogues)) if p not in claimed]
        free_dialogues = [csv_dialogues[p] for p in free]
        train_dialogues = read_split_file(train_path)
        matches = match_dialogues(train_dialogues, free_dialogues)
        for dialogue in train_dialogues:
            found = [free[k] for k in matches[dialogue.index]]
            name = f"{train_path.name} [{dialogue.index}]"
            if len(found) == 1 and found[0] not in train_context:
                train_context[found[0]] = (dialogue, train_path)
            elif not found:
                report.unmatched.append(f"{name}: no unclaimed {CSV_NAME} dialogue matches")
            else:
                report.ambiguous.append(
                    f"{name}: matches {len(found)} {CSV_NAME} dialogues or one already matched"
                )
    for position, turns in enumerate(csv_dialogues):
        if position in claimed:
            continue
        context = train_context.get(position)
        if context is None:
            assigned["train"].append(Dialogue(turns[0].dialogue_id, "train", turns))
        else:
            split_dialogue, path = context
            turns = _attach(turns, split_dialogue, path)
            assigned["train"].append(
                Dialogue(
                    turns[0].dialogue_id,
                    "train",
                    turns,
                    split_dialogue.problem_type,
                    split_dialogue.situation,
                )
            )

    dialogues = {
        split: tuple(sorted(items, key=lambda d: d.dialogue_id)) for split, items in assigned.items()
    }
    for split, items in dialogues.items():
        counts = SplitCounts(dialogues=len(items))
        for dialogue in items:
            counts.utterances += len(dialogue.turns)
            counts.client_utterances += sum(t.is_client for t in dialogue.turns)
            counts.therapist_utterances += sum(t.is_therapist for t in dialogue.turns)
            counts.utterances_with_description += sum(t.description is not None for t in dialogue.turns)
            counts.dialogues_with_context += (
                dialogue.problem_type is not None or dialogue.situation is not None
            )
        report.counts[split] = counts
    return dialogues, report


def load_mesc(
    data_dir: str | Path,
    history_turns: int | None = None,
    descriptions: bool = True,
    strict: bool = True,
) -> MESCData:
    """Read the MESC annotations in ``data_dir`` and build the samples of every split.

    data_dir: folder with ``MESC.csv``, ``val.json``, ``test.json`` (and optionally ``train.json``).
    history_turns: history length in turns, None for all (paper table 7: 0, 5, 9, all).
    descriptions: keep the generated face/voice descriptions (False: the paper's "w/o desc").
    strict: raise when val/test dialogues cannot be matched one-to-one to the CSV.
    """
    _check_history_turns(history_turns)
    dialogues, report = load_dialogues(data_dir, strict=strict)
    report.history_turns, report.descriptions = history_turns, descriptions
    samples: dict[str, tuple[Sample, ...]] = {}
    for split, items in dialogues.items():
        built: list[Sample] = []
        for dialogue in items:
            new, dropped = build_samples(dialogue, history_turns=history_turns, descriptions=descriptions)
            built.extend(new)
            report.dropped.extend(dropped)
            report.counts[split].dropped += len(dropped)
        report.counts[split].samples = len(built)
        samples[split] = tuple(built)
    return MESCData(dialogues=dialogues, samples=samples, report=report)


def main(argv: list[str] | None = None) -> int:
    """``multimood mesc-report --data DIR``: load MESC, print the load report (counts only)."""
    from multimood.cli import make_parser

    parser = make_parser("mesc-report", "Rebuild the MESC splits and samples and print the load report.")
    parser.add_argument(
        "--data", required=True, help="folder with MESC.csv, val.json, test.json [train.json]"
    )
    parser.add_argument(
        "--history-turns", type=int, default=None, help="history length in turns (default: all)"
    )
    parser.add_argument("--no-descriptions", action="store_true", help="drop the generated descriptions")
    parser.add_argument(
        "--json", default=None, help="also write the report (counts, ids, no text) to this file"
    )
    args = parser.parse_args(argv)
    data = load_mesc(args.data, history_turns=args.history_turns, descriptions=not args.no_descriptions)
    print(data.report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(data.report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
