"""Data under DDP (2 CPU processes, gloo): evaluation sees every sample exactly once, and the media
counts logged are the sums over the ranks, equal to what one process counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from datamodules import MediaIssueMonitor, MESCDataModule


class _Recorder(L.LightningModule):
    """Writes the sample ids each rank evaluates to ``out/rank{r}.json``; no model."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # DDP needs a parameter to wrap
        self.seen: list[str] = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.seen.extend(batch["sample_ids"])

    def on_test_epoch_end(self) -> None:
        path = Path(self.out) / f"rank{self.global_rank}-of-{self.trainer.world_size}.json"
        path.write_text(json.dumps(self.seen))


def _run(root: Path, out: Path, devices: int) -> dict[str, float]:
    dm = MESCDataModule(
        str(root),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_mode="none",
        num_frames=2,
        image_size=28,
        eval_batch_size=3,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        callbacks=[MediaIssueMonitor()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    (results,) = trainer.test(_Recorder(str(out)), datamodule=dm, verbose=False)
    return results


def test_evaluation_under_ddp_equals_one_process(synthetic_mesc: Path, tmp_path: Path) -> None:
    root = tmp_path / "mesc"
    shutil.copytree(synthetic_mesc, root)
    # Damage a few test clips so that both ranks meet bad media.
    test_rows = json.loads((root / "test.json").read_text())
    assert test_rows, "the synthetic test split is empty"
    clips = sorted((root / "clips").iterdir())
    for victim in clips[::7]:
        victim.write_bytes(b"not a video")

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = _run(root, tmp_path / "one", devices=1)
    double = _run(root, tmp_path / "two", devices=2)

    (alone,) = [json.loads(p.read_text()) for p in (tmp_path / "one").iterdir()]
    shards = [json.loads(p.read_text()) for p in sorted((tmp_path / "two").iterdir())]
    assert len(shards) == 2 and all(shards)
    together = [sample for shard in shards for sample in shard]
    assert sorted(together) == sorted(alone)  # every sample once: no padding duplicates, none lost
    assert len(set(together)) == len(together)

    media = {k: v for k, v in single.items() if "/media/" in k}
    assert media["test/media/missing_video"] > 0 and media["test/media/missing_audio"] > 0
    assert {k: v for k, v in double.items() if "/media/" in k} == media  # summed over the ranks


@pytest.mark.parametrize("world", [2])
def test_training_loaders_stay_in_step(synthetic_mesc: Path, world: int) -> None:
    # Without a trainer the module serves one process; with one it serves its rank's share.
    class _FakeTrainer:
        def __init__(self, rank: int) -> None:
            self.world_size, self.global_rank = world, rank

    lengths, seen = [], []
    for rank in range(world):
        dm = MESCDataModule(str(synthetic_mesc), tokenizer="tiny:qwen2", history_mode="none", batch_size=2)
        dm.trainer = _FakeTrainer(rank)
        dm.setup("fit")
        loader = dm.train_dataloader()
        lengths.append(len(loader))
        seen += [index for index, _ in loader.sampler]
    total = len(dm.datasets["train"])
    assert len(set(lengths)) == 1  # the same number of steps on every rank
    assert sorted(set(seen)) == list(range(total))
