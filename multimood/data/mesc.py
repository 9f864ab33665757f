"""The MESC corpus: read ``MESC.csv`` and the split files, rebuild the splits, build one sample per therapist turn.

Files (all in one folder; ``docs/design/mesc-samples.md`` has the reasons and the measured counts):

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

Turns
    A *turn* is a run of consecutive utterances by one speaker (:class:`Turn`). Its text is the
    utterances joined with a space; its emotion (and, for the therapist, its strategy) is the most
    frequent label among the run's utterances, ties going to the label that occurs first in the
    run. The paper only speaks of turns ("[CURRENT CONTEXT] is the current 'Client' turn", figure
    4); the merging is the authors' released code (``framework/train.py`` of
    github.com/quangtuan-0504/Multimood, branch ``feature/train_sft``: the answer is
    ``" ".join(sources['Utterance'])``, its data folders are named ``..._max_emotion_max_strategy``).

Samples (``sample_unit="turn"``, the default)
    One sample per therapist turn:

    * target: the therapist turn (merged response, its emotion and strategy);
    * current client turn: the client turn right before it; its clips give the video and audio
      and its text the prompt's ``Client utterance``; the client's emotion (task 1) is the emotion
      of its *last* utterance, the most recent client utterance (the authors'
      ``get_emotion_user_most_recent``);
    * history: the turns before the current client turn, merged the same way, so no label of the
      target's own run can reach the history;
    * a therapist turn with no client utterance before it (the dialogue opens with the therapist)
      yields no sample and is counted in the report with the reason :data:`NO_CLIENT_TURN`; it
      still appears in the history of the later samples of its dialogue.

    ``sample_unit="utterance"`` builds one sample per therapist *utterance* instead, with the
    earlier utterances of the same therapist turn at the end of its history, gold labels
    included. A target then often continues a reply whose labels it can copy, so results are not
    comparable with paper table 4; it exists only to compare with that construction.

History length (``history_length`` counted in ``history_unit``; None keeps everything)
    * ``exchanges`` (default): the last ``k`` client/therapist pairs of merged turns, the authors'
      ``sources['history_chat'][-k_turn_history * 2:]`` ("k turn user-assistant most recently");
      paper table 7's "hist. = 0 / 5 / 9" are read in this unit;
    * ``turns``: the last ``k`` merged turns;
    * ``utterances``: the last ``k`` utterances before the current client turn, each its own
      history entry (not merged), as per-utterance samples count them.

Context (``descriptions``, ``problem_situation``)
    The generated descriptions and the problem/situation lines exist only where a split file has
    them: val and test always, train only with ``train.json``. ``"auto"`` (default) uses each only
    when every split has it, so train and eval prompts have the same sections. Asking for one
    with ``True`` when train lacks it is an error (:class:`MESCContextError`) that names the
    missing file, unless ``allow_eval_only_context=True``; ``False`` drops it everywhere (the
    paper's "w/o desc" ablation for descriptions).

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
from typing import Any, Literal

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

SampleUnit = Literal["turn", "utterance"]
HistoryUnit = Literal["exchanges", "turns", "utterances"]
# A context option: "auto" (on when every split has it), True or False.
ContextOption = bool | Literal["auto"]
SAMPLE_UNITS: tuple[str, ...] = ("turn", "utterance")
HISTORY_UNITS: tuple[str, ...] = ("exchanges", "turns", "utterances")

NO_CLIENT_TURN = "no client utterance before it in its dialogue (the dialogue opens with the therapist)"
# Printed by mesc-report and logged by the data module whenever sample_unit="utterance".
PER_UTTERANCE_WARNING = (
    "sample_unit=utterance: one sample per therapist utterance, whose history ends with the earlier "
    "utterances of the same therapist turn and their gold labels; results are NOT comparable with "
    "paper table 4 (use sample_unit=turn)"
)

_TIME = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})[,.](\d{3})$")
# Separators the split text sometimes keeps between an utterance and its description.
_DESCRIPTION_LEAD = " \t\r\n,;:"


class MESCFormatError(ValueError):
    """A MESC file holds a value the reader cannot accept; the message names the file and line or key."""


class MESCMatchError(ValueError):
    """Split dialogues could not be matched one-to-one to ``MESC.csv`` dialogues."""


class MESCContextError(ValueError):
    """Descriptions or problem/situation were asked for on every split but the train split lacks them."""


# --------------------------------------------------------------------------------------------
# Data types


class _Spoken:
    """Speaker tests shared by utterances and turns."""

    speaker: str

    @property
    def is_client(self) -> bool:
        return self.speaker == labels.CLIENT

    @property
    def is_therapist(self) -> bool:
        return self.speaker == labels.THERAPIST


@dataclass(frozen=True)
class Utterance(_Spoken):
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


def most_frequent(values: Iterable[str]) -> str:
    """The most frequent value; ties go to the one that occurs first (``Counter.most_common``
    keeps insertion order among equal counts)."""
    counts = Counter(values)
    if not counts:
        raise ValueError("most_frequent() of nothing")
    return counts.most_common(1)[0][0]


@dataclass(frozen=True)
class Turn(_Spoken):
    """A run of consecutive utterances by one speaker, merged (module docstring, "Turns").

    ``utterances`` are in dialogue order and share ``speaker``. A turn built from one utterance is
    how per-utterance samples and the ``utterances`` history unit represent single utterances.
    """

    speaker: str
    utterances: tuple[Utterance, ...]

    def __post_init__(self) -> None:
        if not self.utterances:
            raise ValueError("a turn needs at least one utterance")
        if any(u.speaker != self.speaker for u in self.utterances):
            raise ValueError(f"every utterance of a {self.speaker} turn must be the {self.speaker}'s")

    @property
    def dialogue_id(self) -> int:
        return self.utterances[0].dialogue_id

    @property
    def utterance_ids(self) -> tuple[int, ...]:
        return tuple(u.utterance_id for u in self.utterances)

    @property
    def emotion(self) -> str:
        """The most frequent emotion of the run (ties: the first to occur)."""
        return most_frequent(u.emotion for u in self.utterances)

    @property
    def strategy(self) -> str | None:
        """The most frequent strategy of a therapist run (ties: the first to occur); None for a client."""
        if not self.is_therapist:
            return None
        return most_frequent(u.strategy for u in self.utterances if u.strategy is not None)

    @property
    def text(self) -> str:
        """The utterances joined with a space (no descriptions): the merged response of a therapist turn."""
        return " ".join(u.text for u in self.utterances)

    @property
    def text_with_descriptions(self) -> str:
        """Each utterance followed by `` [Description: ...]`` when it has one, joined with spaces."""
        return " ".join(_with_description(u.text, u.description) for u in self.utterances)

    @property
    def clip_names(self) -> tuple[str, ...]:
        return tuple(u.clip_name for u in self.utterances)


@dataclass(frozen=True)
class Dialogue:
    """One MESC dialogue: its utterances in order, and the split-file context when a split file has it.

    ``split_file`` names the split file the dialogue was matched in (None: built from the CSV
    alone, so no descriptions, problem type or situation).
    """

    dialogue_id: int
    split: str
    utterances: tuple[Utterance, ...]
    problem_type: str | None = None
    situation: str | None = field(default=None, repr=False)
    split_file: str | None = None

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The dialogue as merged turns (runs of one speaker's consecutive utterances)."""
        return merge_turns(self.utterances)


@dataclass(frozen=True)
class Sample:
    """One training/evaluation example: predict the labels and the text of one therapist turn.

    See the module docstring for how each part is chosen. ``target`` is the therapist turn (a
    single utterance when ``unit == "utterance"``), ``client_turn`` the whole current client turn
    and ``history`` the earlier turns, already cut to the requested length.
    """

    split: str
    dialogue_id: int
    target: Turn
    client_turn: Turn
    history: tuple[Turn, ...]
    problem_type: str | None = None
    situation: str | None = field(default=None, repr=False)
    unit: SampleUnit = "turn"

    @property
    def sample_id(self) -> str:
        """Stable identifier: ``dia{D}_utt{first}-{last}`` (the target run's utterance ids) for
        turn samples, ``dia{D}_utt{U}`` for per-utterance samples."""
        ids = self.target.utterance_ids
        if self.unit == "utterance":
            return f"dia{self.dialogue_id}_utt{ids[0]}"
        return f"dia{self.dialogue_id}_utt{ids[0]}-{ids[-1]}"

    @property
    def client_emotion(self) -> str:
        """Task 1 label: the emotion of the most recent client utterance."""
        return self.client_turn.utterances[-1].emotion

    @property
    def therapist_emotion(self) -> str:
        """Task 2 label: the target turn's emotion (most frequent of its run)."""
        return self.target.emotion

    @property
    def strategy(self) -> str:
        """Task 3 label: the target turn's strategy (most frequent of its run, canonical spelling)."""
        strategy = self.target.strategy
        assert strategy is not None  # therapist turns always carry one
        return strategy

    @property
    def response(self) -> str:
        """Task 4 reference: the target turn's utterances joined with a space."""
        return self.target.text

    @property
    def client_utterance(self) -> str:
        """The current client turn's utterances joined with spaces (no descriptions)."""
        return self.client_turn.text

    @property
    def client_text(self) -> str:
        """The ``Client utterance`` of the prompt: each utterance of the client turn followed by its
        description in brackets when it has one (none when descriptions are off)."""
        return self.client_turn.text_with_descriptions

    @property
    def clip_names(self) -> tuple[str, ...]:
        """Clip files of the current client turn, oldest first: the sample's video and audio."""
        return self.client_turn.clip_names


@dataclass(frozen=True)
class DroppedSample:
    """A therapist turn (or utterance) that yields no sample, and why; ids of its first utterance."""

    split: str
    dialogue_id: int
    utterance_id: int
    row: int
    reason: str


@dataclass
class SplitCounts:
    """Sizes of one split. ``samples + dropped`` equals ``therapist_turns`` for turn samples and
    ``therapist_utterances`` for per-utterance samples."""

    dialogues: int = 0
    utterances: int = 0
    client_utterances: int = 0
    therapist_utterances: int = 0
    client_turns: int = 0
    therapist_turns: int = 0
    utterances_with_description: int = 0
    dialogues_with_context: int = 0
    samples: int = 0
    dropped: int = 0


@dataclass
class MESCLoadReport:
    """What :func:`load_mesc` read, rebuilt and dropped. Counts and identifiers only, never text.

    ``descriptions`` and ``problem_situation`` say, per split, whether its samples carry them (after
    resolving ``"auto"``); ``split_has_context`` whether every dialogue of the split came from a
    split file (val/test always, train only with a ``train.json`` that matches all of it).
    """

    data_dir: str
    split_files: dict[str, str] = field(default_factory=dict)
    counts: dict[str, SplitCounts] = field(default_factory=dict)
    dropped: list[DroppedSample] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    strategy_case_normalised: int = 0
    sample_unit: str = "turn"
    history_length: int | None = None
    history_unit: str = "exchanges"
    split_has_context: dict[str, bool] = field(default_factory=dict)
    descriptions: dict[str, bool] = field(default_factory=dict)
    problem_situation: dict[str, bool] = field(default_factory=dict)

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
            "sample_unit": self.sample_unit,
            "history_length": self.history_length,
            "history_unit": self.history_unit,
            "split_has_context": dict(self.split_has_context),
            "descriptions": dict(self.descriptions),
            "problem_situation": dict(self.problem_situation),
            "counts": {split: vars(counts).copy() for split, counts in self.counts.items()},
            "dropped_by_reason": self.dropped_by_reason(),
            "dropped": [vars(item).copy() for item in self.dropped],
            "unmatched": list(self.unmatched),
            "ambiguous": list(self.ambiguous),
            "strategy_case_normalised": self.strategy_case_normalised,
        }

    def summary(self) -> str:
        """A short table for logs."""
        length = "all" if self.history_length is None else f"{self.history_length} {self.history_unit}"
        lines = [f"MESC from {self.data_dir} (sample_unit={self.sample_unit}, history={length})"]
        if self.sample_unit == "utterance":
            lines.append(f"  WARNING {PER_UTTERANCE_WARNING}")
        for name, per_split in (
            ("descriptions", self.descriptions),
            ("problem/situation", self.problem_situation),
        ):
            on = [split for split, value in per_split.items() if value]
            lines.append(f"  {name}: {', '.join(on) if on else 'off'}")
        lacking = [split for split, has in self.split_has_context.items() if not has]
        if lacking:
            lines.append(
                f"  no split-file context (descriptions, problem, situation) for: {', '.join(lacking)}"
                f" (train gets it from {SPLIT_FILES['train']} in the data folder)"
            )
        header = (
            f"  {'split':<6}{'dialogues':>10}{'utterances':>11}{'client':>8}{'therapist':>10}"
            f"{'t. turns':>9}{'file desc':>10}{'samples':>9}{'dropped':>9}"
        )
        lines.append(header)
        for split, c in self.counts.items():
            lines.append(
                f"  {split:<6}{c.dialogues:>10,}{c.utterances:>11,}{c.client_utterances:>8,}"
                f"{c.therapist_utterances:>10,}{c.therapist_turns:>9,}{c.utterances_with_description:>10,}"
                f"{c.samples:>9,}{c.dropped:>9,}"
            )
        for split, reasons in self.dropped_by_reason().items():
            for reason, n in reasons.items():
                lines.append(f"  dropped from {split}: {n}: {reason}")
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


def merge_turns(utterances: Iterable[Utterance]) -> tuple[Turn, ...]:
    """Group consecutive utterances of the same speaker into :class:`Turn` s, in order."""
    runs: list[list[Utterance]] = []
    for utterance in utterances:
        if runs and runs[-1][0].speaker == utterance.speaker:
            runs[-1].append(utterance)
        else:
            runs.append([utterance])
    return tuple(Turn(run[0].speaker, tuple(run)) for run in runs)


def format_history_turn(turn: Turn, with_description: bool = True) -> str:
    """One history turn as text for the conversation compressor or the text-mode prompt (paper 3.2:
    "U_i includes role information, utterance content, emotional labels, and therapist strategy
    labels").

    Format (one line; the compressor appends its own ``<MEM>`` token)::

        Client (emotion: sadness): <utterance> <utterance> ...
        Therapist (emotion: neutral; strategy: Open question): <utterance> ...

    The labels are the turn's (most frequent of its run). With ``with_description``, each
    utterance that has a description is followed by `` [Description: <text>]``. Client turns carry
    no strategy.
    """
    tags = f"emotion: {turn.emotion}"
    if turn.strategy is not None:
        tags += f"; strategy: {turn.strategy}"
    text = turn.text_with_descriptions if with_description else turn.text
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


def read_mesc_csv(path: str | Path) -> tuple[list[tuple[Utterance, ...]], int]:
    """Read and check ``MESC.csv``; return its dialogues (utterances in order) and how many strategy
    spellings were normalised for case.

    Checks: the ten columns, speakers, emotions, strategies (see module docstring), integer ids,
    timestamps with ``EndTime > StartTime``, non-empty utterances, and that each dialogue's rows are
    contiguous with ``Utterance_ID`` counting 0, 1, 2, ... Every error names the file and line.
    """
    path = Path(path)
    dialogues: list[list[Utterance]] = []
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
            utterance = Utterance(
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
            dialogues[-1].append(utterance)
            row += 1
    if not dialogues:
        raise MESCFormatError(f"{path}: no data rows")
    return [tuple(utterances) for utterances in dialogues], normalised


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


def _matches(split_dialogue: SplitDialogue, utterances: Sequence[Utterance]) -> bool:
    return all(s.text.startswith(u.text) for s, u in zip(split_dialogue.utterances, utterances, strict=True))


def match_dialogues(
    split_dialogues: Sequence[SplitDialogue], csv_dialogues: Sequence[tuple[Utterance, ...]]
) -> dict[int, list[int]]:
    """For each split dialogue (by ``index``), the positions in ``csv_dialogues`` it matches.

    A match needs the same length, the same speakers in order, and every split text starting
    with the CSV utterance (stripped). Callers decide what zero or several matches mean.
    """
    by_signature: dict[tuple[str, ...], list[int]] = {}
    for position, utterances in enumerate(csv_dialogues):
        by_signature.setdefault(tuple(u.speaker for u in utterances), []).append(position)
    result: dict[int, list[int]] = {}
    for dialogue in split_dialogues:
        signature = tuple(u.speaker for u in dialogue.utterances)
        candidates = by_signature.get(signature, [])
        result[dialogue.index] = [p for p in candidates if _matches(dialogue, csv_dialogues[p])]
    return result


def _description(split_text: str, utterance: str) -> str | None:
    rest = split_text[len(utterance) :].lstrip(_DESCRIPTION_LEAD).strip()
    return rest or None


def _attach(
    utterances: tuple[Utterance, ...], split_dialogue: SplitDialogue, split_path: Path
) -> tuple[Utterance, ...]:
    """Utterances with descriptions from the split dialogue; labels must agree with the CSV."""
    out = []
    for j, (utterance, entry) in enumerate(zip(utterances, split_dialogue.utterances, strict=True)):
        if (entry.emotion, entry.strategy) != (utterance.emotion, utterance.strategy):
            raise MESCMatchError(
                f"{split_path} [{split_dialogue.index}].dialog[{j}] matches {CSV_NAME} line {utterance.line} "
                f"(Dialogue_ID {utterance.dialogue_id}) by text but its labels differ: "
                f"{entry.emotion}/{entry.strategy} vs {utterance.emotion}/{utterance.strategy}"
            )
        out.append(replace(utterance, description=_description(entry.text, utterance.text)))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Samples


def check_sample_options(sample_unit: str, history_length: int | None, history_unit: str) -> None:
    """Raise ValueError, naming the option, for a sample unit, history length or unit we do not know."""
    if sample_unit not in SAMPLE_UNITS:
        raise ValueError(f"sample_unit must be one of {', '.join(SAMPLE_UNITS)}, got {sample_unit!r}")
    if history_unit not in HISTORY_UNITS:
        raise ValueError(f"history_unit must be one of {', '.join(HISTORY_UNITS)}, got {history_unit!r}")
    if history_length is not None and (
        isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 0
    ):
        raise ValueError(f"history_length must be None (all) or an integer >= 0, got {history_length!r}")
    if sample_unit == "utterance" and history_length and history_unit != "utterances":
        raise ValueError(
            "sample_unit='utterance' builds histories of single utterances, so history_length counts "
            f"utterances there: set history_unit='utterances' (got {history_unit!r})"
        )


def cut_history(turns: Sequence[Turn], history_length: int | None, history_unit: str) -> tuple[Turn, ...]:
    """The history a sample keeps out of ``turns`` (oldest first), per the module docstring.

    ``exchanges``: the last ``2 * history_length`` turns (client/therapist pairs: the turn before
    the current client turn is a therapist turn, so the tail is made of whole pairs); ``turns``:
    the last ``history_length`` turns; ``utterances``: every utterance becomes its own one-utterance
    turn, then the last ``history_length`` are kept. None keeps all (still split into single
    utterances for ``utterances``).
    """
    entries = tuple(turns)
    if history_unit == "utterances":
        entries = tuple(Turn(u.speaker, (u,)) for turn in turns for u in turn.utterances)
    if history_length is None:
        return entries
    keep = 2 * history_length if history_unit == "exchanges" else history_length
    return entries[-keep:] if keep else ()


def _strip_descriptions(utterances: Iterable[Utterance]) -> tuple[Utterance, ...]:
    return tuple(replace(u, description=None) if u.description is not None else u for u in utterances)


def build_samples(
    dialogue: Dialogue,
    sample_unit: SampleUnit = "turn",
    history_length: int | None = None,
    history_unit: HistoryUnit = "exchanges",
    descriptions: bool = True,
    problem_situation: bool = True,
) -> tuple[list[Sample], list[DroppedSample]]:
    """The samples of ``dialogue`` (module docstring), and the therapist turns that yield none.

    sample_unit: ``turn`` (one sample per therapist turn) or ``utterance`` (one per therapist
        utterance; not comparable with paper table 4).
    history_length, history_unit: how much history to keep (module docstring; None keeps all).
    descriptions: keep the generated face/voice descriptions the dialogue carries.
    problem_situation: keep the dialogue's problem type and situation.
    """
    check_sample_options(sample_unit, history_length, history_unit)
    utterances = dialogue.utterances if descriptions else _strip_descriptions(dialogue.utterances)
    common = {
        "split": dialogue.split,
        "dialogue_id": dialogue.dialogue_id,
        "problem_type": dialogue.problem_type if problem_situation else None,
        "situation": dialogue.situation if problem_situation else None,
        "unit": sample_unit,
    }
    samples: list[Sample] = []
    dropped: list[DroppedSample] = []

    def drop(first: Utterance) -> None:
        dropped.append(
            DroppedSample(dialogue.split, dialogue.dialogue_id, first.utterance_id, first.row, NO_CLIENT_TURN)
        )

    if sample_unit == "turn":
        turns = merge_turns(utterances)
        for i, turn in enumerate(turns):
            if turn.is_client:
                continue
            if i == 0:  # turns alternate speakers: only an opening turn has no client turn before it
                drop(turn.utterances[0])
                continue
            history = cut_history(turns[: i - 1], history_length, history_unit)
            samples.append(Sample(target=turn, client_turn=turns[i - 1], history=history, **common))
        return samples, dropped

    last_client = -1  # index of the most recent client utterance
    run_start = -1  # first index of the client run ending at last_client
    for t, utterance in enumerate(utterances):
        if utterance.is_client:
            if t == 0 or not utterances[t - 1].is_client:
                run_start = t
            last_client = t
            continue
        if last_client < 0:
            drop(utterance)
            continue
        # Everything before the client run, then the therapist's reply so far (the leak).
        earlier = utterances[:run_start] + utterances[last_client + 1 : t]
        history = cut_history([Turn(u.speaker, (u,)) for u in earlier], history_length, "utterances")
        client_turn = Turn(labels.CLIENT, utterances[run_start : last_client + 1])
        samples.append(
            Sample(
                target=Turn(utterance.speaker, (utterance,)),
                client_turn=client_turn,
                history=history,
                **common,
            )
        )
    return samples, dropped


# --------------------------------------------------------------------------------------------
# Which context every split gets


def _check_context_value(name: str, value: Any) -> None:
    if not (value is True or value is False or value == "auto"):
        raise ValueError(f"{name} must be auto, true or false, got {value!r}")


def _context_error(asked: Sequence[str], data_dir: Path, why: str) -> MESCContextError:
    requests = " and ".join(f"{name}=true" for name in asked)
    names = " and ".join(asked)
    return MESCContextError(
        f"{requests} {'ask' if len(asked) > 1 else 'asks'} for context that only the split files carry, "
        f"but {why}: train prompts would lack what val/test prompts have. Put the official MESC "
        f"train.json in {data_dir}, set {names} to auto (on only when every split has it) or false, or "
        "set allow_eval_only_context=true to use it on val/test only."
    )


def check_context_options(
    data_dir: str | Path,
    descriptions: ContextOption = "auto",
    problem_situation: ContextOption = "auto",
    allow_eval_only_context: bool = False,
) -> None:
    """Fail before anything loads when ``True`` asks for context the train split cannot have.

    Only the presence of ``train.json`` is checked here (cheap, no parsing); :func:`load_mesc`
    also checks, after matching, that it covers every train dialogue.
    """
    _check_context_value("descriptions", descriptions)
    _check_context_value("problem_situation", problem_situation)
    asked = [
        n for n, v in (("descriptions", descriptions), ("problem_situation", problem_situation)) if v is True
    ]
    if not asked or allow_eval_only_context:
        return
    data_dir = Path(data_dir)
    train_path = data_dir / SPLIT_FILES["train"]
    if not train_path.is_file():
        raise _context_error(asked, data_dir, f"{train_path} is missing")


def _resolve_context(
    name: str, value: ContextOption, has: dict[str, bool], allow: bool, data_dir: Path, counts: dict[str, int]
) -> dict[str, bool]:
    """Per split, whether its samples carry this context (module docstring, "Context")."""
    if value is False:
        return dict.fromkeys(has, False)
    if value == "auto":
        return dict.fromkeys(has, all(has.values()))
    missing = [split for split, ok in has.items() if not ok]
    if missing and not allow:
        why = "; ".join(
            f"{counts[split]} {split} dialogue(s) are not in {data_dir / SPLIT_FILES[split]}"
            for split in missing
        )
        raise _context_error([name], data_dir, why)
    return dict(has)


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
            utterances = _attach(csv_dialogues[position], dialogue, split_path)
            assigned[split].append(
                Dialogue(
                    utterances[0].dialogue_id,
                    split,
                    utterances,
                    dialogue.problem_type,
                    dialogue.situation,
                    split_path.name,
                )
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
    for position, utterances in enumerate(csv_dialogues):
        if position in claimed:
            continue
        context = train_context.get(position)
        if context is None:
            assigned["train"].append(Dialogue(utterances[0].dialogue_id, "train", utterances))
        else:
            split_dialogue, path = context
            utterances = _attach(utterances, split_dialogue, path)
            assigned["train"].append(
                Dialogue(
                    utterances[0].dialogue_id,
                    "train",
                    utterances,
                    split_dialogue.problem_type,
                    split_dialogue.situation,
                    path.name,
                )
            )

    dialogues = {
        split: tuple(sorted(items, key=lambda d: d.dialogue_id)) for split, items in assigned.items()
    }
    for split, items in dialogues.items():
        counts = SplitCounts(dialogues=len(items))
        for dialogue in items:
            turns = dialogue.turns
            counts.utterances += len(dialogue.utterances)
            counts.client_utterances += sum(u.is_client for u in dialogue.utterances)
            counts.therapist_utterances += sum(u.is_therapist for u in dialogue.utterances)
            counts.client_turns += sum(t.is_client for t in turns)
            counts.therapist_turns += sum(t.is_therapist for t in turns)
            counts.utterances_with_description += sum(u.description is not None for u in dialogue.utterances)
            counts.dialogues_with_context += (
                dialogue.problem_type is not None or dialogue.situation is not None
            )
        report.counts[split] = counts
        report.split_has_context[split] = all(d.split_file is not None for d in items)
    return dialogues, report


def load_mesc(
    data_dir: str | Path,
    *,
    sample_unit: SampleUnit = "turn",
    history_length: int | None = None,
    history_unit: HistoryUnit = "exchanges",
    descriptions: ContextOption = "auto",
    problem_situation: ContextOption = "auto",
    allow_eval_only_context: bool = False,
    strict: bool = True,
) -> MESCData:
    """Read the MESC annotations in ``data_dir`` and build the samples of every split.

    data_dir: folder with ``MESC.csv``, ``val.json``, ``test.json`` (and optionally ``train.json``).
    sample_unit: ``turn`` (default; one sample per therapist turn) or ``utterance`` (not comparable
        with paper table 4).
    history_length, history_unit: history kept per sample, e.g. 5 ``exchanges`` (paper table 7:
        0, 5, 9, all); None keeps all.
    descriptions, problem_situation: ``auto`` (on when every split has them), True or False; see
        the module docstring. True without train context raises :class:`MESCContextError` (before
        reading anything when ``train.json`` is missing) unless ``allow_eval_only_context``.
    strict: raise when val/test dialogues cannot be matched one-to-one to the CSV.
    """
    check_sample_options(sample_unit, history_length, history_unit)
    check_context_options(data_dir, descriptions, problem_situation, allow_eval_only_context)
    dialogues, report = load_dialogues(data_dir, strict=strict)
    report.sample_unit, report.history_length, report.history_unit = sample_unit, history_length, history_unit
    unmatched = {split: sum(d.split_file is None for d in items) for split, items in dialogues.items()}
    for name, value in (("descriptions", descriptions), ("problem_situation", problem_situation)):
        resolved = _resolve_context(
            name, value, report.split_has_context, allow_eval_only_context, Path(data_dir), unmatched
        )
        setattr(report, name, resolved)
    samples: dict[str, tuple[Sample, ...]] = {}
    for split, items in dialogues.items():
        built: list[Sample] = []
        for dialogue in items:
            new, dropped = build_samples(
                dialogue,
                sample_unit=sample_unit,
                history_length=history_length,
                history_unit=history_unit,
                descriptions=report.descriptions[split],
                problem_situation=report.problem_situation[split],
            )
            built.extend(new)
            report.dropped.extend(dropped)
            report.counts[split].dropped += len(dropped)
        report.counts[split].samples = len(built)
        samples[split] = tuple(built)
    return MESCData(dialogues=dialogues, samples=samples, report=report)
