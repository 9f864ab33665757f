"""The user messages the LLM reads: the MESC prompt of paper figure 4 and a DFEW recognition prompt.

MESC (paper figure 4, appendix A.1): ``[CONTEXT]`` (problem, situation), ``[CURRENT CONTEXT]``
(``Video: <video>``, ``Audio: <audio>``, ``Chat history: <history>``, the client utterance), the
instruction with its four steps, and ``[OUTPUT FORMAT]``. The three placeholders are always
written, even when a modality is absent: the fused model replaces each with its projected
features, a zero-length block for an absent modality, so the text the LLM reads is the same in
every setting.

Where the extracted paper text is ambiguous we chose as follows (the wording is otherwise the
figure's):

* The figure's line ``History chat information above`` in ``[CONTEXT]`` is kept verbatim: it is
  part of the figure (the authors' code has a similar line) and the instruction refers to
  ``[CONTEXT]`` as "the history of the current conversation".
* The extraction puts a blank line between every line and inlines the Step 2 list; we write one
  item per line, the Step 2 bullets (``- Client's emotion: ...``) and the strategy guide on their
  own lines.
* The guide's ``*Guide:*``, ``*Advisement:*`` ... asterisks are italics of the typeset figure
  (inconsistently applied: "Communication Skills" has none); they are dropped.
* ``{problem_type}``/``{situation}`` are left empty when unknown or switched off: the line stays,
  with nothing after the colon. MESC train dialogues have them only with ``train.json``, so by
  default (``problem_situation: auto``) every split leaves them empty and train and eval prompts
  keep the same sections (``docs/design/mesc-samples.md``).

Beyond the paper, ``rationale=True`` appends :data:`RATIONALE_INSTRUCTION` after the four
``[OUTPUT FORMAT]`` lines, as the prompt's last line: it asks for one ``Rationale: ...`` line
*before* the four answer lines (the rationale reward, ``multimood.rewards.rationale``). It is for
RL stages, where the model is only asked for it: MESC has no reference rationales, so the
supervised answer stays the four lines.
"""

from __future__ import annotations

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, VIDEO_TOKEN
from multimood.data.labels import DFEW_LABELS

# Label lists exactly as the figure writes them (its order, its spellings).
PROMPT_EMOTIONS = "anger, sadness, disgust, depression, neutral, joy, fear"
PROMPT_STRATEGIES = (
    "open question, approval, self-disclosure, restatement, interpretation, advisement, "
    "communication skills, structuring the therapy, guiding the pace and depth, others"
)

CONTEXT_HEADER = "[CONTEXT]"
CURRENT_CONTEXT_HEADER = "[CURRENT CONTEXT]"
OUTPUT_FORMAT_HEADER = "[OUTPUT FORMAT]"
HISTORY_ABOVE_LINE = "History chat information above"

INSTRUCTION = "\n".join(
    [
        "The [CONTEXT] is the history of the current conversation between 'Client' and 'Therapist'. "
        "[CURRENT CONTEXT] is the current 'Client' turn.",
        "Now, as the 'Therapist', predict the Client's emotion, Therapist's emotion, and strategy, "
        "then craft an empathy response. Follow these steps:",
        "Step 1: Understand the context and conversation content.",
        "Step 2: Predict and justify:",
        f"- Client's emotion: ({PROMPT_EMOTIONS}).",
        f"- Therapist's emotion: ({PROMPT_EMOTIONS}).",
        f"- Therapist's strategy: ({PROMPT_STRATEGIES}).",
        "Guide: Communication Skills: Small talk and body language; Advisement: Guidance or solutions; "
        "Structuring: Set therapy goals; Guiding: Regulate conversation flow; Others: Other strategies.",
        "Step 3: Craft an empathy response using Therapist's emotion and strategy, aligning with "
        "Client's perspective, avoiding negative triggers, and promoting well-being.",
        "Step 4: Revise the response, avoid hurting feelings, and consider response impact.",
    ]
)

# The answer's field names, in order (paper figure 4, [OUTPUT FORMAT]); multimood.data.answer writes
# and reads them.
OUTPUT_FIELDS: tuple[str, ...] = (
    "Client's emotion",
    "Therapist's emotion",
    "Therapist's strategy",
    "Therapist's response",
)
OUTPUT_FORMAT = "\n".join([OUTPUT_FORMAT_HEADER, *(f"{name}:" for name in OUTPUT_FIELDS)])

# The optional rationale line (beyond the paper; the rationale reward reads it). It comes after the
# four lines of [OUTPUT FORMAT] in the prompt ("these four lines") and before them in the answer.
RATIONALE_FIELD = "Rationale"
RATIONALE_INSTRUCTION = (
    f"Before these four lines, write one line '{RATIONALE_FIELD}: <one sentence on what in the client's "
    "words, face and voice shows their emotion>'."
)


def _line(name: str, value: str | None) -> str:
    value = " ".join((value or "").split())  # one line: the prompt's structure must not move
    return f"{name}: {value}" if value else f"{name}:"


def build_mesc_prompt(
    client_utterance: str,
    problem_type: str | None = None,
    situation: str | None = None,
    rationale: bool = False,
) -> str:
    """The user message of paper figure 4 for one sample.

    client_utterance: the current client turn's text (``Sample.client_text``); must not be empty.
    problem_type, situation: the dialogue's context from the split files; None or empty leaves the
    line empty after the colon.
    rationale: append :data:`RATIONALE_INSTRUCTION` as the last line (after ``[OUTPUT FORMAT]``).

    The ``<video>``, ``<audio>`` and ``<history>`` placeholders are always present.
    """
    if not client_utterance or not client_utterance.strip():
        raise ValueError("client_utterance must not be empty")
    return "\n".join(
        [
            CONTEXT_HEADER,
            _line("Problem", problem_type),
            _line("Situation", situation),
            HISTORY_ABOVE_LINE,
            CURRENT_CONTEXT_HEADER,
            f"Video: {VIDEO_TOKEN}",
            f"Audio: {AUDIO_TOKEN}",
            f"Chat history: {HISTORY_TOKEN}",
            _line("Client utterance", client_utterance),
            INSTRUCTION,
            OUTPUT_FORMAT,
            *([RATIONALE_INSTRUCTION] if rationale else []),
        ]
    )


# Stage B with descriptions as targets: the media and one instruction; the answer is the generated
# face/voice description of the clips. Neither the paper nor the authors' code gives an alignment
# prompt; VideoLLaMA2's alignment stage pairs the media with a short instruction and the caption as
# the answer, and this follows it. No history, no client words: the description must come from the
# media.
DESCRIPTION_PROMPT = "\n".join(
    [
        f"Video: {VIDEO_TOKEN}",
        f"Audio: {AUDIO_TOKEN}",
        "Describe the client's facial expression and voice in this clip.",
    ]
)


def build_description_prompt() -> str:
    """The user message of stage B when the target is the clips' face/voice descriptions."""
    return DESCRIPTION_PROMPT


# DFEW (paper section 4.1, table 3): emotion recognition from video alone, one of the 7 classes.
DFEW_ANSWER_FIELD = "Emotion"
DFEW_PROMPT = "\n".join(
    [
        f"Video: {VIDEO_TOKEN}",
        "Watch the person in the video and recognise the emotion their face expresses.",
        f"Answer with exactly one of: {', '.join(DFEW_LABELS)}.",
        OUTPUT_FORMAT_HEADER,
        f"{DFEW_ANSWER_FIELD}:",
    ]
)


def build_dfew_prompt() -> str:
    """The user message for DFEW emotion recognition (video only; the answer is ``Emotion: <class>``)."""
    return DFEW_PROMPT
