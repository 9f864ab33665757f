"""A small text emotion classifier for the rationale reward (the "Emotional Rationale Verifier").

The verifier of Rha et al. (2025, arXiv 2510.23506) is a text classifier that reads an
explanation and says which emotion it expresses; the reward is its probability of the emotion the
model predicted. We have no corpus of emotion explanations, so ours is trained on what MESC has:
the *client utterances* of the train split, each labelled with its annotated emotion (seven MESC
emotions). A rationale such as "she says she cries every night and feels empty" uses the same
words as the utterances it describes, which is what the classifier keys on; the domain shift from
utterances to third-person rationales is real and is the price of needing no extra annotation.

Model: a multinomial logistic regression over bag-of-n-gram features (lowercased word unigrams
and bigrams that occur at least ``min_count`` times in the training texts), implemented as a
``torch.nn.EmbeddingBag(V, 7, mode="mean")`` plus a bias: fast on a CPU, a few hundred kB on
disk. A text with no known n-gram gets the bias alone (roughly the class prior), never an error.

Saved as a folder: ``model.pt`` (a plain state dict, loadable with ``weights_only=True``) and
``verifier.json`` (labels, n-gram vocabulary in index order, options and the training metrics).

``multimood train-verifier --data DIR --out DIR`` trains it on a MESC folder and prints the val
accuracy next to the majority-class baseline. Utterance texts are private: nothing here prints
or logs them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimood.data.labels import EMOTIONS

MODEL_FILE = "model.pt"
META_FILE = "verifier.json"
FORMAT_VERSION = 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def ngrams(text: str, max_n: int = 2) -> list[str]:
    """Lowercased word n-grams of ``text``, n = 1..max_n (``"i feel sad"`` -> ``i, feel, sad, i feel, feel sad``)."""
    words = _WORD.findall(text.lower())
    grams = list(words)
    for n in range(2, max_n + 1):
        grams.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams


class BagOfNgrams(nn.Module):
    """Logits = mean of the n-grams' class weight rows + bias (a linear softmax classifier)."""

    def __init__(self, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.EmbeddingBag(vocab_size, num_classes, mode="mean")
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.zeros_(self.weight.weight)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.weight(ids, offsets) + self.bias  # (B, C); an empty bag gives the bias alone


class EmotionVerifier:
    """The trained classifier: text -> probability of each MESC emotion.

    Args:
        vocabulary: the n-grams, in feature-index order.
        labels: class names in output order (the MESC emotions).
        max_n: longest n-gram.
        state_dict: weights of :class:`BagOfNgrams`; None starts from zeros (uniform output).
        metrics: training metrics kept in ``verifier.json`` (val accuracy, baseline...).
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        labels: Sequence[str] = EMOTIONS,
        max_n: int = 2,
        state_dict: dict[str, torch.Tensor] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.vocabulary = list(vocabulary)
        self.index = {gram: i for i, gram in enumerate(self.vocabulary)}
        if len(self.index) != len(self.vocabulary):
            raise ValueError("the verifier vocabulary holds a duplicate n-gram")
        self.labels = list(labels)
        self.max_n = max_n
        self.metrics = dict(metrics or {})
        self.model = BagOfNgrams(max(len(self.vocabulary), 1), len(self.labels))
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        self.model.eval()

    def featurise(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """EmbeddingBag inputs for ``texts``: flat n-gram ids and each text's offset."""
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(self.index[g] for g in ngrams(text, self.max_n) if g in self.index)
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, C) class probabilities, rows summing to 1, columns in :attr:`labels` order."""
        if not texts:
            return torch.zeros(0, len(self.labels))
        self.model.eval()
        return self.model(*self.featurise(texts)).softmax(-1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable emotion of each text."""
        return [self.labels[i] for i in self.probabilities(texts).argmax(-1).tolist()]

    def save(self, folder: str | Path) -> Path:
        """Write ``model.pt`` and ``verifier.json`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / MODEL_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "max_n": self.max_n,
            "metrics": self.metrics,
            "vocabulary": self.vocabulary,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EmotionVerifier:
        """Read a verifier written by :meth:`save` (or ``multimood train-verifier``)."""
        folder = Path(folder)
        missing = [name for name in (MODEL_FILE, META_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not an emotion verifier folder (missing {', '.join(missing)}); "
                "write one with `multimood train-verifier --data MESC_DIR --out FOLDER`"
            )
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder / META_FILE}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        return cls(meta["vocabulary"], meta["labels"], meta["max_n"], state, meta.get("metrics"))


# --------------------------------------------------------------------------------------------
# Training


def client_utterances(mesc_dir: str | Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{split: (texts, emotions)}`` of every client utterance, splits rebuilt as the MESC reader does."""
    from multimood.data.mesc import load_dialogues

    dialogues, _ = load_dialogues(mesc_dir)
    out: dict[str, tuple[list[str], list[str]]] = {}
    for split, items in dialogues.items():
        utterances = [u for d in items for u in d.utterances if u.is_client]
        out[split] = ([u.text for u in utterances], [u.emotion for u in utterances])
    return out


def build_vocabulary(
    texts: Sequence[str], max_n: int = 2, min_count: int = 2, max_features: int = 50_000
) -> list[str]:
    """The n-grams seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
    counts = Counter(g for text in texts for g in ngrams(text, max_n))
    kept = sorted((g for g, c in counts.items() if c >= min_count), key=lambda g: (-counts[g], g))
    return kept[:max_features]


def evaluate(verifier: EmotionVerifier, texts: Sequence[str], emotions: Sequence[str]) -> dict[str, float]:
    """Accuracy and unweighted average recall (mean per-class recall over classes present)."""
    if not texts:
        raise ValueError("evaluate() needs at least one text")
    predicted = verifier.predict(texts)
    correct = [p == e for p, e in zip(predicted, emotions, strict=True)]
    recalls = []
    for label in sorted(set(emotions)):
        rows = [c for c, e in zip(correct, emotions, strict=True) if e == label]
        recalls.append(sum(rows) / len(rows))
    return {"accuracy": sum(correct) / len(correct), "uar": sum(recalls) / len(recalls)}


def train_verifier(
    mesc_dir: str | Path,
    out_path: str | Path,
    epochs: int = 5,
    seed: int = 0,
    lr: float = 0.05,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    min_count: int = 2,
    max_n: int = 2,
    balanced: bool = True,
) -> EmotionVerifier:
    """Train on the train split's client utterances, measure on val, save to ``out_path``.

    ``balanced`` (default) weighs the loss by inverse class frequency. Unbalanced, the classifier
    learns MESC's prior (40% neutral) and its probability of "neutral" is high for any text, so a
    rationale reward built on it would pay the policy for predicting "neutral"; balanced, it trades
    accuracy for recall on the rare emotions (docs/design/rewards.md has the measured numbers).
    Optimiser: Adagrad (sparse-feature friendly), minibatches of ``batch_size`` texts. The metrics (val accuracy and UAR, the majority-class baseline on val, counts) are
    stored in ``verifier.json`` and kept in ``verifier.metrics``.
    """
    data = client_utterances(mesc_dir)
    train_texts, train_emotions = data["train"]
    val_texts, val_emotions = data["val"]
    if not train_texts or not val_texts:
        raise ValueError(f"{mesc_dir}: no client utterances in the train or val split")
    unknown = sorted(set(train_emotions) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"{mesc_dir}: client emotions outside the MESC labels: {unknown}")

    generator = torch.Generator().manual_seed(seed)
    vocabulary = build_vocabulary(train_texts, max_n=max_n, min_count=min_count)
    verifier = EmotionVerifier(vocabulary, EMOTIONS, max_n)
    targets = torch.tensor([EMOTIONS.index(e) for e in train_emotions])
    bags = [verifier.featurise([t])[0] for t in train_texts]  # one id tensor per text
    class_weight = None
    if balanced:
        counts = torch.bincount(targets, minlength=len(EMOTIONS)).float()
        class_weight = torch.where(counts > 0, counts.sum() / (len(EMOTIONS) * counts.clamp_min(1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=class_weight)
    model = verifier.model
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(bags), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids = torch.cat([bags[i] for i in rows])
            offsets = torch.tensor([0, *torch.tensor([len(bags[i]) for i in rows[:-1]]).cumsum(0).tolist()])
            loss = loss_fn(model(ids, offsets), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()

    majority = Counter(train_emotions).most_common(1)[0][0]
    val = evaluate(verifier, val_texts, val_emotions)
    verifier.metrics = {
        "val_accuracy": val["accuracy"],
        "val_uar": val["uar"],
        "val_majority_class": majority,
        "val_majority_accuracy": sum(e == majority for e in val_emotions) / len(val_emotions),
        "val_majority_uar": 1.0 / len(set(val_emotions)),
        "train_accuracy": evaluate(verifier, train_texts, train_emotions)["accuracy"],
        "train_utterances": len(train_texts),
        "val_utterances": len(val_texts),
        "vocabulary": len(vocabulary),
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "balanced": balanced,
    }
    verifier.save(out_path)
    return verifier


def main(argv: list[str] | None = None) -> int:
    """``multimood train-verifier --data DIR --out DIR``: train, save, print the val metrics."""
    from multimood.cli import make_parser

    parser = make_parser(
        "train-verifier",
        "Train the rationale reward's emotion verifier on the client utterances of a MESC folder "
        "(train split), print its val accuracy next to the majority class, save it to --out.",
    )
    parser.add_argument("--data", required=True, help="MESC folder (MESC.csv, val.json, test.json)")
    parser.add_argument("--out", required=True, help="output folder (model.pt, verifier.json)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05, help="Adagrad learning rate")
    parser.add_argument("--min-count", type=int, default=2, help="keep n-grams seen this often")
    parser.add_argument(
        "--balanced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="weigh classes by inverse frequency (default; --no-balanced learns the class prior)",
    )
    args = parser.parse_args(argv)
    verifier = train_verifier(
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        lr=args.lr,
        min_count=args.min_count,
        balanced=args.balanced,
    )
    m = verifier.metrics
    print(
        f"val accuracy {m['val_accuracy']:.4f} (majority class {m['val_majority_class']!r}: "
        f"{m['val_majority_accuracy']:.4f}), val UAR {m['val_uar']:.4f} (majority {m['val_majority_uar']:.4f}), "
        f"train accuracy {m['train_accuracy']:.4f}; {m['train_utterances']} train / {m['val_utterances']} val "
        f"utterances, {m['vocabulary']} n-grams; saved to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
