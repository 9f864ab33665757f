"""Resume: a run stopped mid-epoch and resumed with ``ckpt_path`` gives the losses of a run that
never stopped (same batches, same dropout masks, same optimizer and schedule state): SFT, and the RL
stages, whose sampled rollouts and rewards depend on the restored random state too."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules import MESCDataModule
from lit_modules import GRPOModule, PPOModule, SFTModule
from multimood.models import LanguageModel, MultiMoodModel
from multimood.rewards.combine import CombinedReward
from multimood.rl.rollout import TransformersRollout
from tests.tiny_stages import LengthReward, cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(L.Callback):
    """Per optimizer step at the end of each batch: the loss, the reward (RL stages), the samples."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.rewards: dict[int, float] = {}
        self.samples: dict[int, list[str]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Manual optimisation (the RL stages) returns nothing: read what the step logged.
        loss = outputs["loss"] if outputs else trainer.callback_metrics["train/loss"]
        self.losses[trainer.global_step] = float(loss)
        if "train/reward" in trainer.callback_metrics:
            self.rewards[trainer.global_step] = float(trainer.callback_metrics["train/reward"])
        self.samples[trainer.global_step] = list(batch["sample_ids"])


def _assert_resumed_like_straight(resumed: Recorder, straight: Recorder, steps, rewards: bool) -> None:
    """From the first step after the checkpoint on: the same samples, rewards (``rewards``: the RL
    stages) and losses as the run that never stopped."""
    for step in steps:
        assert resumed.samples[step] == straight.samples[step], step
        if rewards:
            assert resumed.rewards[step] == pytest.approx(straight.rewards[step], abs=1e-6), step
        assert resumed.losses[step] == pytest.approx(straight.losses[step], abs=1e-6), step


def _lora_llm() -> MultiMoodModel:
    # LoRA dropout on: a resumed run must also restore the random state.
    llm = LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8, lora_dropout=0.3)
    return MultiMoodModel(llm)


def _fit(
    module: L.LightningModule,
    root: Path,
    data_dir: Path,
    max_steps: int,
    ckpt_path: str | None,
    every_n_train_steps: int = 3,
) -> Recorder:
    data = MESCDataModule(str(data_dir), history_mode="text", batch_size=2, limit_samples=8, seed=3)
    recorder = Recorder()
    checkpoints = ModelCheckpoint(
        dirpath=root / "ckpt", every_n_train_steps=every_n_train_steps, save_top_k=-1
    )
    trainer = cpu_trainer(root, max_steps, callbacks=[recorder, checkpoints], enable_checkpointing=True)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return recorder


def _adamw(params):
    return torch.optim.AdamW(params, lr=5e-3)


def _run(root: Path, data_dir: Path, max_steps: int, ckpt_path: str | None = None) -> Recorder:
    L.seed_everything(0)
    module = SFTModule(_lora_llm(), optimizer=_adamw, warmup_ratio=0.2)
    return _fit(module, root, data_dir, max_steps, ckpt_path)


def test_resuming_mid_epoch_gives_the_losses_of_an_uninterrupted_run(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    # 8 samples in batches of 2: 4 steps per epoch; the checkpoint at step 3 is mid-epoch, and the
    # run goes on into the next epoch (a new order).
    straight = _run(tmp_path / "straight", synthetic_mesc, max_steps=7)
    assert sorted(straight.losses) == list(range(1, 8))
    stop = tmp_path / "straight" / "ckpt" / "epoch=0-step=3.ckpt"
    assert stop.is_file(), sorted(p.name for p in (tmp_path / "straight" / "ckpt").iterdir())

    resumed = _run(tmp_path / "resumed", synthetic_mesc, max_steps=7, ckpt_path=str(stop))
    assert sorted(resumed.losses) == list(range(4, 8))
    _assert_resumed_like_straight(resumed, straight, range(4, 8), rewards=False)
    # The losses move: equal numbers are not a constant.
    assert len({round(v, 6) for v in straight.losses.values()}) == len(straight.losses)


def _grpo_run(root: Path, data_dir: Path, max_steps: int, ckpt_path: str | None = None) -> Recorder:
    L.seed_everything(0)
    module = GRPOModule(
        _lora_llm(),
        CombinedReward({"length": LengthReward()}),
        optimizer=_adamw,
        rollout=TransformersRollout(max_new_tokens=6),
        num_generations=2,
        beta=0.5,
        warmup_ratio=0.2,
        lr_schedule="cosine",
    )
    return _fit(module, root, data_dir, max_steps, ckpt_path)


def test_resuming_grpo_mid_epoch_gives_the_same_rollouts_and_losses(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    # Sampled completions, rewards and LoRA dropout all depend on the restored random state.
    straight = _grpo_run(tmp_path / "straight", synthetic_mesc, max_steps=6)
    assert sorted(straight.losses) == list(range(1, 7))
    stop = tmp_path / "straight" / "ckpt" / "epoch=0-step=3.ckpt"
    assert stop.is_file(), sorted(p.name for p in (tmp_path / "straight" / "ckpt").iterdir())
    resumed = _grpo_run(tmp_path / "resumed", synthetic_mesc, max_steps=6, ckpt_path=str(stop))
    assert sorted(resumed.losses) == list(range(4, 7))
    _assert_resumed_like_straight(resumed, straight, range(4, 7), rewards=True)
    assert len({round(v, 6) for v in straight.rewards.values()}) > 1  # the rollouts differ by step


def _ppo_run(root: Path, data_dir: Path, max_steps: int, ckpt_path: str | None = None) -> Recorder:
    L.seed_everything(0)
    module = PPOModule(_lora_llm(), reward=LengthReward(), optimizer=_adamw, max_new_tokens=6, ppo_epochs=2)
    # Two PPO updates per batch: a checkpoint every 4 optimizer steps is one every 2 batches.
    return _fit(module, root, data_dir, max_steps, ckpt_path, every_n_train_steps=4)


def test_resuming_ppo_mid_epoch_gives_the_same_rollouts_and_losses(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    straight = _ppo_run(tmp_path / "straight", synthetic_mesc, max_steps=8)
    assert sorted(straight.losses) == [2, 4, 6, 8]
    stop = tmp_path / "straight" / "ckpt" / "epoch=0-step=4.ckpt"
    assert stop.is_file(), sorted(p.name for p in (tmp_path / "straight" / "ckpt").iterdir())
    resumed = _ppo_run(tmp_path / "resumed", synthetic_mesc, max_steps=8, ckpt_path=str(stop))
    assert sorted(resumed.losses) == [6, 8]
    _assert_resumed_like_straight(resumed, straight, (6, 8), rewards=True)
