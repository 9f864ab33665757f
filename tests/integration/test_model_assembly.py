"""The fused model with every real component at tiny size: SigLIP-style tower + STC, BEATs + P_A,
Mamba ConvCompressor, Qwen2 with QLoRA. Shapes at each junction; exact sizes of the trainable parts,
computed from their formulas; what an optimizer step moves and what it leaves alone; a batch
without media changes nothing but still reaches every trainable part. (Generation through the
answer parser: tests/integration/test_generate_parse.py.)"""

from __future__ import annotations

import functools

import pytest
import torch

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.data.answer import format_answer
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


# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _build_model() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", load_in_4bit=True, trainable="lora", lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind="linear"),
        history_compressor=functools.partial(
            MambaHistoryCompressor, backbone="tiny:mamba", backbone_trainable="frozen"
        ),
    )


@pytest.fixture(scope="module")
def model() -> MultiMoodModel:
    return _build_model()


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


def _reg_block(c_in: int, c_out: int) -> int:
    """Parameters of one timm RegNet bottleneck as VideoLLaMA2's STC uses it (bottle ratio 1,
    depthwise 3x3, squeeze-excitation to a quarter of the block's input channels, LayerNorm2d
    after each conv, a 1x1 conv + norm shortcut where the width changes; convs without bias)."""
    se = round(c_in * 0.25)
    n = c_out * c_in + 2 * c_out  # conv1 1x1 + norm
    n += c_out * 3 * 3 + 2 * c_out  # conv2 depthwise 3x3 + norm
    n += (se * c_out + se) + (c_out * se + c_out)  # SE fc1, fc2 (with bias)
    n += c_out * c_out + 2 * c_out  # conv3 1x1 + norm
    if c_in != c_out:
        n += c_out * c_in + 2 * c_out  # shortcut conv + norm
    return n


def stc_parameters(c: int, d: int, depth: int) -> int:
    """STC connector (hidden width = d): RegStage c->d, Conv3d 2x2x2 d->d, RegStage d->d, MLP d->d->d.

    c=32, d=64, depth 1: s1 10,376 (2,176 + 704 + 1,096 + 4,224 + shortcut 2,176), sampler 32,832,
    s2 11,280 (4,224 + 704 + 2,128 + 4,224), readout 8,320: 62,808.
    """
    stage = lambda c_in: _reg_block(c_in, d) + (depth - 1) * _reg_block(d, d)  # noqa: E731
    return stage(c) + (d * d * 8 + d) + stage(d) + 2 * (d * d + d)


def qwen2_lora_parameters(config, r: int) -> int:
    """LoRA on every linear layer of every decoder layer: r * (in + out) each (lm_head excluded)."""
    h, inter = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    return config.num_hidden_layers * sum(r * (i + o) for i, o in shapes)


def test_trainable_parts_have_their_formula_sizes(model: MultiMoodModel) -> None:
    c_video, c_audio = model.vision_tower.hidden_size, model.audio_tower.output_dim
    d, h = model.llm.hidden_size, model.history_compressor.backbone_hidden_size
    # The tiny kit's widths, so that the numbers below are concrete (worked by hand in the comments).
    assert (c_video, c_audio, d, h) == (32, 32, 64, 64)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    assert count(model.video_connector) == stc_parameters(c_video, d, depth=1) == 62_808
    assert count(model.audio_projector) == c_audio * d + d == 2_112
    assert count(model.history_compressor) == (h * d + d) + h == 4_224  # P_H (linear) + the <MEM> vector
    assert count(model.llm) == qwen2_lora_parameters(model.llm.config, r=4) == 8_192
    assert count(model.vision_tower) == count(model.audio_tower) == 0
    assert count(model) == 62_808 + 2_112 + 4_224 + 8_192


def test_an_optimizer_step_moves_what_trains_and_nothing_else() -> None:
    model = _build_model()
    batch = _batch(model, with_answer=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected_trainable = {
        n
        for n in before
        if n.startswith(("video_connector.", "audio_projector.", "history_compressor.projector."))
        or n == "history_compressor.mem_embedding"
        or (n.startswith("llm.") and "lora_" in n)
    }
    assert trainable == expected_trainable
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0
    )
    model.train()
    # Frozen encoders and the frozen compressor backbone stay in eval mode inside a training model.
    assert not any(m.training for m in model.vision_tower.model.modules())
    assert not any(m.training for m in model.audio_tower.encoder.modules())
    assert not any(m.training for m in model.history_compressor.backbone.modules())
    for _ in range(2):  # LoRA B starts at zero, so LoRA A gets a gradient from the second step on
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    after = dict(model.named_parameters())

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        # Bit for bit: 4-bit codes packed in a float storage dtype can read as NaN, and NaN != NaN.
        return a.dtype == b.dtype and torch.equal(
            a.detach().contiguous().view(torch.uint8), b.detach().contiguous().view(torch.uint8)
        )

    still = sorted(n for n in trainable if same(before[n], after[n]))
    assert not still, f"trainable parameters that did not move: {still}"
    moved = sorted(n for n in before if n not in trainable and not same(before[n], after[n]))
    assert not moved, f"frozen parameters that moved: {moved}"
    # The 4-bit base is still 4-bit after the step.
    from bitsandbytes.nn import Params4bit

    assert any(isinstance(p, Params4bit) for n, p in model.llm.named_parameters() if n not in trainable)


def test_a_batch_without_media_changes_nothing_and_reaches_every_trainable_part(
    model: MultiMoodModel,
) -> None:
    full = _batch(model, with_answer=True)
    text = {k: full[k] for k in ("input_ids", "attention_mask", "labels")}
    text_only = MultiMoodModel(llm=model.llm)  # the oracle: the same LLM with no media parts at all
    model.train()
    text_only.train()
    torch.manual_seed(1)
    model.zero_grad()
    loss = model(text).loss
    loss.backward()
    grads = {
        n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
    }
    torch.manual_seed(1)  # the same LoRA dropout masks
    model.zero_grad()
    reference = text_only(text).loss
    reference.backward()
    model.eval()
    assert torch.equal(loss, reference)
    for name, grad in grads.items():
        assert grad is not None, f"{name} took no part in the step"
        if name.startswith("llm."):
            assert torch.equal(grad, model.get_parameter(name).grad), name
        else:
            assert not grad.any(), f"{name} got a non-zero gradient from an absent modality"


def test_the_stc_stand_in_is_one_temporal_kernel_of_a_2x2_grid(model: MultiMoodModel) -> None:
    shapes: list[tuple[int, ...]] = []
    handle = model.video_connector.register_forward_hook(
        lambda m, args, out: shapes.append(tuple(args[0].shape))
    )
    batch = _batch(model, with_answer=True)
    del batch["video"], batch["video_mask"]
    model.train()
    try:
        model(batch).loss.backward()
    finally:
        handle.remove()
        model.eval()
        model.zero_grad()
    # A frozen SigLIP is not run; STC gets zeros of 2 frames x 4 patches (not 4 x 16 patches here,
    # not 16 x 729 at paper size).
    assert shapes == [(1, 2, 4, model.vision_tower.hidden_size)]
