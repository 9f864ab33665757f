"""A full training epoch over a synthetic MESC set with 100+ damaged clips, through a real Trainer:
no crash, every bad file counted (per modality, once per sample that uses it), no sample substituted."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import av
import lightning as L
import numpy as np
import pytest
import torch

from datamodules import MediaIssueMonitor, MESCDataModule
from multimood.data import media
from multimood.data.datasets import MediaIssue
from multimood.data.synthetic import make_mesc, write_clip


class RecordingModule(L.LightningModule):
    """Consumes batches and records what it saw; trains a dummy weight so the loop is real."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []
        self.masks: dict[str, tuple[bool, bool]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.extend(batch["sample_ids"])
        for b, sid in enumerate(batch["sample_ids"]):
            video = bool(batch["video_mask"][b]) if "video_mask" in batch else False
            audio = bool(batch["audio_mask"][b]) if "audio_mask" in batch else False
            self.masks[sid] = (video, audio)
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _strip(path: Path, keep: str) -> None:
    """Rewrite a clip with only its video or only its audio stream."""
    with av.open(str(path)) as src:
        if keep == "video":
            frames = np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])
            audio = None
        else:
            frames = None
            audio = np.concatenate([f.to_ndarray() for f in src.decode(audio=0)], axis=-1)
    write_clip(path, frames, fps=10.0, audio=audio, sample_rate=16_000)


def _damage(clips: list[Path], rng: random.Random) -> dict[Path, set[str]]:
    """Damage every clip in ``clips`` one of several ways; returns the modalities each one breaks."""
    kinds = ["missing", "empty", "truncated", "garbage", "header", "no_audio", "no_video"]
    broken: dict[Path, set[str]] = {}
    for k, path in enumerate(clips):
        kind = kinds[k % len(kinds)]
        data = path.read_bytes()
        if kind == "missing":
            path.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            path.write_bytes(data[: len(data) // 3])
        elif kind == "garbage":
            path.write_bytes(bytes(rng.getrandbits(8) for _ in range(2048)))
        elif kind == "header":
            path.write_bytes(b"\x00" * 64 + data[64:])
        elif kind == "no_audio":
            _strip(path, keep="video")
        else:
            _strip(path, keep="audio")
        broken[path] = {"no_audio": {"audio"}, "no_video": {"video"}}.get(kind, {"video", "audio"})
    return broken


# Not the session's `synthetic_mesc`: this test needs 100+ clips to damage (56 dialogues), and it
# damages them in place.
@pytest.fixture(scope="module")
def damaged_mesc(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("damaged-mesc")
    make_mesc(
        root,
        num_dialogues=56,
        seed=3,
        width=32,
        height=32,
        fps=8.0,
        sample_rate=16_000,
        channels=1,
        clip_seconds=(0.4, 0.8),
    )
    return root


def test_a_full_epoch_counts_every_bad_file_and_substitutes_nothing(damaged_mesc: Path) -> None:
    dm = MESCDataModule(
        str(damaged_mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_mode="none",
        max_client_clips=1,  # one clip per sample: each failure belongs to exactly one file
        num_frames=2,
        image_size=28,
        max_audio_seconds=2.0,
        batch_size=8,
        num_workers=2,
    )
    dm.setup("fit")
    samples = dm.datasets["train"].samples
    used = sorted({damaged_mesc / "clips" / s.clip_names[-1] for s in samples})
    assert len(used) > 105
    rng = random.Random(0)
    broken = _damage(rng.sample(used, 105), rng)
    assert len(broken) >= 100

    module = RecordingModule()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[MediaIssueMonitor()],
    )
    trainer.fit(module, datamodule=dm)

    # Every sample exactly once: nothing dropped (text is always there), nothing substituted.
    ids = [s.sample_id for s in samples]
    assert sorted(module.seen) == sorted(ids)
    assert len(module.seen) == len(set(module.seen))

    issues = dm.media_log.issues[("train", 0)]
    expected = Counter()
    for sample in samples:
        clip = damaged_mesc / "clips" / sample.clip_names[-1]
        for modality in sorted(broken.get(clip, ())):
            expected[(sample.sample_id, modality, str(clip))] += 1
    got = Counter((i.sample_id, i.modality, i.path) for i in issues)
    assert got == expected
    assert {Path(i.path) for i in issues} == set(broken) & {
        damaged_mesc / "clips" / s.clip_names[-1] for s in samples
    }
    # The batch masks agree with the issues: a failed modality is absent, the others present.
    for sample in samples:
        clip = damaged_mesc / "clips" / sample.clip_names[-1]
        bad = broken.get(clip, set())
        assert module.masks[sample.sample_id] == ("video" not in bad, "audio" not in bad)
    summary = dm.media_log.summary("train", 0)
    assert summary["missing_video"] == sum(1 for k in got if k[1] == "video")
    assert summary["missing_audio"] == sum(1 for k in got if k[1] == "audio")
    assert summary["dropped"] == 0
    assert trainer.callback_metrics["train/media/missing_video"] == summary["missing_video"]


@pytest.fixture
def multi_clip_mesc(synthetic_mesc: Path, tmp_path: Path) -> Path:
    """A copy of the session's synthetic MESC (client turns of 1-4 clips), for this test to damage."""
    root = tmp_path / "mesc"
    shutil.copytree(synthetic_mesc, root)
    return root


def test_a_bad_clip_costs_only_that_clip(multi_clip_mesc: Path) -> None:
    """Several clips per sample, some bad: the good ones are used, each bad one is one issue, and
    a modality is missing only for the samples where none of its clips decodes."""
    dm = MESCDataModule(
        str(multi_clip_mesc),
        clips_dir="clips",
        tokenizer="tiny:qwen2",
        history_mode="none",
        max_client_clips=5,
        num_frames=4,
        image_size=28,
        max_audio_seconds=None,
    )
    dm.setup("fit")
    dataset = dm.datasets["train"]
    clips_of = {s.sample_id: [multi_clip_mesc / "clips" / n for n in s.clip_names] for s in dataset.samples}
    several = [sid for sid, clips in clips_of.items() if len(clips) >= 3]
    assert len(several) >= 2
    # one sample keeps some clips of each modality; another loses all of them
    partial, lost = clips_of[several[0]], clips_of[several[1]]
    assert not set(partial) & set(lost)
    damage = {partial[0]: "missing", partial[1]: "no_audio", partial[2]: "no_video"}
    damage.update({clip: "garbage" for clip in lost})
    reasons = {
        "missing": {"video": media.MISSING, "audio": media.MISSING},
        "garbage": {"video": media.UNREADABLE, "audio": media.UNREADABLE},
        "no_audio": {"audio": media.NO_AUDIO},
        "no_video": {"video": media.NO_VIDEO},
    }
    for clip, kind in damage.items():
        if kind == "missing":
            clip.unlink()
        elif kind == "garbage":
            clip.write_bytes(b"\x00garbage" * 300)
        else:
            _strip(clip, keep="video" if kind == "no_audio" else "audio")

    items = [dataset[i] for i in range(len(dataset))]
    expected_issues, expected_missing = [], Counter()
    for item, sample in zip(items, dataset.samples, strict=True):
        clips = clips_of[sample.sample_id]
        for modality, loader in (("video", dataset.video_loader), ("audio", dataset.audio_loader)):
            bad = [
                (c, reasons[damage[c]][modality]) for c in clips if modality in reasons.get(damage.get(c), {})
            ]
            good = [c for c in clips if c not in dict(bad)]
            expected_issues += [
                MediaIssue(sample.sample_id, modality, str(c), reason, not good) for c, reason in bad
            ]
            expected_missing[modality] += not good
            got = item.get(modality)
            if not good:
                assert got is None
            elif modality == "video":  # exactly what the loader makes of the good clips alone
                assert torch.equal(got, loader(good))
            else:
                fbank, frames = loader(good)
                assert torch.equal(got, fbank) and item["audio_frames"] == frames
    assert sorted(i for item in items for i in item["media_issues"]) == sorted(expected_issues)
    # samples sharing the lost sample's client turn lose it too; no other sample does
    assert (
        expected_missing["video"] == expected_missing["audio"] == sum(clips_of[s] == lost for s in clips_of)
    )
    assert sum(not issue.modality_missing for issue in expected_issues) >= 4  # partial's bad clips

    batch = dm.collator()(items)
    assert sorted(batch["media_issues"]) == sorted(expected_issues)
    position = {sid: b for b, sid in enumerate(batch["sample_ids"])}
    assert batch["video_mask"][position[several[0]]] and batch["audio_mask"][position[several[0]]]
    assert not batch["video_mask"][position[several[1]]] and not batch["audio_mask"][position[several[1]]]
    assert int(batch["video_mask"].sum()) == len(items) - expected_missing["video"]
    assert int(batch["audio_mask"].sum()) == len(items) - expected_missing["audio"]
    dm.media_log.record(batch["media_issues"], batch["dropped"], "train", 0)
    summary = dm.media_log.summary("train", 0)
    assert summary["missing_video"] == expected_missing["video"]
    assert summary["missing_audio"] == expected_missing["audio"]
    for modality in ("video", "audio"):
        for reason in {i.reason for i in expected_issues if i.modality == modality}:
            count = sum(i.modality == modality and i.reason == reason for i in expected_issues)
            assert summary[f"{modality}/{reason}"] == count
