"""Every shipped YAML is parsed by the real CLI (fit.py's MultiMoodCLI); bad configs fail before
any model is built, naming the key or the path."""

from __future__ import annotations

from pathlib import Path

import pytest

import fit

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
STAGES = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in ("model", "data", "trainer"))


def _print_config(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stop:
        fit.main([*args, "--print_config"])
    out, err = capsys.readouterr()
    assert stop.value.code in (0, None), err
    return out


def test_there_are_stage_configs_for_every_stage() -> None:
    names = {str(p.relative_to(CONFIGS)) for p in STAGES}
    assert {"sft/tiny.yaml", "sft/paper.yaml", "projector/tiny.yaml", "projector/paper.yaml"} <= names
    assert {"reward_model/tiny.yaml", "reward_model/paper.yaml", "ppo/tiny.yaml", "ppo/paper.yaml"} <= names


@pytest.mark.parametrize("config", STAGES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_each_stage_config_parses_and_starts_with_its_command(
    config: Path, capsys: pytest.CaptureFixture
) -> None:
    text = config.read_text()
    assert text.startswith("#") and f"python fit.py --config {config.relative_to(REPO)}" in text
    out = _print_config(["--config", str(config)], capsys)
    assert "class_path: lit_modules." in out


@pytest.mark.parametrize("trainer", sorted((CONFIGS / "trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_each_trainer_config_composes_with_a_stage(trainer: Path, capsys: pytest.CaptureFixture) -> None:
    assert trainer.read_text().startswith("#")
    out = _print_config(["--config", str(CONFIGS / "sft" / "tiny.yaml"), "--config", str(trainer)], capsys)
    assert "trainer:" in out


@pytest.mark.parametrize("data", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_each_data_config_composes_with_a_stage(data: Path, capsys: pytest.CaptureFixture) -> None:
    out = _print_config(["--config", str(CONFIGS / "sft" / "paper.yaml"), "--data", str(data)], capsys)
    assert "class_path: datamodules." in out


@pytest.mark.parametrize("model", sorted((CONFIGS / "model").glob("*.yaml")), ids=lambda p: p.name)
def test_each_model_config_composes_with_a_stage(model: Path, capsys: pytest.CaptureFixture) -> None:
    out = _print_config(
        ["--config", str(CONFIGS / "sft" / "tiny.yaml"), "--model.init_args.model", str(model)], capsys
    )
    assert "multimood.models.MultiMoodModel" in out


@pytest.fixture
def nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any model part is a test failure: the error must come before."""
    from multimood.models import llm

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the config error was raised")

    monkeypatch.setattr(llm.LanguageModel, "__init__", refuse)


def _fit_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as error:
        fit.main(["--config", str(CONFIGS / "sft" / "tiny.yaml"), *args])
    return str(error.value) + capsys.readouterr().err


def test_a_data_value_that_contradicts_the_model_names_both_keys(
    nothing_is_built: None, synthetic_mesc: Path, capsys: pytest.CaptureFixture
) -> None:
    message = _fit_error(
        [
            f"--data.init_args.data_dir={synthetic_mesc}",
            "--data.init_args.tokenizer=packaged:qwen2-tokenizer",
        ],
        capsys,
    )
    assert "data.init_args.tokenizer" in message
    assert "model.init_args.model.init_args.llm.init_args.name_or_path" in message
    message = _fit_error(
        [f"--data.init_args.data_dir={synthetic_mesc}", "--data.init_args.history_max_tokens=77"], capsys
    )
    assert (
        "data.init_args.history_max_tokens" in message
        and "history_compressor.init_args.max_tokens" in message
    )


def test_bad_configs_fail_before_any_model_is_built(
    nothing_is_built: None, synthetic_mesc: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = f"--data.init_args.data_dir={synthetic_mesc}"
    assert "no_such_option" in _fit_error([data, "--model.init_args.no_such_option=1"], capsys)
    assert "max_epochs" in _fit_error([data, "--trainer.max_epochs=many"], capsys)
    assert "warmup_ratio" in _fit_error([data, "--model.init_args.warmup_ratio=[1]"], capsys)
    missing = tmp_path / "nope.yaml"
    assert "nope.yaml" in _fit_error(["--config", str(missing)], capsys)
    assert str(tmp_path / "no_data") in _fit_error(
        [f"--data.init_args.data_dir={tmp_path / 'no_data'}"], capsys
    )
    init_from = f"--model.init_args.init_from=[{{path: {tmp_path / 'a.ckpt'}}}]"
    message = _fit_error([data, init_from], capsys)
    assert "init_from[0].path" in message and "a.ckpt" in message
