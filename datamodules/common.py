"""Pieces the data modules share: media-issue accounting in the main process and its logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from multimood.data.datasets import MediaIssueLog
from multimood.data.sampling import EpochSampler
from multimood.tokenization import load_llm_tokenizer


def resolve_data_path(root: str | Path, path: str | None) -> Path | None:
    """``path`` relative to ``root`` unless absolute; None stays None."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root).expanduser() / p


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    collate_fn: Any,
    num_replicas: int = 1,
    rank: int = 0,
    pad: bool = True,
) -> DataLoader:
    """A DataLoader over ``dataset`` with an :class:`EpochSampler` (seeded order and per-item seeds,
    this rank's share; ``pad=False`` for evaluation, see :mod:`multimood.data.sampling`)."""
    sampler = EpochSampler(
        len(dataset), shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank, pad=pad
    )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn
    )


def replica_info(trainer: Any) -> tuple[int, int]:
    """``(world size, global rank)`` of the run a data module serves; ``(1, 0)`` without a trainer."""
    if trainer is None:
        return 1, 0
    return int(trainer.world_size), int(trainer.global_rank)


def _stage_and_epoch(trainer: Any) -> tuple[str, int]:
    if trainer is None or trainer.state.stage is None:
        return "train", 0
    return str(trainer.state.stage.value), int(trainer.current_epoch)


class MediaBatchMixin:
    """Data-module hook: record the media problems each batch carries, per stage and epoch.

    Workers cannot share counters with the main process, so every item carries its problems and
    this hook (run in the main process before the batch moves to the device) tallies them in
    ``self.media_log``; each bad file is logged once, with its name and the reason.
    """

    media_log: MediaIssueLog

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        stage, epoch = _stage_and_epoch(getattr(self, "trainer", None))
        self.media_log.record(batch.get("media_issues", ()), batch.get("dropped", ()), stage, epoch)
        return batch


class MultiModalDataModule(MediaBatchMixin, L.LightningDataModule):
    """What the MESC and DFEW modules share: the LLM tokenizer (from ``hparams.tokenizer``), the
    media-issue log, and seeded DataLoaders over ``self.datasets``.

    Subclasses fill ``self.datasets`` in ``setup`` and give their ``collator()``; ``SPLITS`` maps the
    Lightning loaders (train/val/test/predict) to dataset names.
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test", "predict": "test"}

    def __init__(self) -> None:
        super().__init__()
        self.media_log = MediaIssueLog()
        self.datasets: dict[str, Dataset] = {}
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_llm_tokenizer(self.hparams.tokenizer)
        return self._tokenizer

    def collator(self) -> Any:
        raise NotImplementedError

    def _loader(self, loader: str) -> DataLoader:
        if not self.datasets:
            self.setup()
        hp = self.hparams
        train = loader == "train"
        num_replicas, rank = replica_info(self.trainer)
        return epoch_loader(
            self.datasets[self.SPLITS[loader]],
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            seed=hp.seed,
            num_workers=hp.num_workers,
            collate_fn=self.collator(),
            num_replicas=num_replicas,
            rank=rank,
            # Training pads so that ranks stay in step; evaluation sees every sample exactly once.
            pad=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


class MediaIssueMonitor(L.Callback):
    """Logs the data module's media counts at each epoch end: ``<stage>/media/missing_video`` etc.

    Each rank counts the batches it loaded; the counts are summed over all ranks (every rank takes
    part in the sum, over a fixed list of keys) and rank 0 logs the keys that are not zero.
    """

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        media_log = getattr(trainer.datamodule, "media_log", None)
        if media_log is None:
            return
        keys = MediaIssueLog.summary_keys()
        counts = media_log.summary(stage, trainer.current_epoch)
        unknown = set(counts) - set(keys)
        if unknown:  # a reason outside MEDIA_ERROR_REASONS would silently vanish from the sum
            raise ValueError(f"media issue keys outside the fixed list: {sorted(unknown)}")
        local = torch.tensor([float(counts.get(key, 0)) for key in keys], device=pl_module.device)
        total = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        if not trainer.is_global_zero:
            return
        prefix = {"train": "train", "validate": "val", "test": "test"}.get(stage, stage)
        # The totals are always logged; a per-reason count only when it happened.
        values = {
            f"{prefix}/media/{key}": value
            for key, value in zip(keys, total, strict=True)
            if value or key in MediaIssueLog.TOTAL_KEYS
        }
        pl_module.log_dict(values, rank_zero_only=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
