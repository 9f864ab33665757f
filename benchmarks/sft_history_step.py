"""SFT step time with the history compressed (ConvCompressor, one ``<MEM>`` embedding per turn) vs
the same full history written into the prompt as text, side by side in one run.

One step = forward, backward and an AdamW step of the SFT model (LoRA on the LLM; the compressor
frozen, as in stage C). Both modes see the same samples in the same order, interleaved batch by
batch, so machine load hits both alike. The LLM is the tiny Qwen2 with the real Qwen2 vocabulary
(so prompt lengths are real ones); the history compressor is the tiny Mamba, with the same vocabulary
(so a history is about as many tokens to both). Data: the real MESC
annotations when present (``--data``, default ``$MULTIMOOD_MESC_DIR`` else ``data/mesc``), text only,
every turn of the history; otherwise a synthetic MESC written under ``runs/bench/mesc``.

    python -m benchmarks.sft_history_step [--samples 24] [--batch-size 2] [--no-descriptions]
    [--select spread|longest]

History as the authors fed it (the default): each history utterance carries its generated
face/voice description, as in their ``val.json``/``test.json`` dialogues; that is the text behind
paper table 6 (~870 history tokens before compression, ~12 after). ``--no-descriptions`` writes the
bare utterances (about a sixth as long on MESC val). Samples: ``spread`` (default) takes samples
evenly spaced over the val split's text-prompt lengths, so their mean history is the split's;
``longest`` takes the longest histories.

Two rows: the tiny LLM, and a wider and deeper stand-in (hidden 512, 8 layers): the compressor's
cost is fixed while the LLM's cost per history token grows with its size. Each row gives the
median step time per mode, their ratio (compressed / text; the target is <= 0.5), and the mean LLM
input length per mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import write_row
from datamodules import MESCDataModule
from multimood.models import LanguageModel, MambaHistoryCompressor, MultiMoodModel

LLM = "tiny:qwen2?tokenizer=qwen2"
# A wider, deeper stand-in whose cost is in its layers, as a 7B model's is: with the real 152k
# vocabulary a small model's time goes to the LM head over the answer (the same in both modes), so
# this one uses the tiny tokenizer's small vocabulary. Qwen2-7B is ~19x Mamba-370M; the tiny pair is
# the other way round, which is why the first row alone says little about the paper's setting.
LARGER_LLM = (
    "tiny:qwen2?hidden_size=512&intermediate_size=1536&num_hidden_layers=8"
    "&num_attention_heads=8&num_key_value_heads=4"
)


def _data_dir(given: str | None) -> tuple[Path, str]:
    path = Path(given or os.environ.get("MULTIMOOD_MESC_DIR", "data/mesc"))
    if (path / "MESC.csv").is_file():
        return path, "real MESC (text only)"
    from multimood.data.synthetic import make_mesc

    synthetic = Path("runs/bench/mesc")
    if not (synthetic / "synthetic_meta.json").is_file():
        make_mesc(synthetic, num_dialogues=24, seed=0, overwrite=True, clips=False)
    return synthetic, "synthetic MESC"


def _compressor_backbone(llm_name: str) -> str:
    """The tiny Mamba with the LLM's vocabulary, so that a history is about as many Mamba tokens as
    LLM tokens (as with the paper's GPT-NeoX and Qwen2 vocabularies; the tiny vocabulary cuts
    MESC text into ~2.5x more pieces than Qwen2's)."""
    return "tiny:mamba?tokenizer=qwen2" if "tokenizer=qwen2" in llm_name else "tiny:mamba"


def _model(compressor: bool, llm_name: str = LLM) -> MultiMoodModel:
    torch.manual_seed(0)
    llm = LanguageModel(llm_name, trainable="lora", lora_r=8, lora_alpha=16)
    history = None
    if compressor:

        def history(d: int) -> MambaHistoryCompressor:
            return MambaHistoryCompressor(
                d,
                backbone=_compressor_backbone(llm_name),
                backbone_trainable="frozen",
                projector_trainable="frozen",
            )

    return MultiMoodModel(llm, history_compressor=history)


def _datamodule(data_dir: Path, mode: str, llm_name: str, descriptions: bool = True) -> MESCDataModule:
    dm = MESCDataModule(
        str(data_dir),
        tokenizer=llm_name,
        history_mode=mode,
        history_tokenizer=_compressor_backbone(llm_name) if mode == "compressor" else None,
        history_length=None,  # the whole history
        prompt_max_tokens=None,  # nothing cut from the text history
        # The released MESC has no train.json: descriptions then exist for val/test only, which
        # is all this benchmark reads.
        descriptions=descriptions,
        allow_eval_only_context=descriptions,
    )
    dm.setup("fit")
    return dm


def _batches(
    data_dir: Path,
    samples: int,
    batch_size: int,
    llm_name: str,
    descriptions: bool = True,
    select: str = "spread",
) -> tuple[dict[str, list[dict[str, Any]]], float]:
    """The same val samples in both modes, batched in order of length (little padding), and their
    mean history length in LLM tokens as text (paper table 6 counts ~870 on test)."""
    modules = {
        mode: _datamodule(data_dir, mode, llm_name, descriptions) for mode in ("compressor", "text", "none")
    }
    text, bare = modules["text"].datasets["val"], modules["none"].datasets["val"]
    lengths = [len(text[i]["input_ids"]) for i in range(len(text))]
    order = sorted(range(len(text)), key=lambda i: -lengths[i])
    if select == "longest":
        chosen = order[:samples]
    else:  # evenly spaced over the sorted lengths: the split's distribution in miniature
        step = len(order) / min(samples, len(order))
        chosen = [order[int(k * step)] for k in range(min(samples, len(order)))]
    history_tokens = statistics.fmean(lengths[i] - len(bare[i]["input_ids"]) for i in chosen)
    del modules["none"]
    out = {}
    for mode, dm in modules.items():
        dataset, collate = dm.datasets["val"], dm.collator()
        items = [dataset[i] for i in chosen]
        out[mode] = [collate(items[k : k + batch_size]) for k in range(0, len(items), batch_size)]
    return out, history_tokens


def measure(
    data_dir: Path,
    samples: int,
    batch_size: int,
    warmup: int = 2,
    llm_name: str = LLM,
    descriptions: bool = True,
    select: str = "spread",
) -> dict[str, Any]:
    modes = {"compressor": _model(True, llm_name), "text": _model(False, llm_name)}
    optimizers = {
        m: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for m, model in modes.items()
    }
    batches, history_tokens = _batches(data_dir, samples, batch_size, llm_name, descriptions, select)
    times: dict[str, list[float]] = {m: [] for m in modes}
    lengths: dict[str, list[int]] = {m: [] for m in modes}
    for i in range(len(batches["text"])):
        for mode, model in modes.items():
            batch = batches[mode][i]
            model.train()
            start = time.perf_counter()
            out = model(batch)
            out.loss.backward()
            optimizers[mode].step()
            optimizers[mode].zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[mode].append(elapsed)
            with torch.no_grad():
                lengths[mode].append(
                    int(model.prepare_inputs(batch).attention_mask.sum(dim=1).float().mean())
                )
    median = {m: statistics.median(t) for m, t in times.items()}
    return {
        "samples": samples,
        "batch_size": batch_size,
        "history_descriptions": descriptions,
        "select": select,
        "mean_history_text_tokens": history_tokens,
        "steps_timed": len(times["text"]),
        "median_step_s": median,
        "mean_step_s": {m: statistics.fmean(t) for m, t in times.items()},
        "ratio_compressed_over_text": median["compressor"] / median["text"],
        "mean_llm_input_tokens": {m: statistics.fmean(v) for m, v in lengths.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-descriptions",
        dest="descriptions",
        action="store_false",
        help="history utterances without their face/voice descriptions (not the authors' inputs)",
    )
    parser.add_argument("--select", choices=("spread", "longest"), default="spread")
    parser.add_argument("--rows", choices=("both", "tiny", "wider"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir, source = _data_dir(args.data)
    rows = {"tiny": [LLM], "wider": [LARGER_LLM], "both": [LLM, LARGER_LLM]}[args.rows]
    for name in rows:
        result = measure(
            data_dir,
            args.samples,
            args.batch_size,
            llm_name=name,
            descriptions=args.descriptions,
            select=args.select,
        )
        result.update({"data": source, "llm": name, "compressor": f"{_compressor_backbone(name)} (frozen)"})
        path = write_row("sft_history_step", result)
        print(
            f"{source}, {name}: median step compressed {result['median_step_s']['compressor'] * 1e3:.0f} ms "
            f"vs text {result['median_step_s']['text'] * 1e3:.0f} ms "
            f"(ratio {result['ratio_compressed_over_text']:.2f}); LLM input "
            f"{result['mean_llm_input_tokens']['compressor']:.0f} vs "
            f"{result['mean_llm_input_tokens']['text']:.0f} tokens (history as text: "
            f"{result['mean_history_text_tokens']:.0f}) -> {path}"
        )


if __name__ == "__main__":
    main()
