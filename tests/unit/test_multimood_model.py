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


# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


class FakeVisionTower(nn.Module):
    hidden_size = VISION_DIM
    num_patches = PATCHES
    image_size = (4, 4)

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
        self.mem_token_id = 7

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        turns = ((ids == self.mem_token_id) & mask.bool()).sum(-1)  # one memory vector per <MEM>
        t_max = max(int(turns.max()), 1)
        memory = self.embed(ids[:, :t_max] + 1)
        valid = torch.arange(t_max)[None] < turns[:, None]
        return memory, valid


@pytest.fixture(scope="module")
def model() -> MultiMoodModel:
    torch.manual_seed(0)
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8),
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


def _build(**overrides) -> MultiMoodModel:
    """A fresh fused model of fakes (for tests that train it); LoRA dropout off unless asked."""
    torch.manual_seed(0)
    parts = {
        "llm": LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0),
        "vision_tower": FakeVisionTower(),
        "video_connector": FakeConnector,
        "audio_tower": FakeAudioTower(),
        "audio_projector": functools.partial(AudioProjector, kind="linear"),
        "history_compressor": FakeCompressor,
    }
    parts.update(overrides)
    return MultiMoodModel(**parts)


ANSWERS = ["Client's emotion: joy", "Client's emotion: anger"]


def test_training_step_updates_lora_and_projectors_only() -> None:
    model = _build()
    model.history_compressor.requires_grad_(False)  # frozen after construction: must not move either
    history = torch.tensor([[3, 7, 4, 7], [5, 7, 0, 0]])
    video, audio = _media(2)
    batch = _batch(
        model,
        [PROMPT] * 2,
        ANSWERS,
        video=video,
        audio=audio,
        history_ids=history,
        history_attention_mask=(history != 0).long(),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert trainable == {
        n for n in before if "lora_" in n or n.startswith(("video_connector.", "audio_projector."))
    }
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):  # LoRA B starts at zero, so A moves from the second step on
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    after = dict(model.named_parameters())
    unchanged = sorted(n for n in trainable if torch.equal(before[n], after[n]))
    assert not unchanged, f"trainable parameters that did not move: {unchanged}"
    moved = sorted(n for n in before if n not in trainable and not torch.equal(before[n], after[n]))
    assert not moved, f"frozen parameters that moved: {moved}"
    assert all(after[n].grad is None for n in before if n not in trainable)


# ---------------------------------------------------------------- absent modalities, every step


def _no_media_variants(model: MultiMoodModel) -> dict[str, dict]:
    """The same two samples without video, audio or history turns, in each shape a batch can take."""
    video, audio = _media(2)
    empty_history = torch.zeros(2, 3, dtype=torch.long)
    base = _batch(model, [PROMPT, "Longer: " + PROMPT], ANSWERS)
    return {
        "tensors_missing": base,
        "masks_all_false": {
            **base,
            "video": video,
            "video_mask": torch.tensor([False, False]),
            "audio": audio,
            "audio_mask": torch.tensor([False, False]),
            "history_ids": empty_history,
            "history_attention_mask": torch.zeros_like(empty_history),
        },
    }


@pytest.mark.parametrize("variant", ["tensors_missing", "masks_all_false"])
def test_absent_modalities_add_exactly_nothing_but_every_trainable_part_gets_a_gradient(variant: str) -> None:
    model = _build()
    text_only = MultiMoodModel(llm=model.llm)  # the oracle: no media parts at all, same LLM
    batch = _no_media_variants(model)[variant]
    model.train()
    text_only.train()

    model.zero_grad()
    loss = model(batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.llm.named_parameters() if p.requires_grad}
    parts = {
        f"{role}.{n}": p.grad
        for role in ("video_connector", "audio_projector", "history_compressor")
        for n, p in getattr(model, role).named_parameters()
    }
    model.zero_grad()
    reference = text_only(batch).loss
    reference.backward()

    assert torch.equal(loss, reference)  # exactly, not approximately
    for name, p in model.llm.named_parameters():
        if p.requires_grad:
            assert torch.equal(grads[name], p.grad), name
    assert parts
    for name, grad in parts.items():
        assert grad is not None, f"{name} took no part in the step"
        assert not grad.any(), f"{name} got a non-zero gradient from nothing"


def test_stand_ins_skip_frozen_towers_and_never_run_without_gradients() -> None:
    model = _build()
    calls: dict[str, list[tuple[int, ...]]] = {"tower": [], "connector": [], "audio": [], "projector": []}
    for key, part in (
        ("tower", model.vision_tower),
        ("connector", model.video_connector),
        ("audio", model.audio_tower),
        ("projector", model.audio_projector),
    ):
        part.register_forward_hook(lambda m, args, out, key=key: calls[key].append(tuple(args[0].shape)))
    batch = _batch(model, [PROMPT], ANSWERS[:1])
    model.train()
    model(batch).loss.backward()
    # Frozen (parameter-free) towers are not run; the trainable connector and projector run on
    # zeros of the towers' output shapes: one frame of N patches, one audio token.
    assert calls == {
        "tower": [],
        "connector": [(1, 1, PATCHES, VISION_DIM)],
        "audio": [],
        "projector": [(1, 1, AUDIO_DIM)],
    }

    calls.update(connector=[], projector=[])
    with torch.no_grad():
        model(batch)
    model.eval()
    model.generate(_batch(model, [PROMPT]), max_new_tokens=2, do_sample=False)
    assert calls == {"tower": [], "connector": [], "audio": [], "projector": []}


def test_stand_ins_all_runs_every_part_in_every_forward_for_fsdp() -> None:
    model = _build(stand_ins="all")
    calls: list[str] = []
    for role in ("vision_tower", "video_connector", "audio_tower", "audio_projector", "history_compressor"):
        getattr(model, role).register_forward_hook(lambda m, args, out, role=role: calls.append(role))
    batch = _batch(model, [PROMPT], ANSWERS[:1])
    model.eval()
    with torch.no_grad():
        inputs = model.prepare_inputs(batch)
    assert calls == [
        "vision_tower",
        "video_connector",
        "audio_tower",
        "audio_projector",
        "history_compressor",
    ]
    assert all(e == s for s, e in inputs.spans[0].values())  # still nothing spliced in
    with pytest.raises(ValueError, match="stand_ins must be 'trainable' or 'all'"):
        _build(stand_ins="some")


class TrainableTower(FakeVisionTower):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return super().forward(video) * self.scale


def test_a_trainable_tower_runs_on_a_black_clip_of_its_image_size() -> None:
    model = _build(vision_tower=TrainableTower())
    seen: list[torch.Tensor] = []
    model.vision_tower.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.train()
    model(_batch(model, [PROMPT], ANSWERS[:1])).loss.backward()
    assert len(seen) == 1 and seen[0].shape == (1, 1, 3, 4, 4) and not seen[0].any()
    assert model.vision_tower.scale.grad is not None and model.vision_tower.scale.grad == 0


# ---------------------------------------------------------------- frozen parts run in eval mode


class DropoutConnector(FakeConnector):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(super().forward(x))


def test_frozen_parts_run_in_eval_mode_whatever_the_parents_mode() -> None:
    model = _build(video_connector=DropoutConnector)
    video, _ = _media(1)
    model.train()
    assert model.video_connector.drop.training  # trainable: dropout on
    features = model.vision_tower(video)
    assert not torch.equal(model.video_connector(features), model.video_connector(features))

    model.video_connector.requires_grad_(False)  # frozen after construction ...
    assert model.video_connector.training  # ... takes effect at the next train()
    model.train()
    assert model.training and model.llm.training
    assert not model.video_connector.training and not model.video_connector.drop.training
    assert torch.equal(model.video_connector(features), model.video_connector(features))
    # A parameter-free part (the fake towers) follows its parent, as nn.Module does.
    assert model.vision_tower.training

    model.video_connector.requires_grad_(True)
    model.train()
    assert model.video_connector.drop.training


def test_generate_runs_in_eval_mode_and_restores_each_parts_mode() -> None:
    model = _build(video_connector=DropoutConnector)
    model.audio_projector.requires_grad_(False)
    model.train()
    modes = {n: m.training for n, m in model.named_modules()}
    assert not modes["audio_projector"] and modes["video_connector.drop"]
    seen: list[bool] = []
    model.video_connector.register_forward_hook(lambda m, args, out: seen.append(m.drop.training))
    video, audio = _media(1)
    model.generate(_batch(model, [PROMPT], video=video, audio=audio), max_new_tokens=2, do_sample=False)
    assert seen == [False]
    assert {n: m.training for n, m in model.named_modules()} == modes


# ---------------------------------------------------------------- plug-in contract


class NoWidthTower(nn.Module):
    num_patches = PATCHES

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video


class ZeroWidthTower(NoWidthTower):
    hidden_size = 0


class NoOutputDim(nn.Module):
    def forward(self, fbank, padding):
        return fbank, padding


class NoMemCompressor(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()


class NoImageSizeTower(TrainableTower):
    image_size = None


def _wrong_width_connector(in_dim: int, out_dim: int) -> nn.Module:
    return FakeConnector(in_dim, out_dim + 1)


def test_a_part_missing_what_the_model_needs_fails_at_construction_naming_it() -> None:
    llm = LanguageModel("tiny:qwen2", trainable="frozen")
    cases = [
        (
            {"vision_tower": NoWidthTower(), "video_connector": FakeConnector},
            r"vision_tower: NoWidthTower \(tests\.unit\.test_multimood_model\.NoWidthTower\) has no 'hidden_size'",
        ),
        (
            {"vision_tower": ZeroWidthTower(), "video_connector": FakeConnector},
            r"ZeroWidthTower.*hidden_size must be a positive int",
        ),
        (
            {"audio_tower": NoOutputDim(), "audio_projector": AudioProjector},
            r"audio_tower: NoOutputDim .* has no 'output_dim'",
        ),
        (
            {"history_compressor": NoMemCompressor},
            r"history_compressor: NoMemCompressor .* has no 'mem_token_id'",
        ),
        (
            {"vision_tower": FakeVisionTower(), "video_connector": lambda c, d: lambda x: x},
            r"video_connector: function .* is not a torch\.nn\.Module",
        ),
        (
            {"vision_tower": NoImageSizeTower(), "video_connector": FakeConnector},
            r"vision_tower: NoImageSizeTower .* has no usable 'image_size'",
        ),
    ]
    for parts, message in cases:
        with pytest.raises(ValueError, match=message):
            MultiMoodModel(llm, **parts)


def test_a_part_that_returns_the_wrong_width_is_named() -> None:
    model = _build(video_connector=_wrong_width_connector)
    video, _ = _media(1)
    with pytest.raises(
        ValueError,
        match=r"video_connector: FakeConnector returned features of width 65, but the LLM's hidden size is 64",
    ):
        model.prepare_inputs(_batch(model, [PROMPT], video=video))


def test_history_ids_from_another_mem_id_are_refused() -> None:
    model = _build()
    history = torch.tensor([[3, 7]])
    batch = _batch(model, [PROMPT], history_ids=history, history_attention_mask=torch.ones_like(history))
    model.prepare_inputs({**batch, "history_mem_token_id": 7})  # the same id: fine
    with pytest.raises(ValueError, match=r"<MEM> id 8 \(tok-b\), the history_compressor expects 7"):
        model.prepare_inputs({**batch, "history_mem_token_id": 8, "history_tokenizer_name": "tok-b"})

    class Tok:
        mem_token_id = 8

    with pytest.raises(ValueError, match=r"<MEM> id 8 differs from the history_compressor's"):
        model.check_history_tokenizer(Tok())
    Tok.mem_token_id = 7
    model.check_history_tokenizer(Tok())
    with pytest.raises(ValueError, match="has no history_compressor"):
        MultiMoodModel(model.llm).check_history_tokenizer(Tok())


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
    llm = LanguageModel("tiny:qwen2", trainable="frozen")
    with pytest.raises(ValueError, match="vision_tower and video_connector"):
        MultiMoodModel(llm, vision_tower=FakeVisionTower())
    with pytest.raises(ValueError, match="audio_tower and audio_projector"):
        MultiMoodModel(llm, audio_projector=functools.partial(AudioProjector, kind="linear"))


def test_the_loss_from_logits_at_supervised_positions_only_equals_the_full_loss() -> None:
    from multimood.models import LanguageModel, MultiMoodModel

    torch.manual_seed(0)
    model = MultiMoodModel(LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8)).eval()
    tok = model.tokenizer
    prompts = ["a short prompt", "a much longer prompt with many more words in it than the other one"]
    rows = [tok(p + " answer: yes")["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    input_ids = torch.full((2, width), tok.pad_token_id)
    attention = torch.zeros(2, width, dtype=torch.long)
    labels = torch.full((2, width), -100)
    for b, row in enumerate(rows):
        input_ids[b, : len(row)] = torch.tensor(row)
        attention[b, : len(row)] = 1
        labels[b, len(row) - 3 : len(row)] = torch.tensor(row[-3:])  # the last three tokens supervised
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    cut, full = model(batch), model(batch, all_logits=True)
    # one row per supervised token: neither prompt positions nor the short row's padding
    assert cut.logits.shape == (6, full.logits.shape[-1])
    assert torch.allclose(cut.loss, full.loss, atol=1e-6), (cut.loss, full.loss)
    # the rows are the logits of the positions before each supervised token, in row-major order
    before = torch.cat([full.logits[b, len(row) - 4 : len(row) - 1] for b, row in enumerate(rows)])
    assert torch.allclose(cut.logits, before, atol=1e-5)
