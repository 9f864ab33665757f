"""Sampler seeding, chat encoding, the MESC prompt budget and collation, in isolation."""

from __future__ import annotations

import pytest
import torch

from multimood.constants import IGNORE_INDEX
from multimood.data.datasets import (
    ChatEncoder,
    MediaIssue,
    MediaIssueLog,
    MESCDataset,
    MESCPromptBuilder,
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
            "answer": "a",
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


# ----------------------------------------------------------------------------------- prompt budget


def _sample(history_words: int = 30, turns: int = 12, client_words: int = 10):
    """A MESC sample with ``turns`` history turns of ``history_words`` words (turn i says ``h{i}``)."""
    from multimood.data.labels import CLIENT, THERAPIST
    from multimood.data.mesc import Sample, Turn, Utterance

    def utt(i: int, speaker: str, text: str) -> Utterance:
        strategy = "Approval" if speaker == THERAPIST else None
        return Utterance(1, i, i, i + 2, speaker, text, "neutral", strategy, 1, 1, i * 1000, i * 1000 + 500)

    speakers = [CLIENT, THERAPIST] * (turns // 2)
    history = tuple(
        Turn(s, (utt(i, s, " ".join([f"h{i}"] * history_words)),)) for i, s in enumerate(speakers)
    )
    client = Turn(CLIENT, (utt(turns, CLIENT, " ".join(f"c{j}" for j in range(client_words))),))
    target = Turn(THERAPIST, (utt(turns + 1, THERAPIST, "reply"),))
    return Sample("test", 1, target, client, history, "P", "S")


@pytest.fixture(scope="module")
def encoder() -> ChatEncoder:
    return ChatEncoder(load_llm_tokenizer("tiny:qwen2"))


def test_text_budget_drops_the_oldest_history_turns_first(encoder: ChatEncoder) -> None:
    sample = _sample()
    full = MESCPromptBuilder(encoder, "text", max_tokens=None)(sample)
    assert full.history_turns_dropped == 0 and len(full.history_lines) == 12
    budget = len(full.prompt_ids) - 100  # roughly a third of the history must go
    fitted = MESCPromptBuilder(encoder, "text", max_tokens=budget)(sample)
    kept = len(fitted.history_lines)
    assert 0 < kept < 12 and fitted.history_turns_dropped == 12 - kept
    assert len(fitted.prompt_ids) <= budget
    assert fitted.prompt_ids == encoder.prompt_ids(fitted.message)
    assert fitted.client_tokens_dropped == 0
    # The kept turns are the newest ones, in order, and one more would not fit.
    assert [line.split("): ", 1)[1].split()[0] for line in fitted.history_lines] == [
        f"h{i}" for i in range(12 - kept, 12)
    ]
    assert "h0 " not in fitted.message and f"h{11} " in fitted.message
    builder = MESCPromptBuilder(encoder, "text", max_tokens=budget)
    one_more = builder.message(sample, full.history_lines[12 - kept - 1 :], sample.client_text)
    assert len(encoder.prompt_ids(one_more)) > budget


def test_with_no_history_left_the_client_text_is_cut_from_its_start(encoder: ChatEncoder) -> None:
    sample = _sample(turns=4, client_words=200)
    bare = MESCPromptBuilder(encoder, "none", max_tokens=None)(sample)
    budget = len(bare.prompt_ids) - 50
    fitted = MESCPromptBuilder(encoder, "text", max_tokens=budget)(sample)
    assert fitted.history_lines == [] and fitted.history_turns_dropped == 4
    assert len(fitted.prompt_ids) <= budget
    client_line = next(line for line in fitted.message.split("\n") if line.startswith("Client utterance: "))
    kept = client_line.removeprefix("Client utterance: ").split()
    assert kept == sample.client_text.split()[-len(kept) :]  # the most recent words survive
    tok = encoder.tokenizer
    assert fitted.client_tokens_dropped == len(tok(sample.client_text)["input_ids"]) - len(
        tok(" ".join(kept))["input_ids"]
    )
    assert fitted.client_tokens_dropped >= 50 - 5  # about what the budget asked for
    # Compressor mode: the same cut of the client text; its history goes to the compressor untouched.
    compressed = MESCPromptBuilder(encoder, "compressor", max_tokens=budget + 3)(sample)
    assert len(compressed.history_lines) == 4 and compressed.history_turns_dropped == 0
    assert len(compressed.prompt_ids) <= budget + 3 and compressed.client_tokens_dropped > 0


def test_a_budget_below_the_fixed_prompt_is_an_error(encoder: ChatEncoder) -> None:
    with pytest.raises(ValueError, match=r"prompt_max_tokens=50 is too small for sample dia1_utt13-13"):
        MESCPromptBuilder(encoder, "text", max_tokens=50)(_sample())
    with pytest.raises(ValueError, match="prompt max_tokens must be >= 1"):
        MESCPromptBuilder(encoder, "text", max_tokens=0)


def test_text_mode_items_carry_the_history_counts(encoder: ChatEncoder) -> None:
    samples = [_sample(turns=4), _sample(turns=12)]
    full = MESCPromptBuilder(encoder, "text", max_tokens=None)(samples[1])
    dataset = MESCDataset(samples, encoder, history_mode="text", prompt_max_tokens=len(full.prompt_ids) - 100)
    batch = MultiModalCollator(pad_token_id=0)([dataset[0], dataset[1]])
    assert batch["history_turns"].tolist()[0] == 4 and batch["history_turns_dropped"].tolist()[0] == 0
    kept, dropped = batch["history_turns"].tolist()[1], batch["history_turns_dropped"].tolist()[1]
    assert kept + dropped == 12 and dropped > 0
    assert batch["client_tokens_dropped"].tolist() == [0, 0]


def test_the_rationale_option_asks_in_the_prompt_counts_in_the_budget_and_keeps_the_answer(
    encoder: ChatEncoder,
) -> None:
    from multimood.data.prompt import RATIONALE_INSTRUCTION

    sample = _sample()
    plain = MESCPromptBuilder(encoder, "text", max_tokens=None)(sample)
    asked = MESCPromptBuilder(encoder, "text", max_tokens=None, rationale=True)(sample)
    assert asked.message == plain.message + "\n" + RATIONALE_INSTRUCTION
    extra = len(asked.prompt_ids) - len(plain.prompt_ids)
    assert extra > 20  # the instruction's tokens are in the prompt ids
    # A budget the plain prompt just meets: with the instruction, history turns must go.
    fitted = MESCPromptBuilder(encoder, "text", max_tokens=len(plain.prompt_ids), rationale=True)(sample)
    assert fitted.history_turns_dropped > 0 and len(fitted.prompt_ids) <= len(plain.prompt_ids)
    assert fitted.message.endswith(RATIONALE_INSTRUCTION)
    # The item: the prompt asks, the supervised answer stays the four lines.
    items = [
        MESCDataset([sample], encoder, history_mode="text", prompt_max_tokens=None, rationale=flag)[0]
        for flag in (False, True)
    ]
    assert items[0]["answer"] == items[1]["answer"] and "Rationale" not in items[1]["answer"]
    assert items[1]["answer"].split("\n")[0].startswith("Client's emotion:")
    tok = encoder.tokenizer
    assert RATIONALE_INSTRUCTION in tok.decode(items[1]["prompt_ids"])
    assert RATIONALE_INSTRUCTION not in tok.decode(items[0]["prompt_ids"])
    n = len(items[1]["prompt_ids"])
    assert torch.equal(items[1]["labels"][n:], items[0]["labels"][len(items[0]["prompt_ids"]) :])
    with pytest.raises(ValueError, match=r"rationale=True .* needs target='answer'"):
        MESCDataset([sample], encoder, history_mode="text", target="descriptions", rationale=True)
