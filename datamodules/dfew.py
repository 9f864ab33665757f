"""DFEWDataModule: DFEW (Jiang et al. 2020) emotion recognition from video, one fold at a time.

The paper reports the mean over the 5 folds (table 3); run one fit per ``fold``. DFEW has no
validation split: validation and test both read the fold's test split (the standard protocol).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from datamodules.common import MultiModalDataModule
from multimood.data.datasets import ChatEncoder, DFEWDataset, MultiModalCollator
from multimood.data.dfew import LabelBase, Source, load_dfew_fold
from multimood.data.media import VideoLoader

log = logging.getLogger(__name__)


class DFEWDataModule(MultiModalDataModule):
    """DFEW batches for the fused model: 16 frames, the recognition prompt, ``Emotion: <class>``.

    Args:
        data_dir: DFEW root holding ``Clip/`` and ``EmoLabel_DataSplit/`` (or ``multimood synth dfew``
            output).
        fold: Cross-validation fold, 1-5.
        source: ``original`` (``Clip/original/XXXXX.mp4``) or ``frames`` (face-aligned
            ``Clip/clip_224x224/XXXXX/*.jpg``).
        label_base: ``auto`` (decide from the labels in the fold's files; refuses when they cannot
            tell), ``1`` (official files: 1 Happy ... 7 Fear) or ``0`` (0-indexed copies).
        tokenizer: The LLM's tokenizer; link it to the model's LLM.
        system_prompt: System message of the chat; None keeps the template's default.
        num_frames: Frames sampled per clip (16 in the paper).
        image_size: Frame side after padding to square and resizing (384 for SigLIP-So400M).
        image_mean: Normalisation mean (and padding colour); SigLIP: 0.5.
        image_std: Normalisation std; SigLIP: 0.5.
        batch_size: Training batch size.
        eval_batch_size: Test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of shuffling.
        limit_samples: Use only the first N clips of each split (smoke runs).
    """

    # DFEW has no validation split: validation reads the fold's test split.
    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "test", "test": "test", "predict": "test"}

    def __init__(
        self,
        data_dir: str,
        fold: int = 1,
        source: Source = "original",
        label_base: LabelBase = "auto",
        tokenizer: str = "Qwen/Qwen2-7B-Instruct",
        system_prompt: str | None = None,
        num_frames: int = 16,
        image_size: int = 384,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.label_base: int | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        splits, self.label_base = load_dfew_fold(
            self.data_dir, hp.fold, source=hp.source, label_base=hp.label_base
        )
        log.info(
            "DFEW fold %d: %d train / %d test clips (labels %d-indexed)",
            hp.fold,
            len(splits["train"]),
            len(splits["test"]),
            self.label_base,
        )
        encoder = ChatEncoder(self.tokenizer, system_prompt=hp.system_prompt)
        video = VideoLoader(hp.num_frames, hp.image_size, tuple(hp.image_mean), tuple(hp.image_std))
        for split, samples in splits.items():
            if hp.limit_samples is not None:
                samples = samples[: hp.limit_samples]
            self.datasets[split] = DFEWDataset(samples, encoder, video)

    def collator(self) -> MultiModalCollator:
        return MultiModalCollator(self.tokenizer.pad_token_id)
