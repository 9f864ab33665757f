"""Every shipped YAML parses with jsonargparse against the classes it names (nothing is built)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from jsonargparse import ArgumentParser

from multimood.models.multimood import MultiMoodModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _parse(base: type, path: Path):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "component")
    return parser.parse_args(["--component", str(path)])


@pytest.mark.parametrize("path", sorted((CONFIGS / "model").glob("*.yaml")), ids=lambda p: p.name)
def test_model_configs_parse(path: Path) -> None:
    cfg = _parse(MultiMoodModel, path)
    assert cfg.component.class_path == "multimood.models.MultiMoodModel"
    assert path.read_text().startswith("#"), "each config starts with a comment saying what it is"


@pytest.mark.parametrize("path", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_data_configs_parse(path: Path) -> None:
    cfg = _parse(L.LightningDataModule, path)
    assert cfg.component.class_path.startswith("datamodules.")
    assert path.read_text().startswith("#")


def test_a_misspelled_option_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "data" / "mesc.yaml").read_text().replace("history_length:", "history_lenght:"))
    with pytest.raises(Exception, match="history_lenght"):
        _parse(L.LightningDataModule, bad)


def test_fit_entry_point_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    import fit

    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--ckpt_path" in out
    assert "--trainer.max_epochs" in out
