"""DFEWDataModule: all five folds in both label conventions, frames or mp4, clear convention errors,
and a broken clip dropped (no input left) and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

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
