"""The junction of data and model: a real MESCDataModule batch (synthetic clips, compressor history)
through the fused model of configs/model/tiny.yaml: forward, backward, an optimizer step; what
trains moves and what is frozen does not."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from jsonargparse import ArgumentParser

from multimood.models.multimood import MultiMoodModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _component(base: type, path: Path, **overrides):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "component")
    cfg = parser.parse_args(["--component", str(path)])
    for key, value in overrides.items():
        cfg.component.init_args[key] = value
    return parser.instantiate_classes(cfg).component


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    # Bit-level identity: packed 4-bit codes in a float storage can read as NaN.
    return tensor.detach().contiguous().view(torch.uint8).clone()


def test_a_data_module_batch_trains_the_tiny_model(synthetic_mesc: Path) -> None:
    torch.manual_seed(0)
    model: MultiMoodModel = _component(MultiMoodModel, CONFIGS / "model" / "tiny.yaml")
    dm = _component(
        L.LightningDataModule,
        CONFIGS / "data" / "mesc_synthetic.yaml",
        data_dir=str(synthetic_mesc),
        modality_probs=None,  # every modality in this batch: every path is exercised for real
    )
    dm.connect(model)  # tokenizers and frame size come from the model, as fit.py's runs do
    dm.setup("fit")
    model.check_history_tokenizer(dm.history_tokenizer)
    batch = next(iter(dm.train_dataloader()))

    # What reached the model: clips decoded for every sample, a compressor history for some.
    assert batch["video_mask"].all() and batch["audio_mask"].all(), batch["media_issues"]
    assert batch["video"].shape[-2:] == tuple(model.vision_tower.image_size)
    assert batch["history_mem_token_id"] == model.history_compressor.mem_token_id
    assert (batch["history_ids"] == model.history_compressor.mem_token_id).sum() > 0

    before = {name: _bits(p) for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(2):  # LoRA B starts at zero: LoRA A moves from the second step on
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    after = {name: _bits(p) for name, p in model.named_parameters()}

    # Every part of the pipeline has something that trains, and all of it moved.
    for part in ("video_connector", "audio_projector", "history_compressor", "llm"):
        assert any(name.startswith(part + ".") for name in trainable), part
    still = sorted(name for name in trainable if torch.equal(before[name], after[name]))
    assert not still, f"trainable parameters that did not move: {still}"
    moved = sorted(
        name for name in before if name not in trainable and not torch.equal(before[name], after[name])
    )
    assert not moved, f"frozen parameters that moved: {moved}"
    assert not any(name.startswith(("vision_tower.", "audio_tower.")) for name in trainable)
