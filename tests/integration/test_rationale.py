"""The rationale reward: its line format, the emotion verifier trained on a synthetic MESC, the reward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multimood import cli
from multimood.data.answer import format_answer, parse_answer
from multimood.data.synthetic import make_mesc
from multimood.rewards.emotion_verifier import EmotionVerifier, ngrams, train_verifier
from multimood.rewards.rationale import RationaleReward, read_rationale, strip_rationale

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mesc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic-mesc-text")
    make_mesc(root, num_dialogues=150, seed=3, clips=False)  # annotations only: ~1000 client utterances
    return root


@pytest.fixture(scope="module")
def verifier_dir(mesc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verifier")
    train_verifier(mesc_dir, out, epochs=20, lr=0.3, seed=0)
    return out


def answer(emotion: str, rationale: str | None) -> str:
    four = format_answer(emotion, "neutral", "Restatement", "It sounds like a hard week.")
    return four if rationale is None else f"Rationale: {rationale}\n{four}"


def test_ngrams() -> None:
    assert ngrams("I can't SLEEP.") == ["i", "can't", "sleep", "i can't", "can't sleep"]


def test_the_rationale_line_is_read_anywhere_and_kept_out_of_the_answer() -> None:
    five = answer("fear", "She says she is terrified of him.")
    assert read_rationale(five) == "She says she is terrified of him."
    parsed = parse_answer(five)
    assert parsed.ok and parsed.response == "It sounds like a hard week."
    assert read_rationale("**Rationale:** she is *angry*\nClient's emotion: anger") == "she is *angry*"
    assert read_rationale(answer("fear", None) + "\n- rationale: last line") == "last line"
    assert read_rationale("Rationale:   \nRationale: second") == "second"
    assert read_rationale(answer("fear", None)) is None
    assert strip_rationale(five) == answer("fear", None)


def test_the_verifier_beats_the_majority_class_on_val(verifier_dir: Path) -> None:
    verifier = EmotionVerifier.load(verifier_dir)
    m = verifier.metrics
    assert m["val_utterances"] > 50
    assert m["val_accuracy"] > m["val_majority_accuracy"] + 0.1
    assert m["val_uar"] > m["val_majority_uar"] + 0.1
    probabilities = verifier.probabilities(["I am terrified", "I feel so happy and glad", ""])
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(3))
    assert verifier.predict(["I am so scared and terrified"]) == ["fear"]
    assert verifier.predict(["I am happy, so glad and delighted"]) == ["joy"]


def test_save_load_round_trip(verifier_dir: Path, tmp_path: Path) -> None:
    verifier = EmotionVerifier.load(verifier_dir)
    again = EmotionVerifier.load(verifier.save(tmp_path / "copy"))
    texts = ["I feel hopeless and empty", "okay fine"]
    torch.testing.assert_close(again.probabilities(texts), verifier.probabilities(texts))
    with pytest.raises(FileNotFoundError, match=r"missing model\.pt, verifier\.json"):
        EmotionVerifier.load(tmp_path)


def test_rationale_reward(verifier_dir: Path) -> None:
    reward = RationaleReward(str(verifier_dir))
    assert reward._verifier is None  # loads on the first call
    fear = "She says she is scared and terrified when he shouts."
    completions = [
        answer("fear", fear),
        answer("joy", fear),  # the rationale argues for another emotion than the prediction
        answer("fear", None),  # no rationale: missing
        f"Rationale: {fear}\nClient's emotion: terrified-ish",  # emotion does not parse: missing
    ]
    out = reward(completions, [answer("fear", None)] * 4)
    assert out.present.tolist() == [True, True, False, False]
    assert ((out.values >= 0) & (out.values <= 1)).all()
    assert out.values[0] > out.values[1]
    probabilities = reward.verifier.probabilities([fear])[0]
    labels = reward.verifier.labels
    assert out.values[0].item() == pytest.approx(probabilities[labels.index("fear")].item())
    assert out.values[1].item() == pytest.approx(probabilities[labels.index("joy")].item())
    assert out.stats["no_rationale_fraction"] == 0.25 and out.stats["agreement"] == 0.5


def test_the_cli_trains_and_saves(mesc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-verifier"
    assert cli.main(["train-verifier", "--data", str(mesc_dir), "--out", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and "majority class" in printed
    assert EmotionVerifier.load(out).metrics["epochs"] == 1
