"""The demo (``make demo``): every stage through fit.py's main, the comparison table, the result files.

The quick test runs the demo on a few samples (the plumbing); the slow one runs the full demo and
checks the learning claims it prints: task-1 accuracy well above the majority class with the
informative modality (video), and close to it without; GRPO's reward rising while the test accuracy
stays near C's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import demo


def _results(out: Path) -> dict:
    return json.loads((out / "demo_results.json").read_text())


@pytest.mark.slow
def test_demo_small_prints_the_table_and_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert (
        demo.main(["--out", str(out), "--dialogues", "20", "--limit-samples", "4", "--sft-epochs", "1"]) == 0
    )
    printed = capsys.readouterr().out
    for heading in (
        "stage A",
        "stage B",
        "stage C",
        "without the video",
        "stage D",
        "majority class",
        "wall time",
    ):
        assert heading in printed, heading
    table = printed[printed.index("== 7.") :]
    assert "task 1 client emotion: accuracy" in table and "C w/o video" in table and "C+D (GRPO)" in table
    results = _results(out)
    for name in ("C", "C w/o video", "C+D (GRPO)"):
        metrics = results["runs"][name]
        assert metrics["num_samples"] == 4  # --limit-samples 4 on the test split
        assert 0.0 <= metrics["client_emotion/accuracy"] <= 1.0
    for run in ("sft", "sft_without_video", "grpo"):
        predictions = list((out / run).rglob("test/predictions.jsonl"))
        assert len(predictions) == 1, predictions
        rows = [json.loads(line) for line in predictions[0].read_text().splitlines()]
        assert len(rows) == 4 and {"sample_id", "label", "predict"} <= set(rows[0])
        assert (predictions[0].parent / "metrics.json").is_file()
    for folder in ("compressor_utterances", "compressor_conversations", "projector", "sft", "grpo"):
        assert (out / folder / "checkpoints" / "last.ckpt").is_file(), folder
    assert (out / "sft" / "export" / "merged" / "config.json").is_file()  # D starts from C, merged
    assert set(results["seconds"]) >= {"B projector", "C sft", "C sft w/o video", "D grpo", "total"}


@pytest.mark.slow
def test_full_demo_learns_from_the_informative_modality(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out)]) == 0
    results = _results(out)
    chance = results["baseline"]["client_emotion/accuracy"]  # majority class of the test split
    with_video = results["runs"]["C"]["client_emotion/accuracy"]
    without = results["runs"]["C w/o video"]["client_emotion/accuracy"]
    assert results["baseline"]["num_samples"] >= 30
    assert with_video >= chance + 0.25, (with_video, chance)
    assert without <= chance + 0.15, (without, chance)
    assert with_video - without >= 0.2, (with_video, without)
    grpo = results["runs"]["C+D (GRPO)"]
    assert grpo["grpo/reward_last"] >= grpo["grpo/reward_first"] + 0.03, grpo
    assert grpo["client_emotion/accuracy"] >= with_video - 0.1, (grpo, with_video)
