"""DFEWDataModule: DFEW (Jiang et al. 2020) emotion recognition from video, one fold at a time.

The paper reports the mean over the 5 folds (table 3); run one fit per ``fold``. DFEW has no
validation split, and model selection must not look at the test split: by default a seeded,
class-stratified 10% of the fold's training list is held out for validation
(``val_fraction``); ``val_fraction: 0`` trains on the whole list with no validation loop. The
fold's test split is read only by ``test``/``predict``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import DataLoader

from datamodules.common import ModelConnectedMixin, MultiModalDataModule, video_loader
from multimood.data.datasets import ChatEncoder, DFEWDataset, MultiModalCollator
from multimood.data.dfew import LabelBase, Source, SplitFormat, load_dfew_fold, validation_split
from multimood.metrics import DFEWAnswerMetrics

log = logging.getLogger(__name__)


class DFEWDataModule(ModelConnectedMixin, MultiModalDataModule):
    """DFEW batches for the fused model: 16 frames, the recognition prompt, ``Emotion: <class>``.

    Args:
        data_dir: DFEW root holding ``Clip/`` and ``EmoLabel_DataSplit/`` (or ``multimood synth dfew``
            output).
        fold: Cross-validation fold, 1-5.
        source: ``original`` (``Clip/original/XXXXX.mp4``) or ``frames`` (face-aligned
            ``Clip/clip_224x224/XXXXX/*.jpg``).
        label_base: ``auto`` (decide from the labels in the fold's files; refuses when they cannot
            tell), ``1`` (official files: 1 Happy ... 7 Fear) or ``0`` (0-indexed copies and the
            DFER-CLIP / MAE-DFER lists).
        split_files: Annotation files of other layouts, as a pattern with ``{fold}`` and ``{split}``
            (``train``/``test``), relative to ``data_dir`` unless absolute, e.g.
            ``annotation/DFEW_set_{fold}_{split}.txt``. None: the official
            ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{fold}.csv``.
        split_format: ``auto`` (detected per file), ``official`` (CSV ``video_name,label``),
            ``dfer_clip`` (``<path> <num_frames> <label>``) or ``mae_dfer`` (``<path> <label>``).
        val_fraction: Share of the fold's training list held out (seeded by ``seed``, stratified
            by class) for validation / model selection. 0: train on the whole list, no validation.
        tokenizer: The LLM's tokenizer. None (default): the model's, taken when a trainer runs
            this module (``fit.py``); set it only to use the data alone.
        system_prompt: System message of the chat; None keeps the template's default.
        num_frames: Frames sampled per clip (16 in the paper).
        image_size: Frame side after padding to square and resizing. None (default): the vision
            tower's (384 for SigLIP-So400M, also the fallback without a model).
        image_mean: Normalisation mean (and padding colour). None: the tower's (SigLIP: 0.5).
        image_std: Normalisation std. None: the tower's (SigLIP: 0.5).
        batch_size: Training batch size.
        eval_batch_size: Test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of shuffling.
        limit_samples: Use only the first N clips of each split (smoke runs).
    """

    def __init__(
        self,
        data_dir: str,
        fold: int = 1,
        source: Source = "original",
        label_base: LabelBase = "auto",
        split_files: str | None = None,
        split_format: SplitFormat = "auto",
        val_fraction: float = 0.1,
        tokenizer: str | None = None,
        system_prompt: str | None = None,
        num_frames: int = 16,
        image_size: int | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_samples: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.label_base: int | None = None

    CONNECTED = ("tokenizer", "image_size", "image_mean", "image_std")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.connect_trainer_model()
        hp = self.hparams
        splits, self.label_base = load_dfew_fold(
            self.data_dir,
            hp.fold,
            source=hp.source,
            label_base=hp.label_base,
            split_files=hp.split_files,
            split_format=hp.split_format,
        )
        listed = splits["train"] + splits["test"]
        found = sum(sample.source.exists() for sample in listed)
        splits["train"], splits["val"] = validation_split(splits["train"], hp.val_fraction, hp.seed)
        log.info(
            "DFEW fold %d: %d of %d listed clips found under %s; %d train / %d val / %d test (labels %d-indexed)",
            hp.fold,
            found,
            len(listed),
            self.data_dir,
            len(splits["train"]),
            len(splits["val"]),
            len(splits["test"]),
            self.label_base,
        )
        self.clips_found, self.clips_listed = found, len(listed)
        encoder = ChatEncoder(self.tokenizer, system_prompt=hp.system_prompt)
        video = video_loader(hp)
        for split, samples in splits.items():
            if hp.limit_samples is not None:
                samples = samples[: hp.limit_samples]
            self.datasets[split] = DFEWDataset(samples, encoder, video)

    def val_dataloader(self) -> DataLoader | list:
        if not self.datasets:
            self.setup()
        # val_fraction 0: no validation loop (Lightning skips an empty list).
        return self._loader("val") if len(self.datasets["val"]) else []

    def make_metrics(self, bertscore_model: str | None = None) -> DFEWAnswerMetrics:
        """UAR, WAR and per-class recall (paper table 3) from generated answers; no response text,
        so ``bertscore_model`` is not used."""
        return DFEWAnswerMetrics()

    def collator(self) -> MultiModalCollator:
        return MultiModalCollator(self.tokenizer.pad_token_id)
