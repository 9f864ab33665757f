"""Stage D (GRPO) on the tiny multimodal model through a real Trainer: only the LoRA adapter moves,
every documented metric is logged and finite, missing rewards are left out, bad setups are refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lit_modules.grpo import GRPOModule
from multimood.models import (
    MultiMoodModel,
)
from multimood.rewards.base import RewardOutput
from multimood.rewards.combine import CombinedReward
from multimood.rewards.format import FormatReward
from multimood.rewards.similarity import SimilarityReward
from multimood.rl.rollout import TransformersRollout
from tests.tiny_stages import LengthReward, changed, cpu_trainer, fused_model, mesc_data, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _fused(llm: str = "lora", connector: str = "frozen") -> MultiMoodModel:
    return fused_model(llm=llm, projectors=connector, lora_b=llm == "lora")


def test_grpo_trains_the_adapter_only_and_logs_every_metric(tmp_path: Path, synthetic_mesc: Path) -> None:
    model = _fused()
    before = snapshot(model)
    length = LengthReward(missing_every=3)
    reward = CombinedReward(
        {"length": length, "similarity": SimilarityReward("tiny:bge-m3"), "format": FormatReward()},
        weights={"length": 1.0, "similarity": 1.0, "format": 0.0},
    )
    module = GRPOModule(
        model,
        reward,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        rollout=TransformersRollout(max_new_tokens=8),
        num_generations=3,
        beta=0.1,
        updates_per_generation=2,
    )
    trainer = cpu_trainer(tmp_path, steps=4)  # 2 batches x 2 updates
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    assert length.calls == 2  # one reward call per generation batch, all completions at once
    moved = changed(before, model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable
    assert all("lora_" in n and n.startswith("llm.") for n in moved)
    logged = trainer.callback_metrics
    for key in (
        "train/loss",
        "train/reward",
        "train/reward_std",
        "train/reward_missing_fraction",
        "train/zero_std_group_fraction",
        "train/completion_length",
        "train/parse_failure_rate",
        "train/kl",
        "train/clip_fraction",
        "time/generate_seconds",
        "time/reward_seconds",
        "reward/length/mean",
        "reward/length/missing_fraction",
        "reward/similarity/missing_fraction",
        "reward/total/mean",
    ):
        assert key in logged, key
        assert math.isfinite(float(logged[key])), key
    # The random tiny LLM writes nothing that parses: similarity is missing everywhere, and the
    # combined reward is the length reward where it is present (renormalised over what is present).
    assert float(logged["reward/similarity/missing_fraction"]) == 1.0
    assert float(logged["train/reward_missing_fraction"]) == pytest.approx(2 / 6)
    assert 1 <= float(logged["train/completion_length"]) <= 8


def test_a_group_without_rewards_moves_nothing(tmp_path: Path, synthetic_mesc: Path) -> None:
    class Nothing:
        name = "judge"

        def __call__(self, completions, references):
            return RewardOutput.missing(len(completions), {"failures": float(len(completions))})

    model = _fused()
    before = snapshot(model)
    module = GRPOModule(
        model,
        CombinedReward({"judge": Nothing()}),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        rollout=TransformersRollout(max_new_tokens=4),
        num_generations=2,
        beta=0.5,
    )
    trainer = cpu_trainer(tmp_path, steps=1)
    trainer.fit(module, datamodule=mesc_data(synthetic_mesc))
    # Every reward missing: no advantage, every completion out of the loss (not scored 0): the
    # loss is exactly 0 and nothing moves.
    assert float(trainer.callback_metrics["train/loss"]) == 0.0
    assert float(trainer.callback_metrics["train/reward_missing_fraction"]) == 1.0
    assert "train/reward" not in trainer.callback_metrics  # no reward to average: not logged as a number
    assert not changed(before, model)


def test_bad_grpo_setups_are_refused() -> None:
    reward = CombinedReward({"length": LengthReward()})
    with pytest.raises(ValueError, match="LoRA adapter"):
        GRPOModule(_fused(llm="full"), reward, beta=0.5)
    with pytest.raises(ValueError, match="video_connector"):
        GRPOModule(_fused(connector="full"), reward)
    with pytest.raises(ValueError, match="num_generations"):
        GRPOModule(_fused(), reward, num_generations=1)


def test_the_tiny_grpo_config_runs_end_to_end(tmp_path: Path, synthetic_mesc: Path) -> None:
    import fit

    config = Path(__file__).resolve().parents[2] / "configs" / "grpo" / "tiny.yaml"
    fit.main(
        [
            "--config",
            str(config),
            f"--data.init_args.data_dir={synthetic_mesc}",
            "--data.init_args.limit_samples=4",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_frames=2",
            "--data.init_args.max_audio_seconds=1.0",
            "--trainer.max_steps=1",
            "--trainer.limit_test_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--model.init_args.rollout.init_args.max_new_tokens=4",
            "--model.init_args.max_new_tokens=4",
        ]
    )
    (last,) = tmp_path.rglob("checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert state and all("lora_" in key for key in state)  # only the adapter GRPO trains
    (metrics,) = tmp_path.rglob("test/metrics.json")
    assert metrics.is_file()
