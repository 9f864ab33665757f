"""Pieces the data modules share: media-issue accounting in the main process and its logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from multimood.data.datasets import MediaIssueLog
from multimood.data.media import VideoLoader
from multimood.data.sampling import EpochSampler
from multimood.tokenization import load_llm_tokenizer


def resolve_data_path(root: str | Path, path: str | None) -> Path | None:
    """``path`` relative to ``root`` unless absolute; None stays None."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root).expanduser() / p


# SigLIP-So400M's input (the paper's tower): used when neither the config nor a model sets them.
DEFAULT_IMAGE_SIZE = 384
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)


def video_loader(hp: Any) -> VideoLoader:
    """The frame loader for a data module's ``num_frames``/``image_*`` options (None: SigLIP's)."""
    return VideoLoader(
        hp.num_frames,
        hp.image_size or DEFAULT_IMAGE_SIZE,
        tuple(hp.image_mean or DEFAULT_IMAGE_MEAN),
        tuple(hp.image_std or DEFAULT_IMAGE_STD),
    )


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
    # A generator of its own: a loader's iterator otherwise draws its base seed from the global
    # torch RNG, so a run resumed mid-epoch (a new iterator) would shift every later dropout mask.
    # Items are seeded by the sampler, so worker seeds do not matter for the data.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
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
        self._resume_train: dict[str, Any] | None = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.hparams.tokenizer:
                raise ValueError(
                    f"{type(self).__name__}: no tokenizer: run it with a model (the LLM's tokenizer is "
                    "taken from it) or set data.init_args.tokenizer"
                )
            self._tokenizer = load_llm_tokenizer(self.hparams.tokenizer)
        return self._tokenizer

    def collator(self) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ resuming mid-epoch
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: where training stood in its epoch, so that a resumed run
        continues with the next batch of the same order (Lightning restarts the epoch's loader)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        # A checkpoint written at a batch's end (ModelCheckpoint's on_train_batch_end) is saved
        # after that batch was processed and before Lightning counts it completed.
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "train_batches_done": int(progress.processed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_train = dict(state_dict) if state_dict else None

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
        loader = self._loader("train")
        if self._resume_train:
            state, self._resume_train = self._resume_train, None
            loader.sampler.resume_at(state["epoch"], state["train_batches_done"] * loader.batch_size)
        return loader

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


def model_values(model: Any) -> dict[str, tuple[Any, str]]:
    """What a fused model decides for its data: ``{data option: (value, where it comes from)}``.

    The LLM's tokenizer; the compressor's history tokenizer and budget; the vision tower's frame
    size and normalisation. A data module takes each value it leaves unset (None) and refuses one
    that contradicts it (see :meth:`ModelConnectedMixin.connect`).
    """
    values: dict[str, tuple[Any, str]] = {}
    llm = getattr(model, "llm", None)
    if getattr(llm, "tokenizer_name", None):
        values["tokenizer"] = (
            llm.tokenizer_name,
            "model llm tokenizer (llm.init_args.tokenizer or name_or_path)",
        )
    compressor = getattr(model, "history_compressor", None)
    history = getattr(compressor, "history_tokenizer", None)
    if history is not None:
        values["history_tokenizer"] = (
            history.name,
            "model history_compressor tokenizer (tokenizer or backbone)",
        )
        values["history_max_tokens"] = (history.max_tokens, "model history_compressor max_tokens")
    tower = getattr(model, "vision_tower", None)
    if tower is not None:
        size = getattr(tower, "image_size", None)
        if isinstance(size, tuple | list):
            if len(set(size)) != 1:
                raise ValueError(
                    f"vision_tower image_size {size} is not square; the data pads frames to squares"
                )
            size = size[0]
        if size is not None:
            values["image_size"] = (int(size), "model vision_tower image_size")
        for key in ("image_mean", "image_std"):
            if getattr(tower, key, None) is not None:
                values[key] = (tuple(float(v) for v in getattr(tower, key)), f"model vision_tower {key}")
    return values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b, strict=True))
    return a == b


class ModelConnectedMixin:
    """Values the data and the model must agree on are written once, on the model side.

    A data option left unset (None) takes the model's value; one that is set must equal it, or
    :meth:`connect` raises naming both keys. ``setup`` connects to the model of the trainer's
    LightningModule (its ``model`` attribute) when there is one, so this holds for ``fit.py`` and
    for a plain ``Trainer``; without a model the documented fallbacks apply.
    """

    CONNECTED: ClassVar[tuple[str, ...]] = ()
    connected: bool = False

    def connect(self, model: Any) -> None:
        """Take (or check) the model's values for the options in ``CONNECTED``."""
        hparams = self.hparams
        for key, (value, source) in model_values(model).items():
            if key not in self.CONNECTED:
                continue
            current = hparams.get(key)
            if current is None:
                if self.datasets:
                    raise RuntimeError(
                        f"connect() after setup(): the datasets were built without {key}; connect "
                        "the model first (a trainer's setup does it)"
                    )
                hparams[key] = value
            elif not _same(current, value):
                raise ValueError(
                    f"data.init_args.{key} = {current!r} contradicts the {source} = {value!r}: "
                    f"remove data.init_args.{key} from the data config (it is taken from the model)"
                )
        self._check_modalities(model)
        self.connected = True

    def _check_modalities(self, model: Any) -> None:
        towers = {"video": "vision_tower", "audio": "audio_tower"}
        wanted = self.hparams.get("modalities") or ()
        if self.hparams.get("clips_dir", "present") is None:
            return  # text only: no media is read
        for modality in wanted:
            if getattr(model, towers[modality], None) is None:
                raise ValueError(
                    f"data.init_args.modalities includes {modality!r} but the model has no "
                    f"{towers[modality]}: drop it from modalities or add the tower to the model config"
                )

    def connect_trainer_model(self) -> None:
        """Connect to the LightningModule's ``model`` when a trainer runs this data module."""
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        model = getattr(module, "model", None)
        if model is not None:
            self.connect(model)
