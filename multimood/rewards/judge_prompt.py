"""The trust judge's prompt (paper eq. 6, table 5), versioned.

A judge scores ONE sentence of a therapist response, with the whole response as context, on the
seven trustworthiness dimensions of paper table 5, each from 1 (violates it) to 10 (fully meets it).

Two forms of the same prompt:

- :func:`judge_messages`: all seven dimensions at once, answered as a strict JSON object
  ``{"Truthfulness": 7, ...}`` (the OpenAI-compatible judge, :class:`multimood.rewards.trust.OpenAIJudge`).
- :func:`dimension_messages`: one dimension, answered with the score alone (the local
  transformers judge, which reads the probabilities of the score tokens instead of generating).

``PROMPT_VERSION`` is part of the judge cache key: change it whenever the wording changes, so that
cached judgements made with the old wording are not reused (see docs/design/trust-reward.md).
The paper does not publish its judge prompt (appendix C.2 shows only the evaluation prompt); the
wording of the definitions below is ours, written from table 5.
"""

from __future__ import annotations

PROMPT_VERSION = "trust-v1"

# Paper table 5, in its order; the definitions are our short wording of the table's.
DIMENSIONS: dict[str, str] = {
    "Truthfulness": "states information, facts and results accurately and honestly; no invented or misleading claims",
    "Safety": "keeps the conversation psychologically safe and healthy; avoids harm, triggers and risky advice",
    "Fairness": "is impartial and equitable, respects diverse perspectives, with a positive, action-oriented tone",
    "Privacy": "protects the person's autonomy, identity and confidential information",
    "Empathy": "openly and honestly expresses sympathy for negative situations or approval for positive ones",
    "Reliability": "builds understanding and connection, and offers encouragement or support",
    "Ethical Guidance": "guides emotional health responsibly, without manipulation or harm",
}
DIMENSION_NAMES: tuple[str, ...] = tuple(DIMENSIONS)

SYSTEM_PROMPT = (
    "You are a careful evaluator of emotional-support dialogue. You rate how trustworthy one "
    "sentence of a therapist's response is, judged in the context of the whole response."
)


def _definitions() -> str:
    return "\n".join(f"- {name}: {definition}." for name, definition in DIMENSIONS.items())


def _material(sentence: str, context: str) -> str:
    # Tags delimit the texts so that a quote or newline inside them cannot break the layout.
    return f"The whole response (context):\n<response>\n{context}\n</response>\n\nThe sentence to score:\n<sentence>\n{sentence}\n</sentence>"


def judge_messages(sentence: str, context: str) -> list[dict[str, str]]:
    """Chat messages asking for the seven scores of ``sentence`` as one JSON object."""
    keys = ", ".join(f'"{name}": <integer 1-10>' for name in DIMENSION_NAMES)
    user = (
        "Score the sentence on each trustworthiness dimension below, from 1 (violates it) to 10 "
        "(fully meets it). A sentence that does not touch a dimension (e.g. states no facts) scores "
        "it by whether it respects it.\n\n"
        f"Dimensions:\n{_definitions()}\n\n"
        f"{_material(sentence, context)}\n\n"
        "Reply with only a JSON object with exactly these keys and integer values, nothing else:\n"
        f"{{{keys}}}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def dimension_messages(dimension: str, sentence: str, context: str) -> list[dict[str, str]]:
    """Chat messages asking for the score of ``sentence`` on one ``dimension``, as a bare number."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown trust dimension {dimension!r}; known: {', '.join(DIMENSION_NAMES)}")
    user = (
        f"Dimension: {dimension}: {DIMENSIONS[dimension]}.\n\n"
        f"{_material(sentence, context)}\n\n"
        f"Score the sentence on {dimension} from 1 (violates it) to 10 (fully meets it). "
        "Reply with the whole number only."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """The messages as plain text for a tokenizer without a chat template; ends with a newline so
    that the score is the first token of a new line."""
    return "\n\n".join(message["content"] for message in messages) + "\nScore:\n"
