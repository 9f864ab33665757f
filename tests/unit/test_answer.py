"""Answer format and tolerant parsing; failures are values (index -1), never dropped."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from multimood.data import labels
from multimood.data.answer import (
    FIELDS,
    MISSING,
    ParsedAnswer,
    format_answer,
    format_dfew_answer,
    parse_answer,
    parse_dfew_answer,
    parse_failure_rate,
)


def test_format_is_exactly_four_lines() -> None:
    text = format_answer("sadness", "neutral", "open question", "  How does that feel?  ")
    assert text == (
        "Client's emotion: sadness\n"
        "Therapist's emotion: neutral\n"
        "Therapist's strategy: Open question\n"
        "Therapist's response: How does that feel?"
    )


def test_round_trip_every_label_combination() -> None:
    for client, therapist, strategy in itertools.product(labels.EMOTIONS, labels.EMOTIONS, labels.STRATEGIES):
        parsed = parse_answer(format_answer(client, therapist, strategy, "I hear you."))
        assert parsed.ok, parsed.reason
        assert (parsed.client_emotion, parsed.therapist_emotion, parsed.strategy, parsed.response) == (
            client,
            therapist,
            strategy,
            "I hear you.",
        )
        assert parsed.client_emotion_index == labels.EMOTIONS.index(client)
        assert parsed.strategy_index == labels.STRATEGIES.index(strategy)


@pytest.mark.real_data
def test_round_trip_every_real_sample(real_mesc_dir: Path) -> None:
    from multimood.data.mesc import load_mesc

    # Merged therapist turns (the default samples) and single utterances (sample_unit="utterance").
    samples = [
        s
        for unit in ("turn", "utterance")
        for split in load_mesc(real_mesc_dir, sample_unit=unit, history_length=0).samples.values()
        for s in split
    ]
    mismatches = 0
    for s in samples:
        parsed = parse_answer(format_answer(s.client_emotion, s.therapist_emotion, s.strategy, s.response))
        expected = (s.client_emotion, s.therapist_emotion, s.strategy, s.response)
        mismatches += (
            parsed.client_emotion,
            parsed.therapist_emotion,
            parsed.strategy,
            parsed.response,
        ) != expected
    assert len(samples) == 4_620 + 10_086 and mismatches == 0  # a count: a failure prints no utterance


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # markdown bold, odd case and spacing, text before and after
        (
            "Sure, here is my analysis.\n\n**Client's emotion:** Sadness\n**Therapist's Emotion**:   NEUTRAL\n"
            "- Therapist's strategy: open questions\nTherapist's response: How are you?\n\nHope this helps!",
            ("sadness", "neutral", "Open question", "How are you?"),
        ),
        # fields in another order, justifications after a separator, prompt's short spellings
        (
            "Therapist's response: I see.\nTherapist's strategy: guiding the pace and depth\n"
            "Client's emotion: anger (she is shouting)\nTherapist's emotion: joy - relieved",
            ("anger", "joy", "Guiding the Pace and Depth of the Conversation", "I see."),
        ),
        # no apostrophe, curly apostrophe, value on the next line, "Structuring"
        (
            "Client emotion:\nfear\nTherapist’s emotion: depression.\nTherapists strategy: Structuring\n"
            "Therapist's response: Let's set a goal.",
            ("fear", "depression", "Structuring the therapy", "Let's set a goal."),
        ),
        # an echoed empty template before the answer, hyphen/space variants
        (
            "[OUTPUT FORMAT]\nClient's emotion:\nTherapist's emotion:\nTherapist's strategy:\nTherapist's response:\n"
            "Client's emotion: disgust\nTherapist's emotion: neutral\nTherapist's strategy: Self disclosure\n"
            'Therapist\'s response: "Me too, once."\nThat is my answer.',
            ("disgust", "neutral", "Self-disclosure", "Me too, once."),
        ),
        # all on one line, communication skill singular, others
        (
            "Client's emotion: joy Therapist's emotion: joy Therapist's strategy: Others Therapist's response: Great!",
            ("joy", "joy", "Others", "Great!"),
        ),
        (
            "Client's emotion: `neutral`\nTherapist's emotion: 'neutral'\nTherapist's strategy: Communication skill\n"
            "Therapist's response: **Nice weather today.**",
            ("neutral", "neutral", "Communication Skills", "Nice weather today."),
        ),
        # a Step 2 justification that holds no clean label, then the answer: the answer wins
        (
            "Step 2: Client's emotion: the client seems sad because of the loss.\n[OUTPUT FORMAT]\n"
            "Client's emotion: sadness\nTherapist's emotion: sadness\nTherapist's strategy: Restatement\n"
            "Therapist's response: You miss her.",
            ("sadness", "sadness", "Restatement", "You miss her."),
        ),
    ],
)
def test_tolerant_parsing(text: str, expected: tuple[str, str, str, str]) -> None:
    parsed = parse_answer(text)
    assert parsed.ok, parsed.reason
    assert (parsed.client_emotion, parsed.therapist_emotion, parsed.strategy, parsed.response) == expected


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("", dict.fromkeys(FIELDS, "missing")),
        ("I cannot answer that.", dict.fromkeys(FIELDS, "missing")),
        (
            "Client's emotion: sad\nTherapist's emotion: happy\nTherapist's strategy: empathy\nTherapist's response: ok",
            {
                "client_emotion": "unknown label 'sad'",
                "therapist_emotion": "unknown label 'happy'",
                "strategy": "unknown label 'empathy'",
            },
        ),
        (
            "Client's emotion: anger or fear\nTherapist's emotion: joy, sadness\nTherapist's strategy: Guiding the pace\n"
            "Therapist's response: ok",
            {
                "client_emotion": "unknown label 'anger or fear'",
                "therapist_emotion": "unknown label 'joy, sadness'",
                "strategy": "unknown label 'Guiding the pace'",
            },
        ),
        (
            "Client's emotion: anger\nClient's emotion: joy\nTherapist's emotion: neutral\nTherapist's strategy: Approval\n"
            "Therapist's response:   ",
            {"client_emotion": "conflicting values anger, joy", "response": "missing"},
        ),
    ],
)
def test_parse_failures_say_why(text: str, errors: dict[str, str]) -> None:
    parsed = parse_answer(text)
    assert not parsed.ok
    assert dict(parsed.errors) == errors
    for name in FIELDS:
        assert parsed.failed(name) == (name in errors)
        if name in errors:
            assert getattr(parsed, name) is None
    assert parsed.reason.startswith(next(iter(errors)))


def test_failed_labels_are_index_minus_one() -> None:
    parsed = parse_answer("Therapist's strategy: Approval\nTherapist's response: Well done.")
    assert parsed.strategy_index == labels.STRATEGIES.index("Approval")
    assert parsed.client_emotion_index == MISSING == -1
    assert parsed.therapist_emotion_index == -1


def test_parse_failure_rate() -> None:
    good = parse_answer(format_answer("joy", "joy", "Approval", "Nice."))
    half = parse_answer("Client's emotion: joy\nTherapist's response: Nice.")
    bad = parse_answer("nothing")
    answers: list[ParsedAnswer] = [good, half, bad, good]
    assert parse_failure_rate(answers) == 0.5
    assert parse_failure_rate(answers, "client_emotion") == 0.25
    assert parse_failure_rate(answers, "strategy") == 0.5
    assert parse_failure_rate([]) == 0.0
    with pytest.raises(KeyError, match="unknown answer field"):
        parse_failure_rate(answers, "emotion")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sad", "joy", "Approval", "x"), "client_emotion"),
        (("joy", "joy", "Guiding the pace and depth", "x"), "strategy"),
        (("joy", "joy", "Approval", "  "), "one non-empty line"),
        (("joy", "joy", "Approval", "two\nlines"), "one non-empty line"),
    ],
)
def test_format_answer_rejects_bad_values(args: tuple[str, str, str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_answer(*args)


def test_dfew_format_and_round_trip() -> None:
    for index, label in enumerate(labels.DFEW_LABELS):
        assert format_dfew_answer(label.lower()) == f"Emotion: {label}" == format_dfew_answer(index)
        parsed = parse_dfew_answer(format_dfew_answer(label))
        assert parsed.ok and parsed.label == label and parsed.index == index
    with pytest.raises(ValueError, match="not a DFEW class"):
        format_dfew_answer("Contempt")
    with pytest.raises(ValueError, match="outside"):
        format_dfew_answer(7)


@pytest.mark.parametrize(
    ("text", "label", "error"),
    [
        ("happy", "Happy", None),
        ("The answer is:\n**Emotion:** surprise - raised eyebrows", "Surprise", None),
        ("emotion: FEAR.", "Fear", None),
        ("The person looks happy.", None, "unknown label 'The person looks happy'"),
        ("Emotion: contempt", None, "unknown label 'contempt'"),
        ("Emotion: happy\nEmotion: sad", None, "conflicting values Happy, Sad"),
        ("", None, "missing"),
    ],
)
def test_dfew_parsing(text: str, label: str | None, error: str | None) -> None:
    parsed = parse_dfew_answer(text)
    assert (parsed.label, parsed.error) == (label, error)
    assert parsed.index == (labels.DFEW_LABELS.index(label) if label else -1)


def test_dfew_failure_rate() -> None:
    answers = [parse_dfew_answer("Emotion: Sad"), parse_dfew_answer("no idea")]
    assert parse_failure_rate(answers) == 0.5
