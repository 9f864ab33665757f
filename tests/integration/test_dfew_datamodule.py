"""DFEWDataModule: all five folds in both label conventions, frames or mp4, clear convention errors,
and a broken clip dropped (no input left) and counted."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import DFEWDataModule
from multimood.constants import IGNORE_INDEX
from multimood.data.answer import parse_dfew_answer
from multimood.data.dfew import DFEWFormatError, load_dfew_fold, split_file
from multimood.data.labels import DFEW_LABELS
from multimood.data.synthetic import make_dfew


@pytest.fixture(scope="module", params=[1, 0], ids=["official-1-indexed", "0-indexed"])
def dfew(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp(f"dfew{request.param}")
    make_dfew(
        root,
        num_clips=35,
        seed=2,
        label_base=request.param,
        width=64,
        height=48,
        sample_rate=16_000,
        channels=1,
    )
    return root, request.param


def test_all_five_folds_load_and_detect_the_convention(dfew) -> None:
    root, base = dfew
    names: set[str] = set()
    for fold in range(1, 6):
        splits, detected = load_dfew_fold(root, fold)
        assert detected == base
        train, test = {s.name for s in splits["train"]}, {s.name for s in splits["test"]}
        assert not train & test
        assert len(train) + len(test) == 35
        assert all(0 <= s.label < len(DFEW_LABELS) for s in splits["train"] + splits["test"])
        assert all(s.source.is_file() for s in splits["test"])
        names |= test
        explicit, _ = load_dfew_fold(root, fold, label_base=base)
        assert explicit == splits
    assert len(names) == 35  # the test splits partition the clips


def test_the_wrong_convention_is_a_clear_error(dfew) -> None:
    root, base = dfew
    wrong = 1 - base
    with pytest.raises(DFEWFormatError, match=rf"set_1\.csv:\d+: label \d does not fit label_base={wrong}"):
        load_dfew_fold(root, 1, label_base=wrong)


def test_labels_that_cannot_tell_are_refused(tmp_path: Path) -> None:
    for split in ("train", "test"):
        path = split_file(tmp_path, 2, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ["video_name,label", *(f"{k + (0 if split == 'train' else 10)},{1 + k % 6}" for k in range(6))]
        path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DFEWFormatError, match="set label_base to 0 or 1"):
        load_dfew_fold(tmp_path, 2)
    splits, base = load_dfew_fold(tmp_path, 2, label_base=1)
    assert base == 1
    assert splits["train"][0].name == "00000"


def test_batches_from_mp4_and_from_frame_folders(dfew) -> None:
    root, _ = dfew
    for source in ("original", "frames"):
        dm = DFEWDataModule(
            str(root),
            fold=3,
            source=source,
            tokenizer="tiny:qwen2",
            num_frames=4,
            image_size=56,
            batch_size=4,
        )
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["video"].shape == (4, 4, 3, 56, 56)
        by_name = {s.name: s for s in dm.datasets["train"].samples}
        for b, name in enumerate(batch["sample_ids"]):
            assert batch["targets"]["emotion"][b] == by_name[name].label
        supervised = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
        answer = dm.tokenizer.decode(supervised, skip_special_tokens=True)
        parsed = parse_dfew_answer(answer)
        assert parsed.ok
        assert parsed.index == int(batch["targets"]["emotion"][0])


def test_a_broken_clip_is_dropped_and_counted(dfew, tmp_path: Path) -> None:
    root, _ = dfew
    dm = DFEWDataModule(str(root), fold=1, tokenizer="tiny:qwen2", num_frames=2, image_size=28, batch_size=64)
    dm.setup("fit")
    victim = dm.datasets["test"].samples[0]
    saved = victim.source.read_bytes()
    try:
        victim.source.write_bytes(b"not a video")
        batch = next(iter(dm.test_dataloader()))
        dm.on_before_batch_transfer(batch, 0)
    finally:
        victim.source.write_bytes(saved)
    assert batch["dropped"] == [victim.name]
    assert victim.name not in batch["sample_ids"]
    assert len(batch["sample_ids"]) == len(dm.datasets["test"]) - 1
    assert dm.media_log.summary("train", 0) == {
        "dropped": 1,
        "missing_video": 1,
        "video/unreadable container": 1,
    }


def test_unpadded_clip_names_are_found_and_counted(
    dfew, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = dfew
    copy = tmp_path / "dfew"
    shutil.copytree(root / "EmoLabel_DataSplit", copy / "EmoLabel_DataSplit")
    originals = sorted((root / "Clip" / "original").iterdir())
    (copy / "Clip" / "original").mkdir(parents=True)
    for clip in originals[:-1]:  # every clip but one, under its unpadded name: 00007.mp4 -> 7.mp4
        shutil.copy(clip, copy / "Clip" / "original" / f"{int(clip.stem)}.mp4")
    splits, _ = load_dfew_fold(copy, 1)
    samples = splits["train"] + splits["test"]
    missing = [s for s in samples if not s.source.exists()]
    assert [s.name for s in missing] == [originals[-1].stem]
    assert all(s.source.name == f"{int(s.name)}.mp4" for s in samples if s not in missing)
    dm = DFEWDataModule(str(copy), fold=1, tokenizer="tiny:qwen2", num_frames=2, image_size=28)
    with caplog.at_level(logging.INFO, logger="datamodules.dfew"):
        dm.setup("fit")
    assert (dm.clips_found, dm.clips_listed) == (34, 35)
    assert sum("34 of 35 listed clips found" in r.getMessage() for r in caplog.records) == 1


def test_validation_is_carved_from_the_training_list(dfew) -> None:
    root, _ = dfew
    dm = DFEWDataModule(str(root), fold=2, tokenizer="tiny:qwen2", val_fraction=0.25, seed=5)
    dm.setup("fit")
    train, val, test = ({s.name for s in dm.datasets[k].samples} for k in ("train", "val", "test"))
    official, _ = load_dfew_fold(root, 2)
    assert train | val == {s.name for s in official["train"]} and not train & val
    assert not val & test  # the test split is never used for selection
    by_class = Counter(s.label for s in official["train"])
    held = Counter(s.label for s in dm.datasets["val"].samples)
    for label, count in by_class.items():  # stratified: round(25%) per class, one kept in train
        expected = min(max(round(0.25 * count), 1 if count > 1 else 0), count - 1)
        assert held[label] == expected, label
    again = DFEWDataModule(str(root), fold=2, tokenizer="tiny:qwen2", val_fraction=0.25, seed=5)
    again.setup("fit")
    assert [s.name for s in again.datasets["val"].samples] == [s.name for s in dm.datasets["val"].samples]
    other = DFEWDataModule(str(root), fold=2, tokenizer="tiny:qwen2", val_fraction=0.25, seed=6)
    other.setup("fit")
    assert {s.name for s in other.datasets["val"].samples} != val
    with pytest.raises(ValueError, match="val_fraction"):
        DFEWDataModule(str(root), tokenizer="tiny:qwen2", val_fraction=1.0)


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.validated = 0

    def training_step(self, batch, batch_idx):
        return (batch["video"].mean() * self.weight).square()

    def validation_step(self, batch, batch_idx):
        self.validated += len(batch["sample_ids"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_no_validation_loop_without_a_held_out_part(dfew, val_fraction: float) -> None:
    root, _ = dfew
    dm = DFEWDataModule(
        str(root),
        fold=1,
        tokenizer="tiny:qwen2",
        num_frames=2,
        image_size=28,
        batch_size=8,
        val_fraction=val_fraction,
    )
    probe = _Probe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=dm)
    assert probe.validated == len(dm.datasets["val"])  # each held-out clip once, and nothing else
    assert (probe.validated > 0) == (val_fraction > 0)


@pytest.mark.parametrize("fmt", ["dfer_clip", "mae_dfer"])
def test_public_annotation_lists_load_like_the_official_files(dfew, tmp_path: Path, fmt: str) -> None:
    root, _ = dfew
    official, _ = load_dfew_fold(root, 4, source="frames")
    pattern = "annotation/DFEW_set_{fold}_{split}.txt"
    for split, samples in official.items():
        lines = []
        for k, s in enumerate(samples):
            # Half the paths were written on another machine (they do not exist here), half are real.
            listed = f"/elsewhere/DFEW/Clip/clip_224x224/{s.name}" if k % 2 else str(s.source)
            frames = len(list(s.source.iterdir()))
            lines.append(f"{listed} {frames} {s.label}" if fmt == "dfer_clip" else f"{listed} {s.label}")
        path = tmp_path / pattern.format(fold=4, split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    loaded, detected = load_dfew_fold(root, 4, source="frames", split_files=str(tmp_path / pattern))
    assert detected == 0  # the lists are 0-indexed; detection read it from the labels
    assert loaded == official
    with pytest.raises(DFEWFormatError, match="split_format is 'official'"):
        load_dfew_fold(root, 4, split_files=str(tmp_path / pattern), split_format="official")
    bad = tmp_path / "annotation" / "DFEW_set_4_train.txt"
    bad.write_text(bad.read_text() + "/x/00001 1 2 3\n")
    with pytest.raises(DFEWFormatError, match=r"DFEW_set_4_train\.txt:\d+: expected"):
        load_dfew_fold(root, 4, split_files=str(tmp_path / pattern))
