"""Sampler seeding, chat encoding and collation, in isolation."""

from __future__ import annotations

import pytest
import torch

from multimood.constants import IGNORE_INDEX
from multimood.data.datasets import (
    ChatEncoder,
    MediaIssue,
    MediaIssueLog,
    MultiModalCollator,
)
from multimood.tokenization import load_llm_tokenizer


def test_chat_encoder_supervises_only_the_answer() -> None:
    tok = load_llm_tokenizer("tiny:qwen2")
    encoder = ChatEncoder(tok, system_prompt="Be kind.")
    out = encoder.encode("How are you?", "Client's emotion: joy")
    n_prompt = len(out["prompt_ids"])
    assert torch.equal(out["input_ids"][:n_prompt], out["prompt_ids"])
    assert (out["labels"][:n_prompt] == IGNORE_INDEX).all()
    assert torch.equal(out["labels"][n_prompt:], out["input_ids"][n_prompt:])
    assert tok.decode(out["labels"][n_prompt:]) == "Client's emotion: joy<|im_end|>"
    assert tok.decode(out["prompt_ids"]).startswith("<|im_start|>system\nBe kind.<|im_end|>")
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        ChatEncoder(tok)


def test_collator_pads_and_masks_absent_media() -> None:
    def item(sid: str, n: int, video: bool, audio_frames: int | None):
        out = {
            "sample_id": sid,
            "input_ids": torch.arange(1, n + 1),
            "labels": torch.full((n,), IGNORE_INDEX),
            "prompt_ids": torch.arange(1, n - 1),
            "targets": {"emotion": 3},
            "reference": "r",
            "modalities": (),
            "media_issues": [],
        }
        if video:
            out["video"] = torch.ones(2, 3, 4, 4)
        if audio_frames:
            out["audio"] = torch.ones(max(audio_frames, 16), 128)
            out["audio_frames"] = audio_frames
        return out

    batch = MultiModalCollator(pad_token_id=0)(
        [
            item("a", 5, True, None),
            item("b", 3, False, 10),
            {"sample_id": "c", "dropped": True, "media_issues": []},
        ]
    )
    assert batch["sample_ids"] == ["a", "b"]
    assert batch["dropped"] == ["c"]
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]]
    assert batch["prompt_attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]  # left padded
    assert batch["video_mask"].tolist() == [True, False]
    assert batch["video"][1].abs().sum() == 0
    assert batch["audio_mask"].tolist() == [False, True]
    assert batch["audio_frame_mask"].sum(-1).tolist() == [0, 10]


def test_media_issue_log_counts_per_epoch_and_logs_each_file_once(caplog: pytest.LogCaptureFixture) -> None:
    log = MediaIssueLog()
    bad = MediaIssue("dia1_utt2", "video", "/clips/x.mp4", "empty file")
    with caplog.at_level("WARNING"):
        log.record([bad], [], "train", 0)
        log.record([bad, bad._replace(modality="audio")], ["s9"], "train", 1)
    assert log.summary("train", 0) == {"dropped": 0, "missing_video": 1, "video/empty file": 1}
    assert log.summary("train", 1)["missing_video"] == 1
    assert log.summary("train", 1)["dropped"] == 1
    assert sum("x.mp4" in r.message for r in caplog.records) == 1
