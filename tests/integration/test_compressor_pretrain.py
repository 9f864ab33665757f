"""Stage A (ConvCompressor pretraining) on CPU with tiny models: what trains, the loss, the metrics,
the plateau scheduler, checkpoints, phase 2 starting from phase 1, resuming, and the shipped YAMLs."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules import MESCHistoryDataModule
from lit_modules import CompressorPretrainModule, InitFrom
from lit_modules.common import trainable_keys
from multimood.constants import IGNORE_INDEX
from multimood.models import LanguageModel, MambaHistoryCompressor, MultiMoodModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "compressor"
COMPRESSOR = "model.history_compressor."

# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, llm_trainable: str = "frozen", **compressor: Any) -> MultiMoodModel:
    torch.manual_seed(seed)
    llm = LanguageModel("tiny:qwen2", dtype="float32", trainable=llm_trainable, lora_r=4, lora_alpha=8)
    factory = functools.partial(MambaHistoryCompressor, backbone="tiny:mamba", max_tokens=1024, **compressor)
    return MultiMoodModel(llm, history_compressor=factory)


def _module(seed: int = 0, lr: float = 1e-3, **kwargs: Any) -> CompressorPretrainModule:
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01)
    return CompressorPretrainModule(_model(seed), optimizer=optimizer, **kwargs)


def _data(root: Path, unit: str = "utterance", **kwargs: Any) -> MESCHistoryDataModule:
    options: dict[str, Any] = {
        "tokenizer": "tiny:qwen2",
        "history_tokenizer": "tiny:mamba",
        "history_max_tokens": 1024,
        "batch_size": 4,
    }
    options.update(kwargs)
    return MESCHistoryDataModule(str(root), unit=unit, **options)


def _trainer(**kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return L.Trainer(**options)


def _state(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class StepLosses(Callback):
    """Training losses, step by step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


# ----------------------------------------------------------------------------------- what trains
def test_only_the_compressor_trains(synthetic_mesc: Path) -> None:
    module = _module()
    before = _state(module)
    _trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1).fit(
        module, datamodule=_data(synthetic_mesc)
    )
    after = module.state_dict()
    compressor = [k for k in before if k.startswith(COMPRESSOR)]
    llm = [k for k in before if k.startswith("model.llm.")]
    assert len(compressor) > 10 and len(llm) > 10
    assert [k for k in before if not k.startswith((COMPRESSOR, "model.llm."))] == []
    assert [k for k in compressor if torch.equal(before[k], after[k])] == []  # Mamba, <MEM>, P_H all move
    assert [k for k in llm if not torch.equal(before[k], after[k])] == []  # the LLM does not


def test_stage_a_refuses_a_training_llm_and_a_frozen_compressor() -> None:
    with pytest.raises(ValueError, match=r"\['llm'\] would train"):
        CompressorPretrainModule(_model(llm_trainable="lora"))
    with pytest.raises(ValueError, match=r"\['history_compressor'\] must train"):
        CompressorPretrainModule(_model(backbone_trainable="frozen", projector_trainable="frozen"))


def test_a_data_module_with_another_history_tokenizer_is_refused_at_setup(synthetic_mesc: Path) -> None:
    # The Qwen2 vocabulary: another <MEM> id than tiny:mamba's. The data module takes its history
    # tokenizer from the model, so one set differently is refused when the trainer connects them.
    data = _data(synthetic_mesc, history_tokenizer="packaged:qwen2-tokenizer")
    with pytest.raises(ValueError, match=r"data\.init_args\.history_tokenizer .* contradicts"):
        _trainer(max_steps=1).fit(_module(), datamodule=data)


# ----------------------------------------------------------------------------------- loss and metrics
def test_the_reconstruction_loss_drops_on_a_tiny_overfit(synthetic_mesc: Path) -> None:
    losses = StepLosses()
    module = _module(lr=1e-2)
    # A random tiny LM initialised at std 0.02 barely reacts to any input embedding (its logits stay
    # within about +-1.3 and its attention is uniform), so no compressor could lower its loss.
    # Larger weights make the frozen LM steerable; it still stays frozen.
    with torch.no_grad():
        for param in module.model.llm.parameters():
            if param.dim() == 2:
                param.mul_(10.0)
        module.model.llm.input_embeddings().weight.mul_(0.3)  # tied: x3 overall
    data = _data(synthetic_mesc, "utterance", limit_samples=2, batch_size=2)
    _trainer(max_epochs=60, limit_val_batches=0, callbacks=[losses]).fit(module, datamodule=data)
    first, last = losses.losses[0], sum(losses.losses[-5:]) / 5
    # Measured: 7.50 -> 7.17; the floor is the frozen random LM's, not the compressor's.
    assert last < first - 0.25, f"loss {first:.3f} -> {last:.3f}"


def test_val_metrics_are_weighted_by_supervised_tokens(synthetic_mesc: Path) -> None:
    module = _module()
    data = _data(synthetic_mesc, batch_size=4)
    trainer = _trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(module, datamodule=data)

    # Independent oracle: the fused model's own loss on each validation batch, weighted by its
    # supervised next-token targets (spliced positions are never supervised, so the batch labels
    # count them), and the accuracy recomputed with the batch labels realigned to the spliced ones.
    module.eval()
    losses, tokens, correct = [], [], 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            out = module.model(batch)
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            losses.append(float(out.loss))
            tokens.append(n)
            spliced = module.model.prepare_inputs(batch).labels
            predicted = out.logits[:, :-1].argmax(-1)
            correct += int(((predicted == spliced[:, 1:]) & (spliced[:, 1:] != IGNORE_INDEX)).sum())
    assert len(tokens) > 1 and len(set(tokens)) > 1
    weighted = sum(loss * n for loss, n in zip(losses, tokens, strict=True)) / sum(tokens)
    metrics = trainer.callback_metrics
    assert float(metrics["val/loss"]) == pytest.approx(weighted, rel=1e-5)
    assert float(metrics["val/loss"]) != pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert float(metrics["val/token_accuracy"]) == pytest.approx(correct / sum(tokens), rel=1e-5)


class EpochValues(Callback):
    """The monitored value at the end of every epoch (read when the next epoch starts, and at the end)."""

    def __init__(self, key: str) -> None:
        self.key, self.values = key, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self.values.append(float(trainer.callback_metrics[self.key]))

    def on_fit_end(self, trainer, pl_module) -> None:
        self.values.append(float(trainer.callback_metrics[self.key]))


@pytest.mark.parametrize(("limit_val_batches", "monitor"), [(2, "val/loss"), (0, "train/loss")])
def test_the_plateau_scheduler_steps_on_val_loss_or_without_validation_on_train_loss(
    synthetic_mesc: Path, limit_val_batches: int, monitor: str
) -> None:
    values = EpochValues(monitor)
    module = _module(lr=1e-3, plateau_factor=0.25, plateau_patience=0)
    trainer = _trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=limit_val_batches, callbacks=[values]
    )
    trainer.fit(module, datamodule=_data(synthetic_mesc))
    assert module.plateau_monitor == monitor
    (config,) = trainer.lr_scheduler_configs
    scheduler = config.scheduler
    assert config.monitor == monitor and config.interval == "epoch"
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience) == (0.25, 0)
    # Oracle: torch's scheduler replayed on the monitored value of every epoch ends where the run's did.
    assert len(values.values) == 3
    replay_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    replay = torch.optim.lr_scheduler.ReduceLROnPlateau(replay_optimizer, factor=0.25, patience=0)
    for value in values.values:
        replay.step(value)
    assert scheduler.best == pytest.approx(replay.best, rel=1e-7)
    assert scheduler.num_bad_epochs == replay.num_bad_epochs
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(replay_optimizer.param_groups[0]["lr"])
    assert lr < 1e-3  # the losses of this short run plateau: the rate was cut


def test_validation_every_few_epochs_is_refused(synthetic_mesc: Path) -> None:
    with pytest.raises(ValueError, match="check_val_every_n_epoch=2"):
        _trainer(max_epochs=2, check_val_every_n_epoch=2).fit(_module(), datamodule=_data(synthetic_mesc))


# ----------------------------------------------------------------------------------- checkpoints and phases
class StateAtFitStart(Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        self.state = _state(pl_module)


def test_checkpoint_holds_the_compressor_only_and_phase_2_starts_from_it(
    synthetic_mesc: Path, tmp_path: Path
) -> None:
    phase1 = _module(seed=0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "phase1", save_last=True)
    _trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_checkpointing=True,
        callbacks=[checkpoints],
    ).fit(phase1, datamodule=_data(synthetic_mesc))
    path = tmp_path / "phase1" / "last.ckpt"
    saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    expected = {k for k in phase1.state_dict() if k.startswith(COMPRESSOR)}
    assert set(saved) == expected == set(trainable_keys(phase1))
    final = phase1.state_dict()
    assert all(torch.equal(saved[k], final[k]) for k in saved)

    # Phase 2: another initial compressor, conversations, the phase-1 compressor by value.
    phase2 = _module(seed=1, init_from=[InitFrom(str(path), ["history_compressor"])])
    fresh = _state(phase2)
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved)
    at_start = StateAtFitStart()
    _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[at_start]).fit(
        phase2, datamodule=_data(synthetic_mesc, "conversation", batch_size=2)
    )
    assert all(torch.equal(at_start.state[k], saved[k]) for k in saved)
    llm = [k for k in fresh if k.startswith("model.llm.")]
    assert all(torch.equal(at_start.state[k], fresh[k]) for k in llm)  # the frozen LLM is untouched
    after = phase2.state_dict()
    assert all(not torch.equal(after[k], saved[k]) for k in saved)  # and phase 2 trains on from there


def test_resuming_gives_the_losses_of_an_uninterrupted_run(synthetic_mesc: Path, tmp_path: Path) -> None:
    def run(max_epochs: int, ckpt_path: str | None = None, **kwargs: Any) -> list[float]:
        losses = StepLosses()
        trainer = _trainer(
            max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1, callbacks=[losses], **kwargs
        )
        trainer.fit(_module(seed=0), datamodule=_data(synthetic_mesc), ckpt_path=ckpt_path)
        return losses.losses

    whole = run(2)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    losses = StepLosses()
    _trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_checkpointing=True,
        callbacks=[losses, checkpoints],
    ).fit(_module(seed=0), datamodule=_data(synthetic_mesc))
    resumed = run(2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert losses.losses == pytest.approx(whole[:2], rel=1e-6)
    assert resumed == pytest.approx(whole[2:], rel=1e-5)


# ----------------------------------------------------------------------------------- the YAMLs
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_compressor_configs_parse_with_fit(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import fit

    text = path.read_text()
    assert text.startswith("#") and f"python fit.py --config configs/compressor/{path.name}" in text
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--config", str(path), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: lit_modules.CompressorPretrainModule" in out
    assert "class_path: datamodules.MESCHistoryDataModule" in out


def test_the_tiny_configs_run_phase_1_then_phase_2(
    synthetic_mesc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fit

    # The YAMLs' relative paths, read from a scratch working directory holding the synthetic MESC.
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    os.symlink(synthetic_mesc, tmp_path / "runs" / "demo" / "mesc")
    monkeypatch.chdir(tmp_path)
    fit.main(["--config", str(CONFIGS / "tiny_utterances.yaml")])
    phase1 = tmp_path / "runs/compressor/tiny_utterances/lightning_logs/version_0/checkpoints/last.ckpt"
    fit.main(["--config", str(CONFIGS / "tiny_conversations.yaml")])
    phase2 = tmp_path / "runs/compressor/tiny_conversations/lightning_logs/version_0/checkpoints/last.ckpt"
    one, two = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (phase1, phase2))
    assert set(one) == set(two) and all(k.startswith(COMPRESSOR) for k in one)
    assert any(not torch.equal(one[k], two[k]) for k in one)
