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

It goes first so that the emotion is written after its reason. The answer parser
(:func:`~multimood.data.answer.parse_answer`) blanks ``Rationale:`` lines wherever they are, so the
rationale is never part of the response (r_sim, r_trust, BLEU, ROUGE) nor of a label, even when a
model writes it last. :func:`read_rationale` finds the line wherever it is (first or last,
markdown bold, any case) and :func:`strip_rationale` removes it. :data:`RATIONALE_INSTRUCTION`
(defined with the prompt, :mod:`multimood.data.prompt`) asks for it: the MESC data option
``rationale: true`` appends it to the prompt's output format.

The component is off by default everywhere; enable it by adding it to a
:class:`~multimood.rewards.combine.CombinedReward` with a trained verifier folder, and turn on the
data option so the model is asked for the line (``docs/design/rewards.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from multimood.data.answer import RATIONALE_LINE, parse_answer
from multimood.data.prompt import RATIONALE_FIELD, RATIONALE_INSTRUCTION
from multimood.rewards.base import RewardOutput, check_lengths
from multimood.rewards.emotion_verifier import EmotionVerifier

__all__ = [
    "RATIONALE_FIELD",
    "RATIONALE_INSTRUCTION",
    "RationaleReward",
    "read_rationale",
    "strip_rationale",
]

# Bold closing after the colon ("**Rationale:** text"): markup, not rationale.
_CLOSING_MARKUP = re.compile(r"^[ \t]*(?:\*\*|__)")


def read_rationale(text: str) -> str | None:
    """The text of the first non-empty ``Rationale:`` line of ``text``, or None.

    Bold markup around the field name is dropped; emphasis inside the text is kept as written.
    """
    for match in RATIONALE_LINE.finditer(text or ""):
        rationale = _CLOSING_MARKUP.sub("", match["text"]).strip()
        if rationale:
            return rationale
    return None


def strip_rationale(text: str) -> str:
    """``text`` without its ``Rationale:`` lines (e.g. before scoring an answer that put it last)."""
    return RATIONALE_LINE.sub("", text or "").strip("\n")


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
