"""Train the tiny fused model on one sample until it knows the answer, then generate it from the same
multimodal inputs: the text comes back in the SPEC format and the parser reads all four fields."""

from __future__ import annotations

import functools

import torch

from multimood.constants import IGNORE_INDEX
from multimood.data.answer import format_answer, parse_answer
from multimood.data.datasets import ChatEncoder
from multimood.data.fbank import beats_fbank
from multimood.data.prompt import build_mesc_prompt
from multimood.models.audio import AudioTower
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower


def test_generated_answers_parse_into_the_four_tasks() -> None:
    torch.manual_seed(0)
    model = MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", freeze_base=False),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=functools.partial(AudioProjector, kind="linear"),
    )
    encoder = ChatEncoder(model.tokenizer)
    answer = format_answer("sadness", "neutral", "Restatement", "You feel alone.")
    item = encoder.encode(build_mesc_prompt("Nobody calls me anymore."), answer)
    size = model.vision_tower.image_size[0]
    media = {
        "video": torch.randn(1, 2, 3, size, size),
        "audio": beats_fbank(torch.randn(16_000) * 0.1)[None],
    }
    batch = {
        "input_ids": item["input_ids"][None],
        "attention_mask": torch.ones(1, len(item["input_ids"]), dtype=torch.long),
        "labels": item["labels"][None],
        **media,
    }
    assert (batch["labels"] != IGNORE_INDEX).sum() == len(encoder.answer_ids(answer))

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

    prompt = item["prompt_ids"][None]
    texts = model.generate(
        {"input_ids": prompt, "attention_mask": torch.ones_like(prompt), **media},
        max_new_tokens=64,
        do_sample=False,
    )
    parsed = parse_answer(texts[0])
    assert parsed.ok, (texts[0], parsed.reason)
    assert (parsed.client_emotion, parsed.therapist_emotion, parsed.strategy) == (
        "sadness",
        "neutral",
        "Restatement",
    )
    assert parsed.response == "You feel alone."
