"""MESC batches with VideoLLaMA2-AV's audio input (``audio_mode: videollama2``), the paper configs' choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from datamodules import MESCDataModule
from multimood.data.media import load_audio_videollama2
from multimood.data.synthetic import make_mesc

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mesc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mesc-audio")
    make_mesc(root, num_dialogues=4, seed=2, width=32, height=32, fps=8.0, clip_seconds=(0.5, 2.5))
    return root


def test_every_sample_gets_30_s_and_no_padding_mask(mesc: Path) -> None:
    dm = MESCDataModule(
        str(mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_mode="none",
        modalities=("audio",),
        audio_mode="videollama2",
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    size = batch["audio"].shape[0]
    # 1,496 BEATs tokens each: 2,998 fbank frames, all of them input (VideoLLaMA2 masks none)
    assert batch["audio"].shape == (size, 2998, 128)
    assert batch["audio_frame_mask"].all() and batch["audio_mask"].all()
    dataset = dm.datasets["val"]
    for b, sample_id in enumerate(batch["sample_ids"]):
        sample = next(s for s in dataset.samples if s.sample_id == sample_id)
        clips = [mesc / "clips" / name for name in sample.clip_names][-5:]
        fbank, _ = load_audio_videollama2(clips)
        assert torch.equal(batch["audio"][b], fbank)


def test_the_paper_data_config_selects_videollama2_audio() -> None:
    config = yaml.safe_load((REPO_ROOT / "configs/data/mesc.yaml").read_text())
    assert config["init_args"]["audio_mode"] == "videollama2"
