"""Label vocabularies (read off the real MESC files; paper section 4.1 and figure 4) and their normalisation."""

from __future__ import annotations

# MESC emotions, lowercase as in MESC.csv, ordered by frequency in the corpus. Indices are the
# class ids used by metrics.
EMOTIONS: tuple[str, ...] = ("neutral", "depression", "anger", "disgust", "joy", "sadness", "fear")

# The 10 therapist strategies, spelled as in MESC.csv.
STRATEGIES: tuple[str, ...] = (
    "Open question",
    "Approval",
    "Self-disclosure",
    "Restatement",
    "Interpretation",
    "Advisement",
    "Communication Skills",
    "Structuring the therapy",
    "Guiding the Pace and Depth of the Conversation",
    "Others",
)

# Client rows carry this instead of a strategy.
UNDEFINED_STRATEGY = "undefined"

# DFEW classes in the official (1-indexed) split files: label k is DFEW_LABELS[k - 1].
DFEW_LABELS: tuple[str, ...] = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")

CLIENT = "Client"
THERAPIST = "Therapist"
SPEAKERS: tuple[str, ...] = (CLIENT, THERAPIST)

_EMOTION_BY_KEY = {e: e for e in EMOTIONS}
_STRATEGY_BY_KEY = {s.lower(): s for s in STRATEGIES}


def canonical_emotion(value: str) -> str:
    """Return the MESC emotion for ``value`` (case and surrounding space ignored); ValueError otherwise."""
    key = value.strip().lower()
    if key not in _EMOTION_BY_KEY:
        raise ValueError(f"unknown emotion {value!r}; expected one of {', '.join(EMOTIONS)}")
    return _EMOTION_BY_KEY[key]


def canonical_strategy(value: str) -> str:
    """Return the MESC strategy for ``value``, normalising case only (``open question`` -> ``Open question``).

    This is the strict form the data readers use; the tolerant reading of model outputs (the
    prompt's short spellings such as "guiding the pace and depth") lives in the answer parser.
    """
    key = value.strip().lower()
    if key not in _STRATEGY_BY_KEY:
        raise ValueError(f"unknown strategy {value!r}; expected one of {', '.join(STRATEGIES)}")
    return _STRATEGY_BY_KEY[key]
