"""The assistant's answer: write it (training targets) and read it back (evaluation).

MESC answers are exactly four lines (the [OUTPUT FORMAT] of paper figure 4)::

    Client's emotion: <emotion>
    Therapist's emotion: <emotion>
    Therapist's strategy: <strategy>
    Therapist's response: <text>

:func:`parse_answer` is tolerant of what generation produces: case, spacing, markdown bold or
bullets around the field names, text before and after, fields in another order, the value on the
next line, and the strategy spellings the prompt itself uses ("open question(s)", "structuring",
"guiding the pace and depth", ...). It is strict about labels: a value that is not one of the
vocabulary's labels or its listed spellings is a failure for that field, never mapped to the
nearest label. A label followed by a justification ("sadness (she cries)", "Approval - she did
well") is accepted when the label is followed by ``(``, ``[``, ``-``, ``:``, ``;`` or ``.``; a
comma, a slash or another word after it ("sadness, depression", "anger or fear") is a failure.
The response is the text after its field name up to the next field name, cut at the first blank
line (what follows is commentary), or the quoted text when it is written in quotes that close at
the end of a line.
A field written more than once (an echoed template, a justification and then the answer) takes
the one label its occurrences give; occurrences holding no label are ignored, and two different
labels are a failure (conflicting).
``Rationale: ...`` lines (the optional rationale the rationale reward asks for,
:data:`~multimood.data.prompt.RATIONALE_INSTRUCTION`) are not part of the answer: they are blanked
before parsing, so a rationale never becomes part of the response or a field's value, wherever it
is written (first as asked, or after the response).

A failed field is a wrong prediction, never a dropped sample: :class:`ParsedAnswer` gives each
label as a class index with ``-1`` for a failure (``*_index`` properties), and
:func:`parse_failure_rate` gives the share of answers where a field failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from multimood.data.labels import DFEW_LABELS, EMOTIONS, STRATEGIES, canonical_emotion, canonical_strategy
from multimood.data.prompt import DFEW_ANSWER_FIELD, OUTPUT_FIELDS, RATIONALE_FIELD

MISSING = -1  # class index of a field that did not parse: never equal to a true label

FIELDS: tuple[str, ...] = ("client_emotion", "therapist_emotion", "strategy", "response")


def _key(text: str) -> str:
    """Normalised form used to compare labels: lowercase, hyphens as spaces, single spaces."""
    return " ".join(text.lower().replace("-", " ").replace("_", " ").split())


# Spellings accepted for each strategy, beyond the canonical one (case and spacing are free).
# These are the prompt's own words (figure 4 lists "open question", "structuring the therapy",
# "guiding the pace and depth", "others", and its guide says "Structuring:", "Guiding:").
STRATEGY_ALIASES: dict[str, tuple[str, ...]] = {
    "Open question": ("open question", "open questions"),
    "Approval": ("approval",),
    "Self-disclosure": ("self-disclosure",),
    "Restatement": ("restatement",),
    "Interpretation": ("interpretation",),
    "Advisement": ("advisement",),
    "Communication Skills": ("communication skills", "communication skill"),
    "Structuring the therapy": ("structuring the therapy", "structuring"),
    "Guiding the Pace and Depth of the Conversation": (
        "guiding the pace and depth of the conversation",
        "guiding the pace and depth",
        "guiding",
    ),
    "Others": ("others", "other"),
}
assert set(STRATEGY_ALIASES) == set(STRATEGIES)


@dataclass(frozen=True)
class _Vocabulary:
    """Accepted spellings (normalised with :func:`_key`) -> label, and one regex per spelling,
    longest first, matching its words with any spaces/hyphens between them."""

    keys: Mapping[str, str]
    patterns: tuple[tuple[re.Pattern[str], str], ...]

    @classmethod
    def of(cls, spellings: Mapping[str, Iterable[str]]) -> _Vocabulary:
        keys = {_key(s): label for label, options in spellings.items() for s in (label, *options)}
        patterns = []
        for spelling in sorted(keys, key=len, reverse=True):
            words = r"[\s\-]+".join(re.escape(word) for word in spelling.split())
            patterns.append((re.compile(rf"^{words}(?![\w-])", re.IGNORECASE), keys[spelling]))
        return cls(keys, tuple(patterns))


_EMOTIONS = _Vocabulary.of({e: () for e in EMOTIONS})
_STRATEGIES = _Vocabulary.of(STRATEGY_ALIASES)
_DFEW = _Vocabulary.of({label: () for label in DFEW_LABELS})

# A field name as written by a model: optional bullet/heading/markdown, "Client's emotion" with
# any apostrophe (or none), optional closing markdown, then a colon.
_FIELD_NAME = re.compile(
    r"(?P<lead>^|(?<=[^\w'’]))"
    r"(?:[#>*+•-]+[ \t]*)?(?:\*\*|__|\*|_)?[ \t]*"
    r"(?P<who>client|therapist)(?:['’`]?s)?[ \t]+(?P<what>emotion|strategy|response)"
    r"[ \t]*(?:\*\*|__|\*|_)?[ \t]*[:：]",
    re.IGNORECASE,
)
_FIELD_OF = {
    ("client", "emotion"): "client_emotion",
    ("therapist", "emotion"): "therapist_emotion",
    ("therapist", "strategy"): "strategy",
    ("therapist", "response"): "response",
}
_DFEW_FIELD = re.compile(
    rf"(?:^|(?<=\W))(?:[#>*+•-]+[ \t]*)?(?:\*\*|__|\*|_)?[ \t]*{DFEW_ANSWER_FIELD}[ \t]*(?:\*\*|__|\*|_)?[ \t]*[:：]",
    re.IGNORECASE,
)
# Characters a model wraps a label in: markdown, quotes, brackets, trailing full stops.
_WRAP = " \t*_`'\"“”‘’«»<>[](){}"
_MARKDOWN = re.compile(r"\*\*|__|`")
# A response wholly in quotes on its own line(s): the closing quote ends a line.
_QUOTED = re.compile(r'^\s*["“](?P<quoted>[^"”]+)["”][ \t]*(?:\n|$)')
# A "Rationale:" line (optional bullet/heading and markdown around the name, any case); ``text`` is
# everything after the colon. multimood.rewards.rationale reads it; parse_answer blanks it.
RATIONALE_LINE = re.compile(
    rf"^[ \t]*(?:[#>*+•-]+[ \t]*)?(?:\*\*|__|\*|_)?[ \t]*{RATIONALE_FIELD}[ \t]*(?:\*\*|__|\*|_)?[ \t]*[:：]"
    r"(?P<text>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
_JUSTIFICATION = re.compile(r"^\s*(?:[(\[:;.]|[-–—](?:\s|$))")


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed MESC answer. A field that did not parse is None and has a reason in ``errors``."""

    client_emotion: str | None
    therapist_emotion: str | None
    strategy: str | None
    response: str | None
    errors: Mapping[str, str]

    @property
    def ok(self) -> bool:
        """All four fields parsed."""
        return not self.errors

    @property
    def reason(self) -> str:
        """Why parsing failed ('' when it did not): one ``field: reason`` per failed field."""
        return "; ".join(f"{name}: {why}" for name, why in self.errors.items())

    def failed(self, name: str) -> bool:
        """Whether field ``name`` (one of :data:`FIELDS`) failed."""
        if name not in FIELDS:
            raise KeyError(f"unknown answer field {name!r}; fields: {', '.join(FIELDS)}")
        return name in self.errors

    @property
    def client_emotion_index(self) -> int:
        """Index into ``labels.EMOTIONS``, or :data:`MISSING` (-1) when the field failed."""
        return label_index(self.client_emotion, EMOTIONS)

    @property
    def therapist_emotion_index(self) -> int:
        """Index into ``labels.EMOTIONS``, or :data:`MISSING` (-1) when the field failed."""
        return label_index(self.therapist_emotion, EMOTIONS)

    @property
    def strategy_index(self) -> int:
        """Index into ``labels.STRATEGIES``, or :data:`MISSING` (-1) when the field failed."""
        return label_index(self.strategy, STRATEGIES)


@dataclass(frozen=True)
class ParsedDFEWAnswer:
    """A parsed DFEW answer: the class name, its 0-based index (-1 on failure) and why it failed."""

    label: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def index(self) -> int:
        """0-based index into ``labels.DFEW_LABELS`` (official label minus 1), or -1."""
        return label_index(self.label, DFEW_LABELS)


def label_index(value: str | None, vocabulary: Sequence[str]) -> int:
    """Position of ``value`` in ``vocabulary``; :data:`MISSING` (-1) for None."""
    if value is None:
        return MISSING
    return list(vocabulary).index(value)


def format_answer(client_emotion: str, therapist_emotion: str, strategy: str, response: str) -> str:
    """The four-line training target (paper figure 4, [OUTPUT FORMAT]), labels in their canonical spelling.

    Labels must be exact MESC labels (emotions lowercase, strategies as in ``labels.STRATEGIES``,
    case aside); the response must be one non-empty line.
    """
    values = {}
    for name, value in (("client_emotion", client_emotion), ("therapist_emotion", therapist_emotion)):
        try:
            values[name] = canonical_emotion(value)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    try:
        canonical = canonical_strategy(strategy)
    except ValueError as err:
        raise ValueError(f"strategy: {err}") from None
    response = response.strip()
    if not response or "\n" in response or "\r" in response:
        raise ValueError("response must be one non-empty line")
    return "\n".join(
        f"{name}: {value}"
        for name, value in zip(
            OUTPUT_FIELDS,
            (values["client_emotion"], values["therapist_emotion"], canonical, response),
            strict=True,
        )
    )


def _read_label(segment: str, vocabulary: _Vocabulary) -> tuple[str | None, str]:
    """Read one label from the text after a field name: ``(label, "")`` or ``(None, why)``."""
    lines = [line for line in segment.splitlines() if line.strip(_WRAP + ".")]
    if not lines:
        return None, "missing"
    raw = _MARKDOWN.sub("", lines[0]).strip().strip(_WRAP).rstrip(".!").strip(_WRAP)
    if _key(raw) in vocabulary.keys:
        return vocabulary.keys[_key(raw)], ""
    # A label followed by a justification after a clear separator.
    for pattern, label in vocabulary.patterns:
        match = pattern.match(raw)
        if match and _JUSTIFICATION.match(raw[match.end() :]):
            return label, ""
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    return None, f"unknown label {shown!r}"


def _pick_label(segments: Sequence[str], vocabulary: _Vocabulary) -> tuple[str | None, str]:
    """One label from every occurrence of a field. Occurrences that hold no label (an echoed
    template, prose) are ignored when another gives a label; two different labels conflict."""
    seen: list[str] = []
    failures: list[str] = []
    for segment in segments:
        label, why = _read_label(segment, vocabulary)
        if label is not None:
            seen.append(label)
        elif why != "missing":
            failures.append(why)
    distinct = sorted(set(seen))
    if len(distinct) == 1:
        return distinct[0], ""
    if distinct:
        return None, f"conflicting values {', '.join(distinct)}"
    return None, failures[-1] if failures else "missing"


def _clean_response(segment: str) -> str:
    """The response text: its first paragraph (text after a blank line is commentary), without
    markdown emphasis; a response in quotes ends at the quote closing a line."""
    text = _MARKDOWN.sub("", segment).strip().strip("*_").strip()
    quoted = _QUOTED.match(text)
    if quoted:
        return quoted["quoted"].strip()
    return re.split(r"\n\s*\n", text, maxsplit=1)[0].strip()


def parse_answer(text: str) -> ParsedAnswer:
    """Read a generated MESC answer back into its four fields (see the module docstring)."""
    # Rationale lines are not answer text; blanking them (the line stays, empty) also ends a response
    # written before one, as a blank line does.
    text = RATIONALE_LINE.sub("", text or "")
    matches = list(_FIELD_NAME.finditer(text))
    found: dict[str, list[str]] = {name: [] for name in FIELDS}
    for i, match in enumerate(matches):
        name = _FIELD_OF.get((match["who"].lower(), match["what"].lower()))
        if name is None:
            continue  # e.g. "Client's strategy:": not a field of the answer
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        found[name].append(text[match.end() : end])

    values: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    vocabularies = {"client_emotion": _EMOTIONS, "therapist_emotion": _EMOTIONS, "strategy": _STRATEGIES}
    for name, vocabulary in vocabularies.items():
        values[name], why = _pick_label(found[name], vocabulary)
        if values[name] is None:
            errors[name] = why
    # The response runs from its field name to the next field name (or the end of the text); the
    # last non-empty one wins, so an echoed empty template before the answer does no harm.
    responses = [r for r in map(_clean_response, found["response"]) if r]
    values["response"] = responses[-1] if responses else None
    if values["response"] is None:
        errors["response"] = "missing"
    ordered_errors = {name: errors[name] for name in FIELDS if name in errors}
    return ParsedAnswer(
        client_emotion=values["client_emotion"],
        therapist_emotion=values["therapist_emotion"],
        strategy=values["strategy"],
        response=values["response"],
        errors=ordered_errors,
    )


def parse_failure_rate(answers: Iterable[ParsedAnswer | ParsedDFEWAnswer], field: str | None = None) -> float:
    """Share of answers that failed to parse: any field (``field=None``) or the given one.

    ``field`` is one of :data:`FIELDS` for MESC answers; DFEW answers have one field, so leave it
    None. An empty sequence gives 0.0.
    """
    answers = list(answers)
    if not answers:
        return 0.0
    failed = 0
    for answer in answers:
        if isinstance(answer, ParsedDFEWAnswer):
            if field is not None:
                raise ValueError("DFEW answers have a single field; call with field=None")
            failed += not answer.ok
        else:
            failed += (not answer.ok) if field is None else answer.failed(field)
    return failed / len(answers)


def format_dfew_answer(label: str | int) -> str:
    """``Emotion: <class>`` for a DFEW class name (any case) or 0-based class index."""
    if isinstance(label, int):
        if not 0 <= label < len(DFEW_LABELS):
            raise ValueError(f"DFEW class index {label} outside 0..{len(DFEW_LABELS) - 1}")
        name = DFEW_LABELS[label]
    else:
        name = _DFEW.keys.get(_key(label))
        if name is None:
            raise ValueError(f"{label!r} is not a DFEW class ({', '.join(DFEW_LABELS)})")
    return f"{DFEW_ANSWER_FIELD}: {name}"


def parse_dfew_answer(text: str) -> ParsedDFEWAnswer:
    """Read a DFEW answer: ``Emotion: <class>`` anywhere in the text, or the text being just a
    class name. The same label rules as MESC (case free, justification after a separator allowed,
    unknown words a failure; several ``Emotion:`` fields that disagree are a failure)."""
    text = text or ""
    segments = []
    matches = list(_DFEW_FIELD.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        segments.append(text[match.end() : end])
    if not segments:
        segments = [text]
    label, why = _pick_label(segments, _DFEW)
    return ParsedDFEWAnswer(label, why or None)
