"""The fused model with every real component at tiny size: SigLIP-style tower + STC, BEATs + P_A,
Mamba ConvCompressor, Qwen2 with QLoRA. Shapes at each junction, what trains, generation."""

from __future__ import annotations

import functools

import pytest
import torch

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.data.answer import format_answer, parse_answer
from multimood.data.fbank import beats_fbank
from multimood.data.prompt import build_mesc_prompt
from multimood.models.audio import AudioTower
from multimood.models.compressor import MambaHistoryCompressor
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower

FRAMES = 4


@pytest.fixture(scope="module")
def model() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", load_in_4bit=True, lora=True, lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind="linear"),
        history_compressor=functools.partial(
            MambaHistoryCompressor, backbone="tiny:mamba", freeze_backbone=True
        ),
    )


def _batch(model: MultiMoodModel, with_answer: bool):
    tower: VisionTower = model.vision_tower
    tok = model.tokenizer
    size = tower.image_size[0]
    prompts = [
        build_mesc_prompt("I can't sleep.", problem_type="Work stress", situation="Long hours."),
        build_mesc_prompt("Everything is fine, really."),
    ]
    answers = [
        format_answer("sadness", "neutral", "Open question", "What keeps you awake?"),
        format_answer("joy", "neutral", "Approval", "I'm glad to hear that."),
    ]
    full, prompt_only = [], []
    for p, a in zip(prompts, answers, strict=True):
        messages = [{"role": "user", "content": p}]
        head = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_only.append(head)
        full.append(head + a + "<|im_end|>\n")
    texts = full if with_answer else prompt_only
    enc = tok(texts, return_tensors="pt", padding=True)
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if with_answer:
        labels = enc["input_ids"].clone()
        for b, head in enumerate(prompt_only):
            labels[b, : len(tok(head)["input_ids"])] = IGNORE_INDEX
        labels[enc["attention_mask"] == 0] = IGNORE_INDEX
        batch["labels"] = labels
    # Two seconds of audio for sample 0, one second (padded) for sample 1.
    waves = [torch.randn(32_000) * 0.1, torch.randn(16_000) * 0.1]
    fbanks = [beats_fbank(w) for w in waves]
    length = max(f.shape[0] for f in fbanks)
    audio = torch.zeros(2, length, 128)
    frame_mask = torch.zeros(2, length, dtype=torch.bool)
    for b, f in enumerate(fbanks):
        audio[b, : f.shape[0]] = f
        frame_mask[b, : f.shape[0]] = True
    history = model.history_compressor.history_tokenizer
    encoded = [
        history(
            ["Client (emotion: sadness): I had a bad week.", "Therapist (emotion: neutral): Tell me more."]
        ),
        history([]),
    ]
    history_ids, history_mask = history.collate(encoded)
    batch.update(
        video=torch.randn(2, FRAMES, 3, size, size),
        video_mask=torch.tensor([True, True]),
        audio=audio,
        audio_frame_mask=frame_mask,
        audio_mask=torch.tensor([True, True]),
        history_ids=history_ids,
        history_attention_mask=history_mask,
    )
    return batch


def test_shapes_at_every_junction(model: MultiMoodModel) -> None:
    batch = _batch(model, with_answer=True)
    tower, stc = model.vision_tower, model.video_connector
    d = model.llm.hidden_size
    with torch.no_grad():
        patches = tower(batch["video"])
        assert patches.shape == (2, FRAMES, tower.num_patches, tower.hidden_size)
        video = stc(patches)
        assert video.shape == (2, stc.num_tokens(FRAMES, tower.patch_grid), d)
        feats, padding = model.audio_tower(batch["audio"], ~batch["audio_frame_mask"])
        assert feats.shape[:2] == padding.shape
        assert feats.shape[-1] == model.audio_tower.output_dim
        # BEATs: one token per 16x16 fbank patch, 8 per 16 frames; sample 1 has fewer valid ones.
        frames = batch["audio_frame_mask"].sum(-1)
        assert (~padding).sum(-1).tolist() == [(int(f) // 16) * 8 for f in frames]
        memory, valid = model.history_compressor(batch["history_ids"], batch["history_attention_mask"])
        assert memory.shape[-1] == d
        assert valid.sum(-1).tolist() == [2, 0]
        inputs = model.prepare_inputs(batch)
    widths = [{k: e - s for k, (s, e) in spans.items()} for spans in inputs.spans]
    # 2 s -> 198 fbank frames -> 12 x 8 = 96 tokens; 1 s -> 98 frames -> 6 x 8 = 48.
    assert widths[0] == {VIDEO_TOKEN: video.shape[1], AUDIO_TOKEN: 96, HISTORY_TOKEN: 2}
    assert widths[1] == {VIDEO_TOKEN: video.shape[1], AUDIO_TOKEN: 48, HISTORY_TOKEN: 0}


def test_what_trains_and_what_stays_frozen(model: MultiMoodModel) -> None:
    batch = _batch(model, with_answer=True)
    model.train()
    model.zero_grad()
    loss = model(batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    # Frozen encoders stay in eval mode inside a training model (no dropout, no layer drop).
    assert not any(m.training for m in model.vision_tower.model.modules())
    assert not any(m.training for m in model.audio_tower.encoder.modules())

    def grads(module: torch.nn.Module) -> list[bool]:
        return [p.grad is not None for p in module.parameters() if p.requires_grad]

    for frozen in (model.vision_tower, model.audio_tower, model.history_compressor.backbone):
        assert not any(p.requires_grad for p in frozen.parameters())
    for trained in (model.video_connector, model.audio_projector):
        assert grads(trained)
        assert all(grads(trained))
    assert all(p.grad is not None for p in model.history_compressor.projector.parameters())
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
    assert lora
    assert all(p.grad is not None for p in lora)
    base = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad for p in base)
    model.eval()


def test_generate_gives_text_the_parser_reads(model: MultiMoodModel) -> None:
    batch = _batch(model, with_answer=False)
    texts = model.generate(batch, max_new_tokens=8, do_sample=False)
    assert len(texts) == 2
    for text in texts:
        parsed = parse_answer(text)  # random weights: parsing fails, but as a counted failure
        assert parsed.ok is False
        assert parsed.client_emotion_index == -1
    # A well-formed answer in the same pipeline parses back.
    good = parse_answer(format_answer("fear", "neutral", "Advisement", "Let's breathe together."))
    assert good.ok
    assert (good.client_emotion, good.strategy) == ("fear", "Advisement")
