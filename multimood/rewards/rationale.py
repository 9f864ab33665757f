"""r_rationale: does the model's rationale express the client emotion it predicts? (beyond the paper)

After the Emotional Rationale Verifier of Rha et al. (2025, arXiv 2510.23506): the model writes a
short rationale for the client's emotion, a text classifier (the verifier,
:mod:`multimood.rewards.emotion_verifier`) reads the rationale alone, and the reward is the
verifier's probability of the emotion the model predicted. A rationale that argues for sadness
while the answer says "joy" scores low; one consistent with its prediction scores high. It checks
coherence, not correctness (the similarity and trust rewards and the SFT labels cover that).

Rationale format: one line ``Rationale: <text>`` *before* the four answer lines, so the answer
has five lines::

    Rationale: She says she cries every night since the move and feels empty.
    Client's emotion: sadness
    Therapist's emotion: neutral
    Therapist's strategy: Restatement
    Therapist's response: It sounds like the move left you feeling alone.

It goes first, not last, because the answer parser reads the response up to the next field name
or a blank line: a ``Rationale:`` line written after the response would become part of the
response (and of r_sim, BLEU and ROUGE). First, it is text before the answer, which the parser
ignores, and the emotion is written after its reason. :func:`read_rationale` finds the line
wherever it is (first or last, markdown bold, any case) and :func:`strip_rationale` removes it.
:data:`RATIONALE_INSTRUCTION` is the sentence to append to the prompt's output format to ask for
it.

The component is off by default everywhere; enable it by adding it to a
:class:`~multimood.rewards.combine.CombinedReward` with a trained verifier folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from multimood.data.answer import parse_answer
from multimood.rewards.base import RewardOutput, check_lengths
from multimood.rewards.emotion_verifier import EmotionVerifier

RATIONALE_FIELD = "Rationale"

RATIONALE_INSTRUCTION = (
    "Before these four lines, write one line 'Rationale: <one sentence on what in the client's words, "
    "face and voice shows their emotion>'."
)

# "Rationale:" at the start of a line, after an optional bullet/heading and markdown emphasis.
_RATIONALE = re.compile(
    r"^[ \t]*(?:[#>*+•-]+[ \t]*)?(?:\*\*|__|\*|_)?[ \t]*rationale[ \t]*(?:\*\*|__|\*|_)?[ \t]*[:：](?P<text>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)

# Bold closing after the colon ("**Rationale:** text"): markup, not rationale.
_CLOSING_MARKUP = re.compile(r"^[ \t]*(?:\*\*|__)")


def read_rationale(text: str) -> str | None:
    """The text of the first non-empty ``Rationale:`` line of ``text``, or None.

    Bold markup around the field name is dropped; emphasis inside the text is kept as written.
    """
    for match in _RATIONALE.finditer(text or ""):
        rationale = _CLOSING_MARKUP.sub("", match["text"]).strip()
        if rationale:
            return rationale
    return None


def strip_rationale(text: str) -> str:
    """``text`` without its ``Rationale:`` lines (e.g. before scoring an answer that put it last)."""
    return _RATIONALE.sub("", text or "").strip("\n")


class RationaleReward:
    """The verifier's probability of the client emotion the completion predicts, given its rationale.

    Present when the completion has a non-empty rationale line and a client emotion that parses;
    missing otherwise (a missing rationale is not scored 0: add
    :class:`~multimood.rewards.format.FormatReward` or use ``missing="drop"`` to punish it).

    Args:
        verifier: folder written by ``multimood train-verifier`` (``model.pt``, ``verifier.json``).
        name: the component's name in the combination and in logged metrics.

    The verifier loads on the first call.
    """

    def __init__(self, verifier: str, name: str = "rationale") -> None:
        self.verifier_path = str(verifier)
        self.name = name
        self._verifier: EmotionVerifier | None = None

    @property
    def verifier(self) -> EmotionVerifier:
        """The verifier, loaded on first use."""
        if self._verifier is None:
            self._verifier = EmotionVerifier.load(Path(self.verifier_path))
        return self._verifier

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        check_lengths(self.name, completions, references)
        n = len(completions)
        rows: list[int] = []
        texts: list[str] = []
        emotions: list[str] = []
        no_rationale = 0
        for i, completion in enumerate(completions):
            rationale = read_rationale(completion)
            emotion = parse_answer(completion).client_emotion
            no_rationale += rationale is None
            if rationale is not None and emotion is not None:
                rows.append(i)
                texts.append(rationale)
                emotions.append(emotion)
        stats = {"no_rationale_fraction": no_rationale / n if n else 0.0}
        if not rows:
            return RewardOutput.missing(n, stats)
        verifier = self.verifier
        unknown = sorted(set(emotions) - set(verifier.labels))
        if unknown:
            raise ValueError(
                f"reward {self.name!r}: the verifier in {self.verifier_path} has no class for {unknown} "
                f"(its labels: {verifier.labels})"
            )
        probabilities = verifier.probabilities(texts)  # (R, C)
        columns = torch.tensor([verifier.labels.index(e) for e in emotions])
        chosen = probabilities[torch.arange(len(rows)), columns]
        agrees = probabilities.argmax(-1) == columns
        stats["agreement"] = float(agrees.float().mean())  # verifier's top emotion == the predicted one
        values = torch.zeros(n)
        present = torch.zeros(n, dtype=torch.bool)
        index = torch.tensor(rows)
        values[index] = chosen
        present[index] = True
        return RewardOutput(values, present, stats)
