"""The fused model: placeholder splicing, masks and labels, absent modalities, training and generation.

Encoders here are small stand-ins with the documented interfaces, so these tests pin down the
splicing logic alone; tests/integration exercises the real encoders.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector

FRAMES, PATCHES, VISION_DIM, AUDIO_DIM = 2, 3, 8, 6


class FakeVisionTower(nn.Module):
    hidden_size = VISION_DIM

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # (n, T, 3, H, W) -> (n, T, N, C)
        pooled = video.mean(dim=(2, 3, 4))  # (n, T)
        return pooled[:, :, None, None].expand(-1, -1, PATCHES, VISION_DIM) + torch.arange(VISION_DIM)


class FakeConnector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, T, N, C) -> (n, T*N, d)
        return self.proj(x.flatten(1, 2))


class FakeAudioTower(nn.Module):
    output_dim = AUDIO_DIM

    def forward(self, fbank: torch.Tensor, padding: torch.Tensor | None):  # halves the frame rate
        feats = fbank[:, ::2, :AUDIO_DIM]
        return feats, None if padding is None else padding[:, ::2]


class FakeCompressor(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(4096, out_dim)
        self.mem_id = 7

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        turns = ((ids == self.mem_id) & mask.bool()).sum(-1)  # one memory vector per <MEM>
        t_max = max(int(turns.max()), 1)
        memory = self.embed(ids[:, :t_max] + 1)
        valid = torch.arange(t_max)[None] < turns[:, None]
        return memory, valid


@pytest.fixture(scope="module")
def model() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", lora=True, lora_r=4, lora_alpha=8),
        vision_tower=FakeVisionTower(),
        video_connector=FakeConnector,
        audio_tower=FakeAudioTower(),
        audio_projector=functools.partial(AudioProjector, kind="linear"),
        history_compressor=FakeCompressor,
    ).eval()


def _batch(model: MultiMoodModel, prompts: list[str], answers: list[str] | None = None, **extra):
    tok = model.tokenizer
    texts = [p + (a if answers else "") for p, a in zip(prompts, answers or [""] * len(prompts), strict=True)]
    enc = tok(texts, return_tensors="pt", padding=True)
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if answers:
        labels = enc["input_ids"].clone()
        for b, p in enumerate(prompts):
            labels[b, : len(tok(p)["input_ids"])] = IGNORE_INDEX
        labels[enc["attention_mask"] == 0] = IGNORE_INDEX
        batch["labels"] = labels
    batch.update(extra)
    return batch


PROMPT = f"Video: {VIDEO_TOKEN}\nAudio: {AUDIO_TOKEN}\nChat history: {HISTORY_TOKEN}\nClient utterance: hi\n"


def _media(batch_size: int, frames: int = 10):
    video = torch.rand(batch_size, FRAMES, 3, 4, 4)
    audio = torch.randn(batch_size, frames, 128)
    return video, audio


def test_each_block_lands_at_its_placeholder(model: MultiMoodModel) -> None:
    video, audio = _media(2)
    frame_mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    history = torch.tensor([[3, 7, 4, 7, 5, 7], [3, 3, 7, 0, 0, 0]])
    batch = _batch(
        model,
        [PROMPT, "Short. " + PROMPT],
        video=video,
        audio=audio,
        audio_frame_mask=frame_mask,
        history_ids=history,
        history_attention_mask=(history != 0).long(),
    )
    blocks = model.feature_blocks(batch)
    inputs = model.splice(batch["input_ids"], batch["attention_mask"], blocks)
    text = model.llm.embed(batch["input_ids"])
    for b in range(2):
        spans = inputs.spans[b]
        assert spans[VIDEO_TOKEN][1] - spans[VIDEO_TOKEN][0] == FRAMES * PATCHES
        assert spans[AUDIO_TOKEN][1] - spans[AUDIO_TOKEN][0] == [5, 3][b]  # valid frames / 2
        assert spans[HISTORY_TOKEN][1] - spans[HISTORY_TOKEN][0] == [3, 1][b]  # one per <MEM>
        for token, (start, end) in spans.items():
            assert torch.equal(inputs.inputs_embeds[b, start:end], blocks[token][b])
        # Text before the first placeholder is untouched, position for position.
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()]
        first = int((ids == model.token_ids[VIDEO_TOKEN]).nonzero()[0])
        assert spans[VIDEO_TOKEN][0] == first
        assert torch.equal(inputs.inputs_embeds[b, :first], text[b, :first])
        # The block order follows the prompt: video, then audio, then history.
        assert spans[VIDEO_TOKEN][1] < spans[AUDIO_TOKEN][0] < spans[AUDIO_TOKEN][1] < spans[HISTORY_TOKEN][0]
    lengths = inputs.attention_mask.sum(-1)
    assert torch.equal(inputs.position_ids[0, : lengths[0]], torch.arange(int(lengths[0])))


def test_labels_ignore_inserted_spans_and_keep_the_answer(model: MultiMoodModel) -> None:
    video, audio = _media(1)
    batch = _batch(model, [PROMPT], ["Client's emotion: joy"], video=video, audio=audio)
    inputs = model.prepare_inputs(batch)
    for start, end in inputs.spans[0].values():
        assert (inputs.labels[0, start:end] == IGNORE_INDEX).all()
    supervised = inputs.labels[0][inputs.labels[0] != IGNORE_INDEX]
    assert model.tokenizer.decode(supervised) == "Client's emotion: joy"


def test_absent_modalities_leave_no_tokens_and_batches_mix(model: MultiMoodModel) -> None:
    video, audio = _media(3)
    batch = _batch(
        model,
        [PROMPT] * 3,
        video=video,
        video_mask=torch.tensor([True, False, True]),
        audio=audio,
        audio_mask=torch.tensor([False, True, True]),
    )
    inputs = model.prepare_inputs(batch)
    widths = [{k: e - s for k, (s, e) in spans.items()} for spans in inputs.spans]
    assert [w[VIDEO_TOKEN] for w in widths] == [FRAMES * PATCHES, 0, FRAMES * PATCHES]
    assert [w[AUDIO_TOKEN] for w in widths] == [0, 5, 5]
    assert [w[HISTORY_TOKEN] for w in widths] == [0, 0, 0]  # no history given
    prompt_len = int(batch["attention_mask"][0].sum()) - 3  # three placeholders removed
    assert inputs.attention_mask.sum(-1).tolist() == [
        prompt_len + w[VIDEO_TOKEN] + w[AUDIO_TOKEN] for w in widths
    ]
    # Right padding: real tokens first, zeros after.
    for b, n in enumerate(inputs.attention_mask.sum(-1).tolist()):
        assert inputs.attention_mask[b, :n].all()
        assert not inputs.attention_mask[b, n:].any()
        assert inputs.inputs_embeds[b, n:].abs().sum() == 0


def test_left_padding_for_generation(model: MultiMoodModel) -> None:
    video, audio = _media(2)
    batch = _batch(model, [PROMPT, "A much longer prefix here. " + PROMPT], video=video, audio=audio)
    right = model.prepare_inputs(batch, padding_side="right")
    left = model.prepare_inputs(batch, padding_side="left")
    for b in range(2):
        n = int(right.attention_mask[b].sum())
        assert torch.equal(left.inputs_embeds[b, -n:], right.inputs_embeds[b, :n])
        assert torch.equal(left.position_ids[b, -n:], torch.arange(n))
        for token, (s, e) in left.spans[b].items():
            assert torch.equal(
                left.inputs_embeds[b, s:e], right.inputs_embeds[b, slice(*right.spans[b][token])]
            )


def test_prompt_errors_are_clear(model: MultiMoodModel) -> None:
    video, _ = _media(1)
    twice = _batch(model, [f"{VIDEO_TOKEN} {VIDEO_TOKEN}"], video=video)
    with pytest.raises(ValueError, match="appears more than once"):
        model.prepare_inputs(twice)
    missing = _batch(model, ["no placeholder"], video=video)
    with pytest.raises(ValueError, match="no <video> placeholder"):
        model.prepare_inputs(missing)


def test_training_step_updates_lora_and_projectors_only(model: MultiMoodModel) -> None:
    video, audio = _media(2)
    batch = _batch(
        model, [PROMPT] * 2, ["Client's emotion: joy", "Client's emotion: anger"], video=video, audio=audio
    )
    model.train()
    model.zero_grad()
    loss = model(batch).loss
    loss.backward()
    model.eval()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in grads)
    assert all(
        g is not None
        for n, g in grads.items()
        if "lora_" in n or "audio_projector" in n or "video_connector" in n
    )
    frozen = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert frozen
    assert all(not p.requires_grad and p.grad is None for p in frozen)


def test_generate_returns_text_and_batching_does_not_change_it(model: MultiMoodModel) -> None:
    torch.manual_seed(1)
    video, audio = _media(2)
    prompts = [PROMPT, "Another, longer client turn. " + PROMPT]
    both = model.generate(_batch(model, prompts, video=video, audio=audio), max_new_tokens=6, do_sample=False)
    assert len(both) == 2
    assert all(isinstance(t, str) for t in both)
    for b in range(2):
        single = model.generate(
            _batch(model, [prompts[b]], video=video[b : b + 1], audio=audio[b : b + 1]),
            max_new_tokens=6,
            do_sample=False,
        )
        assert single == [both[b]]


def test_components_must_come_in_pairs() -> None:
    llm = LanguageModel("tiny:qwen2")
    with pytest.raises(ValueError, match="vision_tower and video_connector"):
        MultiMoodModel(llm, vision_tower=FakeVisionTower())
    with pytest.raises(ValueError, match="audio_tower and audio_projector"):
        MultiMoodModel(llm, audio_projector=functools.partial(AudioProjector, kind="linear"))
