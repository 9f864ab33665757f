"""The SFT stage under DDP (2 CPU processes, gloo): it trains with unused-parameter detection off,
and its evaluation (generation, parsing, metrics) gives the values of one process, with every
sample scored exactly once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from datamodules import MESCDataModule
from lit_modules import SFTModule
from multimood.models import LanguageModel, MambaHistoryCompressor, MultiMoodModel
from tests.tiny_stages import LengthReward, fused_model


def _compressor(llm_hidden: int) -> MambaHistoryCompressor:
    return MambaHistoryCompressor(
        llm_hidden, backbone="tiny:mamba", backbone_trainable="frozen", projector_trainable="full"
    )


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01)


def _module() -> SFTModule:
    torch.manual_seed(0)
    model = MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8),
        history_compressor=_compressor,
    )
    with torch.no_grad():  # adapters that change the output, so generations differ per sample
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return SFTModule(model, optimizer=_sgd, max_new_tokens=12)


def _trainer(root: Path, devices: int, timeout_s: float | None = None, **overrides) -> L.Trainer:
    """A CPU trainer; with ``timeout_s`` a collective that waits longer fails instead of hanging."""
    timeout = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    strategy = (
        DDPStrategy(start_method="spawn", find_unused_parameters=False, **timeout) if devices > 1 else "auto"
    )
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **overrides,
    )


def _data(root: Path) -> MESCDataModule:
    # Odd-sized evaluation batches: the ranks' shards differ in size.
    return MESCDataModule(str(root), history_mode="compressor", batch_size=2, eval_batch_size=3, seed=2)


@pytest.mark.usefixtures("one_thread")
def test_ddp_evaluation_equals_one_process_and_scores_each_sample_once(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    _trainer(tmp_path / "one", devices=1).test(_module(), datamodule=_data(synthetic_mesc), verbose=False)
    _trainer(tmp_path / "two", devices=2).test(_module(), datamodule=_data(synthetic_mesc), verbose=False)

    def read(folder: Path) -> tuple[list[dict], dict]:
        rows = [json.loads(x) for x in (folder / "test" / "predictions.jsonl").read_text().splitlines()]
        return rows, json.loads((folder / "test" / "metrics.json").read_text())

    rows_one, metrics_one = read(tmp_path / "one")
    rows_two, metrics_two = read(tmp_path / "two")
    ids = [r["sample_id"] for r in rows_two]
    assert len(ids) == len(set(ids)) == len(rows_one) > 2  # every sample once, none padded in
    assert rows_two == rows_one  # same answers, same order (sorted by sample id)
    assert metrics_two.keys() == metrics_one.keys()
    for key, value in metrics_one.items():
        assert metrics_two[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert len({r["predict"] for r in rows_one}) > 1  # real, varied generations were scored


@pytest.mark.usefixtures("one_thread")
def test_sft_trains_under_ddp_without_unused_parameter_detection(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    # Some batches have no history at all: the compressor still takes part in every step.
    trainer = _trainer(tmp_path, devices=2, max_steps=2, limit_val_batches=0)
    module = _module()
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer.fit(module, datamodule=_data(synthetic_mesc))
    after = dict(module.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    assert moved == set(before)  # the spawned ranks' weights came back, all of them trained


@pytest.mark.usefixtures("one_thread")
def test_grpo_trains_under_ddp(tmp_path: Path, synthetic_mesc: Path) -> None:
    # Manual optimisation under DDP: every rank samples, rewards and steps on its own prompts; the
    # adapter's gradients are averaged, so the ranks' weights stay equal and all of them train.
    from lit_modules import GRPOModule
    from multimood.rewards.combine import CombinedReward
    from multimood.rl.rollout import TransformersRollout

    model = fused_model(media=False)  # LoRA on the tiny LLM, the compressor frozen
    module = GRPOModule(
        model,
        CombinedReward({"length": LengthReward()}),
        optimizer=_sgd,
        rollout=TransformersRollout(max_new_tokens=6),
        num_generations=2,
        beta=0.5,
    )
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    _trainer(tmp_path, devices=2, max_steps=2, limit_val_batches=0).fit(
        module, datamodule=_data(synthetic_mesc)
    )
    after = dict(module.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    assert moved and all("lora_" in n for n in moved)


def test_the_fsdp_trainer_config_builds_its_strategy() -> None:
    # FSDP needs CUDA (Lightning refuses it on CPU), so here the config's strategy is built alone.
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy

    config = Path(__file__).resolve().parents[2] / "configs" / "trainer" / "fsdp.yaml"
    trainer = yaml.safe_load(config.read_text())["trainer"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Strategy, "strategy")
    built = parser.instantiate_classes(parser.parse_object({"strategy": trainer["strategy"]}))
    assert isinstance(built.strategy, FSDPStrategy)
    assert trainer["precision"] == "bf16-true"


@pytest.mark.gpu
def test_sft_trains_and_evaluates_under_fsdp_on_gpus(tmp_path: Path, synthetic_mesc: Path) -> None:
    import fit

    if not torch.cuda.is_available():
        pytest.fail("this test needs CUDA GPUs (run it with -m gpu on a GPU machine)")
    configs = Path(__file__).resolve().parents[2] / "configs"
    fit.main(
        [
            "--config", str(configs / "sft" / "tiny.yaml"),
            "--config", str(configs / "trainer" / "fsdp.yaml"),
            "--model.init_args.model.init_args.stand_ins=all",
            f"--data.init_args.data_dir={synthetic_mesc}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--data.init_args.limit_samples=4",
            "--model.init_args.max_new_tokens=4",
        ]
    )  # fmt: skip
    assert list(tmp_path.rglob("test/metrics.json"))


class _NoRewardOnRankZero:
    """A constant reward 0.5, missing for every completion on rank 0 (a judge down on one node)."""

    name = "rank_one_only"

    def __call__(self, completions, references):
        from multimood.rewards.base import RewardOutput

        n = len(completions)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return RewardOutput(torch.full((n,), 0.5), torch.full((n,), rank != 0))


@pytest.mark.usefixtures("one_thread")
def test_ppo_trains_under_ddp_when_one_rank_has_no_reward(tmp_path: Path, synthetic_mesc: Path) -> None:
    # Rank 0 has no reward at all: it must still take part in every backward pass and optimizer
    # step (zero gradients), or rank 1 would wait for it forever. The collective timeout turns such
    # a hang into an error.
    from lit_modules import PPOModule

    model = fused_model(media=False)  # LoRA on the tiny LLM, the compressor frozen
    module = PPOModule(model, reward=_NoRewardOnRankZero(), optimizer=_sgd, max_new_tokens=6, ppo_epochs=2)
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    # two batches of two PPO epochs
    trainer = _trainer(tmp_path, devices=2, timeout_s=120, max_steps=4, limit_val_batches=0)
    trainer.fit(module, datamodule=_data(synthetic_mesc))
    after = dict(module.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    # rank 0's weights came back: moved by rank 1's averaged gradients
    assert moved and {n.split(".")[0] for n in moved} == {"model", "value_head"}
    assert all("lora_" in n for n in moved if n.startswith("model."))
