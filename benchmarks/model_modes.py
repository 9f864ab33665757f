"""What the fused model's training-time guarantees cost and what they fix (docs/design/model.md).

1. Stand-ins (every trainable part in every step): FLOPs of the STC connector on its stand-in input
   against one real clip, and of the audio projector on its stand-in against one real clip, at the
   paper's sizes (SigLIP-So400M 1152 -> Qwen2-7B 3584; BEATs 768 -> 3584). Counted with torch's
   FlopCounterMode on the meta device: no weights, no download, exact for the matmuls and convs.
2. Generation in train mode with gradient checkpointing (tiny Qwen2 + LoRA): the largest logit
   difference from eval mode per step, with transformers' ``generate`` called directly in train mode
   (what the code did before) and through ``LanguageModel.generate`` (now).
3. A frozen compressor backbone with trained LoRA adapters (tiny Mamba, LoRA dropout 0.05): the
   largest difference between two train-mode passes over the same histories, with only
   ``nn.Module.train`` (before) and with the compressor's ``train`` (now).

    python -m benchmarks.model_modes
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import write_row


def _flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def stand_in_flops() -> dict[str, Any]:
    from multimood.models.projectors import AudioProjector
    from multimood.models.stc import STCConnector

    with torch.device("meta"):
        stc = STCConnector(1152, 3584)
        projector = AudioProjector(768, 3584)
        real_clip = _flops(stc, torch.zeros(1, 16, 729, 1152))  # 16 frames of 27x27 patches
        stand_in = _flops(stc, torch.zeros(1, stc.min_frames, stc.min_patches, 1152))
        real_audio = _flops(projector, torch.zeros(1, 1496, 768))  # VideoLLaMA2-AV's 1,496 tokens
        audio_stand_in = _flops(projector, torch.zeros(1, 1, 768))
    return {
        "stc_gflop_real_clip": real_clip / 1e9,
        "stc_gflop_stand_in": stand_in / 1e9,
        "stc_stand_in_fraction": stand_in / real_clip,
        "audio_projector_gflop_real_clip": real_audio / 1e9,
        "audio_projector_gflop_stand_in": audio_stand_in / 1e9,
    }


def generate_train_vs_eval() -> dict[str, Any]:
    from multimood.models.llm import LanguageModel

    torch.manual_seed(0)
    llm = LanguageModel("tiny:qwen2", trainable="lora", lora_r=4, lora_alpha=8, gradient_checkpointing=True)
    ids = llm.tokenizer(["how are you feeling today"], return_tensors="pt")
    kwargs = {
        "inputs_embeds": llm.embed(ids["input_ids"]).detach(),
        "attention_mask": ids["attention_mask"],
        "max_new_tokens": 6,
        "do_sample": False,
        "return_dict_in_generate": True,
        "output_logits": True,
        "pad_token_id": llm.tokenizer.pad_token_id,
    }
    llm.eval()
    reference = llm.generate(**kwargs)
    llm.train()
    with torch.no_grad():
        before = llm.model.generate(**kwargs)  # transformers directly, in train mode
    now = llm.generate(**kwargs)

    def per_step(out: Any) -> list[float]:
        return [
            round(float((a - b).abs().max()), 4) for a, b in zip(out.logits, reference.logits, strict=True)
        ]

    return {"generate_max_logit_diff_before": per_step(before), "generate_max_logit_diff_now": per_step(now)}


def frozen_lora_compressor() -> dict[str, Any]:
    from multimood.models.compressor import MambaHistoryCompressor

    torch.manual_seed(0)
    model = MambaHistoryCompressor(
        llm_hidden_size=64,
        backbone="tiny:mamba",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        backbone_trainable="frozen",  # keeps the (frozen) stage-A adapters: lora_r > 0
    )
    for name, p in model.backbone.named_parameters():
        if "lora_B" in name:  # adapters as stage A leaves them: not at their zero start
            nn.init.normal_(p, std=0.5)
    tok = model.history_tokenizer
    turns = [f"Client (emotion: sadness): turn {i} about work and sleep." for i in range(6)]
    ids, mask = tok.collate([tok(turns), tok(turns[:3])])

    def two_passes() -> float:
        with torch.no_grad():
            a, valid = model(ids, mask)
            b, _ = model(ids, mask)
        return float((a[valid] - b[valid]).abs().max())

    nn.Module.train(model, True)  # every submodule in train mode: the behaviour before
    before = two_passes()
    model.train()
    return {"frozen_lora_two_pass_max_diff_before": before, "frozen_lora_two_pass_max_diff_now": two_passes()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSONL file to append to (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    row = {**stand_in_flops(), **generate_train_vs_eval(), **frozen_lora_compressor()}
    for key, value in row.items():
        print(f"{key}: {value}")
    write_row("model_modes", row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
