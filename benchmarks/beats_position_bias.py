"""BEATs relative-position bucket table: rebuilt in every forward (before) vs cached (after).

The released BEATs (iter3+ AS2M: 12 layers, 768 wide, 320 buckets, max distance 800) with random
weights (timing does not depend on them), on 30 s of audio: 2,998 fbank frames, 1,496 tokens, what
VideoLLaMA2-AV's eight 2 s windows padded to 30 s always give. "Before" clears the cache ahead of
every forward, which is exactly the old code path (the table computed on the CPU, then copied to
the table's device); "after" reuses it.

    python -m benchmarks.beats_position_bias [--runs 5] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import write_row
from multimood.count_params import BEATS_ITER3_PLUS_AS2M
from multimood.models.beats import BEATsEncoder, relative_position_buckets

FRAMES_30S = 2998


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "min_s": round(min(times), 4),
        "median_s": round(statistics.median(times), 4),
        "max_s": round(max(times), 4),
    }


def _timed(fn: Callable[[], Any], runs: int, sync: Callable[[], None]) -> dict[str, float]:
    """min/median/max seconds of ``runs`` calls (after one warm-up call)."""
    return _paired([fn], runs, sync)[0]


def _paired(fns: list[Callable[[], Any]], runs: int, sync: Callable[[], None]) -> list[dict[str, float]]:
    """Like :func:`_timed` for several functions, called in turn within each run, so that a load
    change on a shared machine hits all of them alike."""
    for fn in fns:
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return [_summary(t) for t in times]


def measure(runs: int, device: str) -> dict[str, Any]:
    """Bucket-table build time and forward times with and without the cache."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    encoder = BEATsEncoder(BEATS_ITER3_PLUS_AS2M).eval().to(device)
    layers = encoder.encoder
    fbank = torch.randn(1, FRAMES_30S, 128, device=device)
    tokens = encoder.num_tokens(FRAMES_30S)
    cfg = encoder.config

    def uncached_forward() -> None:
        layers._buckets = None  # the old behaviour: a fresh table in every forward
        encoder.forward_fbank(fbank)

    with torch.no_grad():
        table = _timed(
            lambda: relative_position_buckets(tokens, cfg.num_buckets, cfg.max_distance), runs, sync
        )
        bias_before, bias_after = _paired(
            [
                lambda: (setattr(layers, "_buckets", None), layers.position_bias(tokens)),
                lambda: layers.position_bias(tokens),
            ],
            runs,
            sync,
        )
        forward_before, forward_after = _paired(
            [uncached_forward, lambda: encoder.forward_fbank(fbank)], runs, sync
        )
    return {
        "device": device,
        "tokens": tokens,
        "runs": runs,
        "bucket_table_build": table,
        "position_bias_before": bias_before,
        "position_bias_after": bias_after,
        "forward_before": forward_before,
        "forward_after": forward_after,
        "cache_mib": round(layers._buckets.numel() * layers._buckets.element_size() / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per measurement (min/median/max)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/<name>.jsonl)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    row = measure(args.runs, args.device)
    path = write_row("beats_position_bias", row, args.out)
    for key in ("bucket_table_build", "position_bias_before", "position_bias_after"):
        print(f"{key:>22}: median {row[key]['median_s'] * 1000:.2f} ms  ({row[key]})")
    for key in ("forward_before", "forward_after"):
        print(f"{key:>22}: median {row[key]['median_s']:.3f} s  ({row[key]})")
    print(f"cache: {row['cache_mib']} MiB for {row['tokens']} tokens; row appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
