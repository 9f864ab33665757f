"""Generation from the tiny fused model: its text goes through the answer parser, and it is the same in
train mode (RL rollouts are generated inside training steps) as in eval mode.

1. Untrained, the model's text does not parse, and that shows as a counted failure. Trained on one
   sample until it knows the answer, it generates that answer from the same multimodal inputs (video,
   audio, compressed history) in the paper's format (figure 4) and the parser reads all four fields.
2. In train mode with gradient checkpointing and LoRA dropout, ``generate`` gives the same tokens and
   logits as in eval mode, and those logits equal a teacher-forced forward pass over the prompt and
   the generated tokens (the context is seen at every step).
"""

from __future__ import annotations

import functools

import pytest
import torch

from multimood.constants import IGNORE_INDEX
from multimood.data.answer import format_answer, parse_answer
from multimood.data.datasets import ChatEncoder
from multimood.data.fbank import beats_fbank
from multimood.data.prompt import build_mesc_prompt
from multimood.models.audio import AudioTower
from multimood.models.compressor import MambaHistoryCompressor
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower

# Tiny tensors: intra-op threads only contend on a busy 2-core machine (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(llm: LanguageModel) -> MultiMoodModel:
    return MultiMoodModel(
        llm=llm,
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind="linear"),
        history_compressor=functools.partial(
            MambaHistoryCompressor,
            backbone="tiny:mamba",
            backbone_trainable="frozen",
            projector_trainable="frozen",
        ),
    )


def _media(model: MultiMoodModel) -> dict[str, torch.Tensor]:
    size = model.vision_tower.image_size[0]
    history = model.history_compressor.history_tokenizer
    ids, mask = history.collate([history(["Client (emotion: sadness): Nobody visits.", "Therapist: I see."])])
    return {
        "video": torch.randn(1, 2, 3, size, size),
        "audio": beats_fbank(torch.randn(16_000) * 0.1)[None],
        "history_ids": ids,
        "history_attention_mask": mask,
    }


def test_generated_answers_parse_into_the_four_tasks() -> None:
    torch.manual_seed(0)
    model = _model(LanguageModel("tiny:qwen2", trainable="full"))
    encoder = ChatEncoder(model.tokenizer)
    answer = format_answer("sadness", "neutral", "Restatement", "You feel alone.")
    item = encoder.encode(build_mesc_prompt("Nobody calls me anymore."), answer)
    media = _media(model)
    batch = {
        "input_ids": item["input_ids"][None],
        "attention_mask": torch.ones(1, len(item["input_ids"]), dtype=torch.long),
        "labels": item["labels"][None],
        **media,
    }
    assert (batch["labels"] != IGNORE_INDEX).sum() == len(encoder.answer_ids(answer))
    prompt = item["prompt_ids"][None]
    generation = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt), **media}

    # Random weights: the text does not parse, and that is a counted failure, not an exception.
    untrained = parse_answer(model.generate(generation, max_new_tokens=8, do_sample=False)[0])
    assert untrained.ok is False
    assert untrained.client_emotion_index == -1

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(200):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    assert loss.item() < 0.05

    texts = model.generate(generation, max_new_tokens=64, do_sample=False)
    parsed = parse_answer(texts[0])
    assert parsed.ok, (texts[0], parsed.reason)
    assert (parsed.client_emotion, parsed.therapist_emotion, parsed.strategy) == (
        "sadness",
        "neutral",
        "Restatement",
    )
    assert parsed.response == "You feel alone."


@pytest.fixture(scope="module")
def checkpointed_model() -> MultiMoodModel:
    torch.manual_seed(0)
    llm = LanguageModel(
        "tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8, lora_dropout=0.3, gradient_checkpointing=True
    )
    # Trained adapters: with lora_B at its zero start, LoRA dropout would have nothing to drop.
    for name, p in llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    return _model(llm)


def test_generate_in_train_mode_with_gradient_checkpointing_equals_eval_mode(
    checkpointed_model: MultiMoodModel,
) -> None:
    model = checkpointed_model
    assert model.llm.model.base_model.model.is_gradient_checkpointing
    encoder = ChatEncoder(model.tokenizer)
    prompt = torch.tensor([encoder.prompt_ids(build_mesc_prompt("I keep thinking about it."))])
    batch = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt), **_media(model)}
    kwargs = {"max_new_tokens": 6, "do_sample": False, "return_dict_in_generate": True, "output_logits": True}

    model.train()
    modes = {name: m.training for name, m in model.named_modules()}
    in_train = model.generate_ids(batch, **kwargs)
    assert {name: m.training for name, m in model.named_modules()} == modes  # every part's mode is back
    model.eval()
    in_eval = model.generate_ids(batch, **kwargs)

    assert torch.equal(in_train.sequences, in_eval.sequences)
    assert in_train.sequences.shape == (1, 6)
    for step, (a, b) in enumerate(zip(in_train.logits, in_eval.logits, strict=True)):
        assert torch.equal(a, b), f"step {step}"

    # Independent check: a teacher-forced pass over prompt + generated tokens gives the same logits
    # at every step, so each step saw the whole context.
    with torch.no_grad():
        spliced = model.prepare_inputs(batch)
        new = in_eval.sequences
        embeds = torch.cat([spliced.inputs_embeds, model.llm.embed(new)], dim=1)
        logits = model.llm(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long)
        ).logits
    start = spliced.inputs_embeds.shape[1] - 1
    for step, step_logits in enumerate(in_eval.logits):
        torch.testing.assert_close(step_logits[0], logits[0, start + step], atol=1e-4, rtol=1e-4)


def test_llm_generate_alone_is_the_same_in_train_mode(checkpointed_model: MultiMoodModel) -> None:
    llm = checkpointed_model.llm
    ids = llm.tokenizer(["how are you today"], return_tensors="pt")
    embeds = llm.embed(ids["input_ids"]).detach()
    kwargs = {"inputs_embeds": embeds, "attention_mask": ids["attention_mask"], "max_new_tokens": 5}
    kwargs.update(do_sample=False, return_dict_in_generate=True, output_logits=True)
    llm.train()
    in_train = llm.generate(**kwargs)
    assert llm.training
    llm.eval()
    in_eval = llm.generate(**kwargs)
    assert torch.equal(in_train.sequences, in_eval.sequences)
    assert all(torch.equal(a, b) for a, b in zip(in_train.logits, in_eval.logits, strict=True))
