"""The training stages through a real Trainer on CPU: exactly the intended parameters move,
checkpoints hold only what trains, ``init_from`` carries earlier stages by value, evaluation writes
predictions and metrics (MESC and DFEW), and ``fit.py`` runs the tiny stage configs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fit
from datamodules import DFEWDataModule
from lit_modules import ProjectorAlignModule, SFTModule
from lit_modules.common import InitFrom
from multimood.models import (
    LanguageModel,
    MambaHistoryCompressor,
    MultiMoodModel,
    STCConnector,
    VisionTower,
)
from tests.tiny_stages import changed, cpu_trainer, fused_model, lora_b_nonzero, mesc_data, sgd, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_sft_trains_exactly_the_llm_adapters(tmp_path: Path, synthetic_mesc: Path) -> None:
    model = fused_model()
    lora_b_nonzero(model)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    assert expected and all("lora_" in n and n.startswith("llm.") for n in expected)
    before = snapshot(model)
    module = SFTModule(model, optimizer=sgd, warmup_ratio=0.0, lr_schedule="constant")
    cpu_trainer(tmp_path, steps=2).fit(module, datamodule=mesc_data(synthetic_mesc))
    assert changed(before, model) == expected


@pytest.mark.parametrize("target", ["answer", "descriptions"])
def test_projector_alignment_trains_exactly_the_projections(
    tmp_path: Path, synthetic_mesc: Path, target: str
) -> None:
    # Both objectives of stage B: the SFT answer, or the clips' descriptions as the targets.
    model = fused_model(llm="frozen", projectors="full")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in expected} == {"video_connector", "audio_projector"}
    before = snapshot(model)
    module = ProjectorAlignModule(model, optimizer=sgd, warmup_ratio=0.0, lr_schedule="constant")
    data = mesc_data(synthetic_mesc, modality_probs=None, target=target)  # every sample has both media
    cpu_trainer(tmp_path, steps=2).fit(module, datamodule=data)
    moved = changed(before, model)
    # Every tensor of both projections moves (biases included); nothing else does.
    assert moved == expected


def test_stages_refuse_a_model_that_trains_the_wrong_parts() -> None:
    with pytest.raises(ValueError, match=r"ProjectorAlignModule.*llm"):
        ProjectorAlignModule(fused_model(llm="lora", projectors="full", media=True))
    with pytest.raises(ValueError, match="must train"):
        ProjectorAlignModule(fused_model(llm="frozen", projectors="frozen", media=True))


def test_checkpoints_hold_only_what_trains_and_init_from_carries_it_by_value(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    # Stage B: train the projections, keep the last checkpoint.
    stage_b = fused_model(llm="frozen", projectors="full")
    module_b = ProjectorAlignModule(stage_b, optimizer=sgd, warmup_ratio=0.0)
    trainer = cpu_trainer(tmp_path / "b", steps=2, enable_checkpointing=True)
    trainer.fit(module_b, datamodule=mesc_data(synthetic_mesc, modality_probs=None))
    (ckpt_b,) = (tmp_path / "b").rglob("*.ckpt")
    state = torch.load(ckpt_b, map_location="cpu", weights_only=True)["state_dict"]
    trained = {f"model.{n}" for n, p in stage_b.named_parameters() if p.requires_grad}
    assert set(state) == trained  # no tower, LLM base or compressor tensor
    assert not any(k.startswith(("model.vision_tower", "model.audio_tower", "model.llm")) for k in state)

    # Stage C starts from B's projections: equal by value to what B trained (not the random init).
    stage_c = fused_model(llm="lora", projectors="frozen")
    connector_init = {k: v.clone() for k, v in stage_c.video_connector.state_dict().items()}
    module_c = SFTModule(
        stage_c,
        optimizer=sgd,
        init_from=[InitFrom(str(ckpt_b), components=["video_connector", "audio_projector"])],
    )
    cpu_trainer(tmp_path / "c", steps=1, enable_checkpointing=True).fit(
        module_c, datamodule=mesc_data(synthetic_mesc)
    )
    for key, value in stage_b.video_connector.state_dict().items():
        assert torch.equal(stage_c.video_connector.state_dict()[key], value), key
    assert any(not torch.equal(connector_init[k], v) for k, v in stage_c.video_connector.state_dict().items())
    for key, value in stage_b.audio_projector.state_dict().items():
        assert torch.equal(stage_c.audio_projector.state_dict()[key], value), key
    # C's own checkpoint holds its adapters only (the frozen projections come back via init_from).
    (ckpt_c,) = (tmp_path / "c").rglob("*.ckpt")
    keys_c = set(torch.load(ckpt_c, map_location="cpu", weights_only=True)["state_dict"])
    assert keys_c and all("lora_" in k for k in keys_c)


def test_init_from_refuses_what_does_not_fit(tmp_path: Path, synthetic_mesc: Path) -> None:
    from lit_modules.common import load_init_from

    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"model.video_connector.nope": torch.zeros(1)}}, path)
    model = fused_model(projectors="frozen")
    with pytest.raises(ValueError, match="nope"):
        load_init_from(model, [InitFrom(str(path), components=["video_connector"])])
    with pytest.raises(ValueError, match="holds no tensors of \\['history_compressor'\\]"):
        load_init_from(model, [InitFrom(str(path), components=["history_compressor"])])
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_init_from(model, [InitFrom(str(tmp_path / "missing.ckpt"))])


def test_evaluation_writes_predictions_and_metrics(tmp_path: Path, synthetic_mesc: Path) -> None:
    module = SFTModule(fused_model(media=False), optimizer=sgd, max_new_tokens=8)
    data = mesc_data(synthetic_mesc, media=False, history_mode="compressor", eval_batch_size=3)
    trainer = cpu_trainer(tmp_path, steps=1)
    (results,) = trainer.test(module, datamodule=data, verbose=False)
    folder = tmp_path / "test"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((folder / "metrics.json").read_text())
    expected = sorted(s.sample_id for s in data.datasets["test"].samples)
    assert sorted(r["sample_id"] for r in rows) == expected  # each sample once
    assert metrics["num_samples"] == len(expected) > 1
    assert {"sample_id", "label", "predict"} <= set(rows[0])
    assert {"client_emotion/accuracy", "response/bleu2", "parse_failure_rate"} <= set(metrics)
    assert results["test/parse_failure_rate"] == pytest.approx(metrics["parse_failure_rate"])


def test_dfew_trains_and_scores_uar_and_war(tmp_path: Path) -> None:
    from multimood.data.synthetic import make_dfew

    root = tmp_path / "dfew"
    make_dfew(root, num_clips=20, seed=0, width=64, height=48, sample_rate=16_000, channels=1)
    torch.manual_seed(0)
    model = MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=lambda c, d: STCConnector(c, d, depth=1, trainable="frozen"),
    )
    module = SFTModule(model, optimizer=sgd, max_new_tokens=6, generate_on_validation=False)
    data = DFEWDataModule(str(root), fold=1, num_frames=2, batch_size=4, limit_samples=4, val_fraction=0.0)
    trainer = cpu_trainer(tmp_path, steps=1)
    trainer.fit(module, datamodule=data)
    (results,) = trainer.test(module, datamodule=data, verbose=False)
    assert {"test/uar", "test/war", "test/recall/Happy", "test/parse_failure_rate"} <= set(results)
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["num_samples"] == 4


def test_the_tiny_configs_run_end_to_end_and_evaluate_a_checkpoint(
    tmp_path: Path, synthetic_mesc: Path
) -> None:
    small = [
        f"--data.init_args.data_dir={synthetic_mesc}",
        "--data.init_args.limit_samples=4",
        "--data.init_args.num_frames=2",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
    ]
    for stage in ("projector", "sft"):
        root = tmp_path / stage
        args = ["--config", str(CONFIGS / stage / "tiny.yaml"), *small, f"--trainer.default_root_dir={root}"]
        if stage == "sft":
            args += ["--model.init_args.max_new_tokens=4"]
        fit.main(args)
        assert len(list(root.rglob("checkpoints/last.ckpt"))) == 1
    # The SFT config tests after fit; then one command evaluates the checkpoint on val.
    assert list((tmp_path / "sft").rglob("test/metrics.json"))
    (last,) = (tmp_path / "sft").rglob("checkpoints/last.ckpt")
    args = [
        "--config",
        str(CONFIGS / "sft" / "tiny.yaml"),
        *small,
        f"--trainer.default_root_dir={tmp_path / 'eval'}",
    ]
    fit.main([*args, "--run=validate", f"--ckpt_path={last}", "--model.init_args.max_new_tokens=4"])
    (metrics,) = list((tmp_path / "eval").rglob("val/metrics.json"))
    assert json.loads(metrics.read_text())["num_samples"] >= 1


def test_init_from_carries_stage_a_compressor_into_sft_by_value(tmp_path: Path, synthetic_mesc: Path) -> None:
    from datamodules import MESCHistoryDataModule
    from lit_modules import CompressorPretrainModule

    # Stage A: the whole compressor trains, the LLM is frozen.
    torch.manual_seed(1)
    stage_a = MultiMoodModel(
        LanguageModel("tiny:qwen2", trainable="frozen"),
        history_compressor=lambda d: MambaHistoryCompressor(d, backbone="tiny:mamba", max_tokens=1024),
    )
    module_a = CompressorPretrainModule(stage_a, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data_a = MESCHistoryDataModule(str(synthetic_mesc), unit="utterance", batch_size=4, limit_samples=8)
    cpu_trainer(tmp_path / "a", steps=2, enable_checkpointing=True).fit(module_a, datamodule=data_a)
    (ckpt_a,) = (tmp_path / "a").rglob("*.ckpt")
    trained = {k: v.clone() for k, v in stage_a.history_compressor.state_dict().items()}

    # Stage C: a frozen compressor (same structure) starts from A's values; it stays frozen.
    stage_c = fused_model(media=False)
    before = {k: v.clone() for k, v in stage_c.history_compressor.state_dict().items()}
    assert any(not torch.equal(before[k], trained[k]) for k in trained)  # not equal by chance
    module_c = SFTModule(
        stage_c, optimizer=sgd, init_from=[InitFrom(str(ckpt_a), components=["history_compressor"])]
    )
    data_c = mesc_data(synthetic_mesc, media=False, history_mode="compressor")
    cpu_trainer(tmp_path / "c", steps=1).fit(module_c, datamodule=data_c)
    for key, value in stage_c.history_compressor.state_dict().items():
        assert torch.equal(value, trained[key]), key
