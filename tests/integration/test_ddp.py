"""Two-process CPU DDP (gloo, ``find_unused_parameters=False``) over the tiny fused model.

With the paper's random modality selection, a rank regularly gets a batch with no video, no audio
or no history. Every trainable part must still take part in its backward pass, or DDP stops on the
next step ("Expected to have finished reduction in the prior iteration ..."). Here rank 0 never has
video and rank 1 never has audio or history turns, in the different shapes a batch can take (the
tensor missing from the batch, present with every mask row False, history rows without turns).
Afterwards both ranks must hold identical parameters, and the trainable ones must have moved.
"""

from __future__ import annotations

import datetime
import functools
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multimood.constants import AUDIO_TOKEN, HISTORY_TOKEN, IGNORE_INDEX, VIDEO_TOKEN
from multimood.data.datasets import ChatEncoder
from multimood.data.fbank import beats_fbank
from multimood.models.audio import AudioTower
from multimood.models.compressor import MambaHistoryCompressor
from multimood.models.llm import LanguageModel
from multimood.models.multimood import MultiMoodModel
from multimood.models.projectors import AudioProjector
from multimood.models.stc import STCConnector
from multimood.models.vision import VisionTower

STEPS = 3
FRAMES = 2


def build_model() -> MultiMoodModel:
    """The parts of configs/model/tiny.yaml, with LoRA on the compressor too (trainable backbone path)."""
    torch.manual_seed(0)
    return MultiMoodModel(
        llm=LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8),
        vision_tower=VisionTower("tiny:siglip"),
        video_connector=functools.partial(STCConnector, depth=1),
        audio_tower=AudioTower("tiny:beats"),
        audio_projector=AudioProjector,
        history_compressor=functools.partial(
            MambaHistoryCompressor, backbone="tiny:mamba", backbone_trainable="lora", lora_r=4, lora_alpha=8
        ),
    )


def make_batch(model: MultiMoodModel, rank: int, step: int) -> dict[str, torch.Tensor]:
    """Rank 0: never video; rank 1: never audio, never a history turn. The shape of "never" varies by step."""
    encoder = ChatEncoder(model.tokenizer)
    prompt = f"Video: {VIDEO_TOKEN}\nAudio: {AUDIO_TOKEN}\nChat history: {HISTORY_TOKEN}\nClient: I feel low."
    items = [
        encoder.encode(prompt, f"Client's emotion: {e}")
        for e in (("sadness", "fear"), ("joy", "anger"))[rank]
    ]
    ids = torch.nn.utils.rnn.pad_sequence([i["input_ids"] for i in items], batch_first=True, padding_value=0)
    labels = torch.nn.utils.rnn.pad_sequence(
        [i["labels"] for i in items], batch_first=True, padding_value=IGNORE_INDEX
    )
    mask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones_like(i["input_ids"]) for i in items], batch_first=True, padding_value=0
    )
    batch: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    g = torch.Generator().manual_seed(100 * rank + step)
    size = model.vision_tower.image_size[0]
    history = model.history_compressor.history_tokenizer
    if rank == 0:
        if step == 1:  # the tensor is there, but no sample has video
            batch["video"] = torch.zeros(2, FRAMES, 3, size, size)
            batch["video_mask"] = torch.tensor([False, False])
        audio = torch.stack([beats_fbank(torch.randn(16_000, generator=g) * 0.1) for _ in range(2)])
        batch.update(audio=audio, audio_mask=torch.tensor([True, True]))
        turns = [
            ["Client (emotion: sadness): Bad week."],
            ["Therapist (emotion: neutral): Go on.", "Client: Yes."],
        ]
        batch["history_ids"], batch["history_attention_mask"] = history.collate([history(t) for t in turns])
    else:
        batch.update(
            video=torch.randn(2, FRAMES, 3, size, size, generator=g), video_mask=torch.tensor([True, True])
        )
        if step != 1:  # step 1: no history tensor at all; otherwise rows without turns
            batch["history_ids"], batch["history_attention_mask"] = history.collate(
                [history([]), history([])]
            )
    return batch


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # A rank that skips a collective would leave the other waiting: fail after two minutes instead.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        model = build_model().train()
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
        )
        losses = []
        for step in range(STEPS):
            loss = ddp(make_batch(model, rank, step)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        torch.save(
            {"start": start, "end": state, "trainable": trainable, "losses": losses},
            Path(out_dir) / f"{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_steps_with_modalities_missing_on_different_ranks(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    assert ranks[0]["trainable"] == ranks[1]["trainable"]
    trainable = ranks[0]["trainable"]
    # Every kind of trainable part is there: LLM LoRA, connector, projector, compressor LoRA, P_H, <MEM>.
    for part in (
        "llm.",
        "video_connector.",
        "audio_projector.",
        "history_compressor.backbone.",
        "history_compressor.projector.",
    ):
        assert any(n.startswith(part) for n in trainable), part
    assert "history_compressor.mem_embedding" in trainable
    for name, tensor in ranks[0]["end"].items():
        assert torch.equal(tensor, ranks[1]["end"][name]), f"{name} differs across ranks"
    moved = [n for n in trainable if not torch.equal(ranks[0]["start"][n], ranks[0]["end"][n])]
    assert moved == trainable
    frozen = [n for n in ranks[0]["end"] if n not in trainable]
    assert frozen and all(torch.equal(ranks[0]["start"][n], ranks[0]["end"][n]) for n in frozen)
    assert all(torch.isfinite(torch.tensor(r["losses"])).all() for r in ranks)
