"""The MESC prompt follows paper figure 4 section by section; the DFEW prompt asks for one class."""

from __future__ import annotations

import pytest

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, PLACEHOLDER_TOKENS, VIDEO_TOKEN
from multimood.data import labels
from multimood.data.answer import parse_answer
from multimood.data.prompt import (
    PROMPT_EMOTIONS,
    PROMPT_STRATEGIES,
    RATIONALE_INSTRUCTION,
    build_dfew_prompt,
    build_mesc_prompt,
)

# Figure 4 of the paper, written out here independently of the module (one item per line).
FIGURE_4_INSTRUCTION = [
    "The [CONTEXT] is the history of the current conversation between 'Client' and 'Therapist'. "
    "[CURRENT CONTEXT] is the current 'Client' turn.",
    "Now, as the 'Therapist', predict the Client's emotion, Therapist's emotion, and strategy, then craft an "
    "empathy response. Follow these steps:",
    "Step 1: Understand the context and conversation content.",
    "Step 2: Predict and justify:",
    "- Client's emotion: (anger, sadness, disgust, depression, neutral, joy, fear).",
    "- Therapist's emotion: (anger, sadness, disgust, depression, neutral, joy, fear).",
    "- Therapist's strategy: (open question, approval, self-disclosure, restatement, interpretation, advisement, "
    "communication skills, structuring the therapy, guiding the pace and depth, others).",
    "Guide: Communication Skills: Small talk and body language; Advisement: Guidance or solutions; "
    "Structuring: Set therapy goals; Guiding: Regulate conversation flow; Others: Other strategies.",
    "Step 3: Craft an empathy response using Therapist's emotion and strategy, aligning with Client's "
    "perspective, avoiding negative triggers, and promoting well-being.",
    "Step 4: Revise the response, avoid hurting feelings, and consider response impact.",
]
FIGURE_4_OUTPUT = [
    "[OUTPUT FORMAT]",
    "Client's emotion:",
    "Therapist's emotion:",
    "Therapist's strategy:",
    "Therapist's response:",
]


@pytest.fixture
def lines() -> list[str]:
    return build_mesc_prompt(
        "I feel lost.", problem_type="Occupational burnout", situation="Work is too much."
    ).split("\n")


def test_context_section(lines: list[str]) -> None:
    assert lines[:4] == [
        "[CONTEXT]",
        "Problem: Occupational burnout",
        "Situation: Work is too much.",
        "History chat information above",
    ]


def test_current_context_section(lines: list[str]) -> None:
    assert lines[4:9] == [
        "[CURRENT CONTEXT]",
        f"Video: {VIDEO_TOKEN}",
        f"Audio: {AUDIO_TOKEN}",
        f"Chat history: {HISTORY_TOKEN}",
        "Client utterance: I feel lost.",
    ]
    assert (VIDEO_TOKEN, AUDIO_TOKEN, HISTORY_TOKEN) == ("<video>", "<audio>", "<history>")


def test_instruction_and_steps(lines: list[str]) -> None:
    assert lines[9 : 9 + len(FIGURE_4_INSTRUCTION)] == FIGURE_4_INSTRUCTION


def test_output_format_section(lines: list[str]) -> None:
    assert lines[-len(FIGURE_4_OUTPUT) :] == FIGURE_4_OUTPUT
    assert len(lines) == 9 + len(FIGURE_4_INSTRUCTION) + len(FIGURE_4_OUTPUT)


def test_placeholders_always_present_once() -> None:
    for prompt in (build_mesc_prompt("Hi."), build_mesc_prompt("Hi.", "P", "S")):
        assert all(prompt.count(token) == 1 for token in PLACEHOLDER_TOKENS)


def test_unknown_context_leaves_the_lines_empty() -> None:
    lines = build_mesc_prompt("Hi.", problem_type=None, situation="  ").split("\n")
    assert lines[1:3] == ["Problem:", "Situation:"]


def test_client_utterance_stays_on_one_line() -> None:
    prompt = build_mesc_prompt("First part.\nSecond   part.")
    assert "Client utterance: First part. Second part." in prompt.split("\n")


def test_empty_client_utterance_is_an_error() -> None:
    with pytest.raises(ValueError, match="client_utterance"):
        build_mesc_prompt("  ")


def test_prompt_label_lists_are_the_vocabularies() -> None:
    assert sorted(PROMPT_EMOTIONS.split(", ")) == sorted(labels.EMOTIONS)
    # Every strategy spelling the prompt uses is read back by the answer parser as its label.
    spellings = PROMPT_STRATEGIES.split(", ")
    parsed = [parse_answer(f"Therapist's strategy: {s}").strategy for s in spellings]
    assert parsed == list(labels.STRATEGIES)


def test_dfew_prompt_is_video_only_and_lists_the_classes() -> None:
    prompt = build_dfew_prompt()
    assert prompt.count(VIDEO_TOKEN) == 1
    assert AUDIO_TOKEN not in prompt and HISTORY_TOKEN not in prompt
    assert all(label in prompt for label in labels.DFEW_LABELS)
    assert prompt.split("\n")[-2:] == ["[OUTPUT FORMAT]", "Emotion:"]


def test_the_rationale_instruction_is_the_last_line_after_the_output_format() -> None:
    plain = build_mesc_prompt("I feel lost.", "P", "S")
    asked = build_mesc_prompt("I feel lost.", "P", "S", rationale=True).split("\n")
    assert asked[:-1] == plain.split("\n")  # nothing else moves
    assert asked[-1] == RATIONALE_INSTRUCTION
    assert asked[-1].startswith("Before these four lines, write one line 'Rationale: ")
    assert asked[-1 - len(FIGURE_4_OUTPUT) : -1] == FIGURE_4_OUTPUT  # "these four lines" precede it
