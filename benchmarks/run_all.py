"""Run every benchmark once (``make bench``); each appends its JSON row under benchmarks/results/."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["benchmarks.decode_throughput"],
    ["benchmarks.decord_edit_lists"],
    ["benchmarks.history_compression"],
    ["benchmarks.beats_position_bias"],
    ["benchmarks.lora_bf16_updates"],
    ["benchmarks.model_modes"],
    ["benchmarks.sft_history_step"],
    ["benchmarks.demo_wall_time"],
    ["benchmarks.judge_reward_latency"],
    ["benchmarks.grpo_step"],
]


def main() -> int:
    failed = []
    for args in BENCHMARKS:
        print(f"== python -m {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, "-m", *args], check=False).returncode != 0:
            failed.append(args[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
