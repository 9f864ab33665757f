"""MESCMetrics and ``multimood score``: hand-computed cases, and a predictions file built from the
real MESC test annotations scored against sklearn / NLTK / rouge_score / bert_score, with the
expected labels taken from how each prediction was built (not from our parser)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import nltk
import pytest
from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from multimood.cli import main as multimood_main
from multimood.data.answer import MISSING, format_answer
from multimood.data.labels import EMOTIONS, STRATEGIES
from multimood.data.mesc import load_mesc
from multimood.metrics import MESCMetrics
from multimood.metrics.score import PredictionsFileError, format_table, read_predictions
from tests.unit.test_metrics_text import minilm_path

KEYS = {
    "client_emotion/accuracy",
    "client_emotion/weighted_f1",
    "therapist_emotion/accuracy",
    "therapist_emotion/weighted_f1",
    "strategy/accuracy",
    "strategy/weighted_f1",
    "response/bleu2",
    "response/bleu2_authors",
    "response/rouge_l",
    "parse_failure_rate",
    "num_samples",
}


def test_hand_computed_two_samples() -> None:
    # sample 1 exact; sample 2 unparsable. Client emotion: sadness right, anger missed ->
    # accuracy 1/2, weighted F1 (1 * 1 + 1 * 0) / 2. Response tokens "i hear you ." (4) against
    # references of 4 + 4 tokens: p1 = 4/5, p2 = 3/4 (the empty hypothesis adds 1 to each
    # denominator, as NLTK), BP = exp(1 - 8/4).
    first = format_answer("sadness", "neutral", "Approval", "I hear you.")
    second = format_answer("anger", "neutral", "Open question", "Tell me more.")
    metrics = MESCMetrics()
    metrics.update([first, "I am not able to help with that."], [first, second])
    result = {k: v.item() for k, v in metrics.compute().items()}
    assert set(result) == KEYS
    assert result["client_emotion/accuracy"] == pytest.approx(0.5)
    assert result["client_emotion/weighted_f1"] == pytest.approx(0.5)
    assert result["parse_failure_rate"] == pytest.approx(0.5)
    assert result["num_samples"] == 2
    assert result["response/rouge_l"] == pytest.approx(0.5)
    assert result["response/bleu2_authors"] == pytest.approx(0.5)
    assert result["response/bleu2"] == pytest.approx(math.exp(-1) * math.sqrt(0.8 * 0.75), rel=1e-12)
    confusion = metrics.confusion_matrices()
    assert confusion["strategy"].shape == (len(STRATEGIES), len(STRATEGIES) + 1)
    assert confusion["client_emotion"][EMOTIONS.index("anger"), len(EMOTIONS)] == 1


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric MESCMetrics was called before")
def test_calling_accumulates_and_reset_clears_the_children() -> None:
    answers = [format_answer("joy", "neutral", "Approval", f"Good, {w} said.") for w in ("you", "she", "we")]
    whole = MESCMetrics()
    whole.update(answers, answers[::-1])
    parts = MESCMetrics()
    parts(answers[:1], answers[-1:])  # forward only accumulates
    parts.update(answers[1:], answers[::-1][1:])
    expected = {k: v.item() for k, v in whole.compute().items()}
    assert {k: v.item() for k, v in parts.compute().items()} == pytest.approx(expected, abs=1e-12)
    parts.reset()
    with pytest.raises(ValueError, match="no samples"):
        parts.compute()
    assert parts.bleu2.per_sample().shape[0] == 0 and int(parts.tasks["strategy"].confusion.sum()) == 0


def test_reference_that_does_not_parse_is_an_error() -> None:
    good = format_answer("joy", "neutral", "Approval", "Good.")
    with pytest.raises(ValueError, match=r"reference answer 1 of the batch does not parse \(strategy: "):
        MESCMetrics().update([good, good], [good, good.replace("Approval", "Praise")])


# --------------------------------------------------------------------------------------------
# A predictions file from the real annotations


def _build_predictions(real_mesc_dir: Path, path: Path, limit: int | None = None) -> dict:
    """Write the JSONL; return the expected labels (class index or -1) and responses (None = unparsed)."""
    samples = load_mesc(real_mesc_dir).samples["test"][:limit]
    n = len(samples)
    expected: dict = {"client_emotion": [], "therapist_emotion": [], "strategy": [], "response": []}
    truth: dict = {"client_emotion": [], "therapist_emotion": [], "strategy": [], "response": []}
    failed = 0
    with path.open("w", encoding="utf-8") as out:
        for i, sample in enumerate(samples):
            other = samples[(i + 1) % n]
            ce, te, st, resp = other.client_emotion, other.therapist_emotion, other.strategy, other.response
            labels = [ce, te, st, resp]
            case = i % 8
            if case == 0:  # exact
                labels = [sample.client_emotion, sample.therapist_emotion, sample.strategy, sample.response]
                predict = format_answer(*labels)
            elif case == 1:  # another sample's answer
                predict = format_answer(ce, te, st, resp)
            elif case == 2:  # the same, written loosely: markdown, case, text around it
                predict = (
                    f"Sure, here is my answer.\n**Client's emotion:** {ce.upper()}\n"
                    f"- therapist's emotion: {te.capitalize()}.\nTherapist's strategy: {st.lower()}\n"
                    f"Therapist's response: {resp}\n\n(I chose this because of the tone.)"
                )
            elif case == 3:  # no answer at all
                predict, labels = "I'm sorry, I cannot help with that.", [None] * 4
            elif case == 4:  # a client emotion outside the vocabulary
                predict = format_answer(ce, te, st, resp).replace(
                    f"Client's emotion: {ce}", "Client's emotion: happy"
                )
                labels[0] = None
            elif case == 5:  # the response line missing
                predict = "\n".join(format_answer(ce, te, st, resp).splitlines()[:3])
                labels[3] = None
            elif case == 6:  # two different strategies: conflicting
                other_strategy = STRATEGIES[(STRATEGIES.index(st) + 1) % len(STRATEGIES)]
                predict = format_answer(ce, te, st, resp) + f"\nTherapist's strategy: {other_strategy}"
                labels[2] = None
            else:  # exact again, so that some classes are right
                labels = [sample.client_emotion, sample.therapist_emotion, sample.strategy, sample.response]
                predict = format_answer(*labels)
            failed += any(label is None for label in labels)
            label = format_answer(
                sample.client_emotion, sample.therapist_emotion, sample.strategy, sample.response
            )
            out.write(json.dumps({"sample_id": sample.sample_id, "label": label, "predict": predict}) + "\n")
            for name, vocabulary, value, gold in (
                ("client_emotion", EMOTIONS, labels[0], sample.client_emotion),
                ("therapist_emotion", EMOTIONS, labels[1], sample.therapist_emotion),
                ("strategy", STRATEGIES, labels[2], sample.strategy),
            ):
                expected[name].append(MISSING if value is None else vocabulary.index(value))
                truth[name].append(vocabulary.index(gold))
            expected["response"].append(labels[3])
            truth["response"].append(sample.response)
    return {"expected": expected, "truth": truth, "failed": failed, "n": n}


def _oracle(built: dict) -> dict[str, float]:
    """Reference values from sklearn, NLTK and rouge_score."""
    expected, truth = built["expected"], built["truth"]
    result: dict[str, float] = {}
    for name in ("client_emotion", "therapist_emotion", "strategy"):
        result[f"{name}/accuracy"] = accuracy_score(truth[name], expected[name])
        result[f"{name}/weighted_f1"] = f1_score(
            truth[name], expected[name], average="weighted", zero_division=0
        )

    def tokens(text: str) -> list[str]:
        return nltk.word_tokenize(text.lower(), preserve_line=True)

    hyps = [tokens(h) if h is not None else [] for h in expected["response"]]
    refs = [tokens(r) for r in truth["response"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["response/bleu2"] = corpus_bleu([[r] for r in refs], hyps, weights=(0.5, 0.5))
        sentence = [
            sentence_bleu([r], h, weights=(0.99, 0.01)) if h else 0.0 for r, h in zip(refs, hyps, strict=True)
        ]
    result["response/bleu2_authors"] = sum(sentence) / len(sentence)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(r, h)["rougeL"].fmeasure if h is not None else 0.0
        for h, r in zip(expected["response"], truth["response"], strict=True)
    ]
    result["response/rouge_l"] = sum(rouge) / len(rouge)
    result["parse_failure_rate"] = built["failed"] / built["n"]
    result["num_samples"] = built["n"]
    return result


@pytest.mark.real_data
def test_score_command_equals_the_reference_implementations(
    real_mesc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions, out = tmp_path / "sft.jsonl", tmp_path / "metrics.json"
    built = _build_predictions(real_mesc_dir, predictions)
    assert built["n"] > 400 and 0.4 < built["failed"] / built["n"] < 0.6
    assert multimood_main(["score", str(predictions), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    oracle = _oracle(built)
    assert set(result) == KEYS
    assert result == pytest.approx(oracle, abs=1e-6)
    assert all(0.0 <= v <= 1.0 for k, v in result.items() if k != "num_samples")
    printed = capsys.readouterr().out
    for key in ("client_emotion/accuracy", "strategy/weighted_f1", "response/bleu2", "response/rouge_l"):
        assert f"{100 * oracle[key]:.2f}" in printed  # the table is in percent, as paper table 4
    assert "sft" in printed and "Task 4" in printed


@pytest.mark.real_data
def test_score_command_with_bertscore(real_mesc_dir: Path, tmp_path: Path) -> None:
    from bert_score import score

    predictions, out = tmp_path / "small.jsonl", tmp_path / "metrics.json"
    built = _build_predictions(real_mesc_dir, predictions, limit=40)
    model = minilm_path()
    argv = [
        "score",
        str(predictions),
        "--out",
        str(out),
        "--bertscore-model",
        model,
        "--bertscore-layers",
        "6",
    ]
    assert multimood_main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result) == KEYS | {"response/bertscore_f1"}
    pairs = [
        (h, r) for h, r in zip(built["expected"]["response"], built["truth"]["response"], strict=True) if h
    ]
    _, _, f1 = score([h for h, _ in pairs], [r for _, r in pairs], model_type=model, num_layers=6)
    assert result["response/bertscore_f1"] == pytest.approx(f1.double().sum().item() / built["n"], abs=1e-6)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"label": format_answer("joy", "neutral", "Approval", "Good."), "predict": "?"})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD, "", GOOD, "{not json"], r"bad\.jsonl:4: not valid JSON"),
        ([GOOD, json.dumps({"label": "x"})], r"bad\.jsonl:2: missing key 'predict' \(keys: label\)"),
        ([json.dumps({"predict": "x", "sample_id": 3})], r"bad\.jsonl:1: missing key 'label'"),
        ([json.dumps([1, 2])], r"bad\.jsonl:1: expected a JSON object, got list"),
        ([json.dumps({"label": 1, "predict": "x"})], r"bad\.jsonl:1: 'label' must be a string, got int"),
        (
            [json.dumps({"label": "hello", "predict": "x"})],
            r"bad\.jsonl:1: the 'label' answer does not parse",
        ),
        ([], r"bad\.jsonl: no predictions \(the file is empty\)"),
        (["", "  "], r"bad\.jsonl: no predictions"),
    ],
)
def test_bad_files_name_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PredictionsFileError, match=message):
        read_predictions(path)
    assert multimood_main(["score", str(path)]) == 2
    assert "multimood score: error: " in capsys.readouterr().err


def test_table_layout_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "run.jsonl", [GOOD])
    rows = read_predictions(path)
    assert len(rows) == 1 and rows[0][0] == 1 and not rows[0][1].ok and rows[0][2].ok
    table = format_table(
        {"client_emotion/accuracy": 0.5638, "num_samples": 3, "parse_failure_rate": 0.0}, "x"
    )
    header, columns, row = table.splitlines()[:3]
    assert header.split() == ["Task", "1", "Task", "2", "Task", "3", "Task", "4"]
    assert columns.split()[:3] == ["Model", "Acc", "F1"] and "BScore" in columns
    assert row.split()[:3] == ["x", "56.38", "-"]
    assert multimood_main(["--help"]) == 0
    assert "score" in capsys.readouterr().out


def test_worked_example_of_the_design_note() -> None:
    """The "ours" column of docs/design/metrics.md."""
    references = [
        format_answer("sadness", "neutral", "Open question", "How did that make you feel?"),
        format_answer("fear", "neutral", "Restatement", "You are afraid of losing your job."),
        format_answer("anger", "neutral", "Approval", "It makes sense that you are angry."),
        format_answer(
            "depression", "sadness", "Interpretation", "Maybe you blame yourself for what happened."
        ),
    ]
    predictions = [
        references[0],
        "**Client's emotion:** Fear\n**Therapist's emotion:** Neutral\n**Therapist's strategy:** Restatement\n"
        "**Therapist's response:** You are scared of losing your job.",
        "I'm sorry, I can't assist with that.",
        format_answer("sadness", "neutral", "Interpretation", "It sounds like you feel guilty about it."),
    ]
    metrics = MESCMetrics()
    metrics.update(predictions, references)
    result = {k: round(100 * v.item(), 2) for k, v in metrics.compute().items() if k != "num_samples"}
    assert result == {
        "client_emotion/accuracy": 50.0,
        "client_emotion/weighted_f1": 41.67,
        "therapist_emotion/accuracy": 50.0,
        "therapist_emotion/weighted_f1": 50.0,
        "strategy/accuracy": 75.0,
        "strategy/weighted_f1": 75.0,
        "response/bleu2": 42.26,
        "response/bleu2_authors": 46.84,
        "response/rouge_l": 49.76,
        "parse_failure_rate": 25.0,
    }
    per_sample = [round(v, 4) for v in metrics.bleu2_authors.per_sample_scores().tolist()]
    assert per_sample == [1.0, 0.8732, 0.0, 0.0002]
