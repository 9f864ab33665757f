"""How many LoRA weights a plain AdamW step fails to change when the weights themselves are bf16.

A LoRA A matrix of a Qwen2-7B ``q_proj`` at the paper's rank (128 x 3584, peft's kaiming-uniform
initialisation), random gradients, ``torch.optim.AdamW`` without master weights: the fraction of
entries left bit-identical after 1 and after 10 steps, for float32 and bfloat16 weights, at the
paper's learning rates (SFT 2e-5, GRPO 1e-5) and one ten times larger. Adam's first steps move every
entry by about the learning rate, so bf16 (8 significant bits) drops updates smaller than half a
unit in the last place of the weight. This decides ``lora_dtype`` in configs/model/paper.yaml.

    python -m benchmarks.lora_bf16_updates
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

from benchmarks.common import write_row

IN_FEATURES, RANK = 3584, 128  # Qwen2-7B hidden size, paper LoRA rank (B.2)


def unchanged_fraction(dtype: torch.dtype, lr: float, steps: int, seed: int = 0) -> float:
    """Fraction of a LoRA A matrix still equal to its initial value after ``steps`` AdamW steps."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(RANK, IN_FEATURES)
    bound = 1 / math.sqrt(IN_FEATURES)  # kaiming_uniform_(a=sqrt(5)), peft's lora_A initialisation
    weight.uniform_(-bound, bound, generator=generator)
    param = nn.Parameter(weight.to(dtype))
    start = param.detach().clone()
    optimizer = torch.optim.AdamW([param], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        param.grad = torch.randn(param.shape, generator=generator).to(dtype)
        optimizer.step()
    return (param == start).float().mean().item()


def measure() -> dict[str, Any]:
    rows = []
    for lr in (1e-5, 2e-5, 2e-4):
        for steps in (1, 10):
            row = {"lr": lr, "steps": steps}
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                row[f"unchanged_{name}"] = round(unchanged_fraction(dtype, lr, steps), 4)
            rows.append(row)
    return {"shape": [RANK, IN_FEATURES], "optimizer": "torch.optim.AdamW, no master weights", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/<name>.jsonl)")
    args = parser.parse_args(argv)
    result = measure()
    path = write_row("lora_bf16_updates", result, args.out)
    for row in result["rows"]:
        print(
            f"lr {row['lr']:g}, {row['steps']:>2} step(s): unchanged float32 {row['unchanged_float32']:.1%}, "
            f"bfloat16 {row['unchanged_bfloat16']:.1%}"
        )
    print(f"row appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
