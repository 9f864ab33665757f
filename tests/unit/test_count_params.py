"""`multimood count-params`: meta-device counts agree with really built models; the paper config counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from multimood.count_params import count_parameters, main
from multimood.models.multimood import MultiMoodModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def _rows(argv: list[str], tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / "rows.json"
    assert main([*argv, "--json", str(out)]) == 0
    return {r["component"]: r for r in json.loads(out.read_text())}


def _check_against_the_built_model(config: Path, tmp_path: Path) -> dict[str, dict]:
    rows = _rows(["--model", str(config)], tmp_path)
    parser = ArgumentParser()
    parser.add_subclass_arguments(MultiMoodModel, "model")
    model = parser.instantiate(parser.parse_args(["--model", str(config)])).model

    def count(module, trainable=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)

    parts = {
        "llm": model.llm,
        "vision_tower": model.vision_tower,
        "video_connector": model.video_connector,
        "audio_tower": model.audio_tower,
        "audio_projector": model.audio_projector,
        "history_compressor": model.history_compressor,
    }
    assert set(rows) == set(parts)
    for name, module in parts.items():
        assert rows[name]["total"] == count(module), name
        assert rows[name]["trainable"] == count(module, trainable=True), name
    return rows


def test_meta_counts_match_the_built_tiny_model(tmp_path: Path) -> None:
    _check_against_the_built_model(CONFIGS / "tiny.yaml", tmp_path)


def test_meta_counts_follow_every_training_mode(tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    modes = {
        "llm": {"trainable": "full"},
        "vision_tower": {"trainable": "full"},
        "video_connector": {"trainable": "frozen"},
        "audio_tower": {"trainable": "full"},
        "audio_projector": {"trainable": "frozen"},
        "history_compressor": {"backbone_trainable": "lora", "lora_r": 4, "projector_trainable": "frozen"},
    }
    for part, args in modes.items():
        config["init_args"][part]["init_args"] = {
            **(config["init_args"][part].get("init_args") or {}),
            **args,
        }
    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(config))
    rows = _check_against_the_built_model(path, tmp_path)
    assert rows["video_connector"]["trainable"] == rows["audio_projector"]["trainable"] == 0
    assert rows["vision_tower"]["trainable"] == rows["vision_tower"]["total"] > 0
    assert rows["llm"]["trainable"] == rows["llm"]["total"]
    assert 0 < rows["history_compressor"]["trainable"] < rows["history_compressor"]["total"]


def test_paper_configuration_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(["--model", str(CONFIGS / "paper.yaml")], tmp_path)
    printed = capsys.readouterr().out
    assert "known architecture of DAMO-NLP-SG/VideoLLaMA2.1-7B-AV" in printed
    # Qwen2-7B: 7,615,616,512 weights; LoRA r=128 on all 7 linear kinds of 28 layers adds 322,961,408.
    assert rows["llm"]["total"] == 7_615_616_512 + 322_961_408
    assert rows["llm"]["trainable"] == 322_961_408
    assert rows["video_connector"]["source"] == "1352 tokens for 16 frames"  # 8 x 13 x 13
    assert rows["video_connector"]["total"] == 376_889_248
    assert rows["vision_tower"]["trainable"] == 0
    assert 390e6 < rows["vision_tower"]["total"] < 430e6  # So400M, blocks up to the second-to-last
    assert 85e6 < rows["audio_tower"]["total"] < 95e6  # BEATs 12 x 768
    assert rows["audio_projector"]["total"] == 768 * 3584 + 3584
    assert rows["history_compressor"]["total"] == 371_516_416 + 3584 * 1024 + 3584 + 1024


def test_a_bad_config_fails_before_anything_is_built(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny.yaml").read_text().replace("lora_r: 8", "lora_rank: 8"))
    with pytest.raises(SystemExit):
        main(["--model", str(bad)])
    with pytest.raises(ValueError, match="no local folder and no known architecture"):
        count_parameters({"init_args": {"llm": {"init_args": {"name_or_path": "someone/unknown-7b"}}}})
