"""The main job on built-in synthetic data, on CPU, without network: ``make demo`` (or ``python demo.py``).

1. builds the tiny models of ``configs/model/tiny.yaml`` (cached under ``$MULTIMOOD_CACHE``);
2. writes synthetic MESC and DFEW datasets in the real file formats under ``--out``;
3. assembles the fused model and the MESC data module from ``configs/``;
4. runs the whole pipeline end to end: decoding, splicing, a few optimisation steps of the
   trainable parts (the training stages themselves arrive with ``fit.py`` configs), generation
   and answer parsing; and one DFEW batch.

Everything it makes is printed: folders, counts, shapes, losses, a generated answer.
"""

from __future__ import annotations

import os

# Tiny models are built locally; nothing may come from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _parse_component(base: type, path: Path, overrides: dict | None = None):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(base, "component")
    args = ["--component", str(path)]
    for key, value in (overrides or {}).items():
        args += [f"--component.init_args.{key}", json.dumps(value) if not isinstance(value, str) else value]
    return parser.instantiate(parser.parse_args(args)).component


def _ensure_dataset(kind: str, folder: Path, force: bool) -> None:
    from multimood.data.synthetic import make_dfew, make_mesc

    marker = folder / "synthetic_meta.json"
    if marker.is_file() and not force:
        print(f"reusing {folder} (pass --force to rewrite)")
        return
    start = time.perf_counter()
    if kind == "mesc":
        summary = make_mesc(
            folder,
            num_dialogues=24,
            seed=0,
            width=96,
            height=72,
            sample_rate=16_000,
            channels=1,
            overwrite=True,
        )
    else:
        summary = make_dfew(
            folder, num_clips=35, seed=0, width=96, height=72, sample_rate=16_000, channels=1, overwrite=True
        )
    print(f"{summary}  [{time.perf_counter() - start:.1f} s]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="runs/demo", help="where the synthetic data goes (default runs/demo)"
    )
    parser.add_argument("--steps", type=int, default=20, help="optimisation steps of the smoke run")
    parser.add_argument("--force", action="store_true", help="rewrite the synthetic datasets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()

    import warnings

    import lightning as L
    import torch
    import transformers

    # The CPU fallbacks for Mamba's CUDA kernels announce themselves on every call; that is expected here.
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )

    from multimood.count_params import count_parameters, format_table
    from multimood.data.answer import parse_answer, parse_failure_rate
    from multimood.hub import cache_root, resolve
    from multimood.models.multimood import MultiMoodModel
    from multimood.models.trainable import format_trainable_table

    L.seed_everything(args.seed, verbose=False)
    out = Path(args.out)

    _section("1. tiny models (built locally, cached)")
    for name in ("tiny:tokenizer", "tiny:qwen2", "tiny:mamba", "tiny:siglip", "tiny:beats", "tiny:bge-m3"):
        t = time.perf_counter()
        print(f"{name:<16} {resolve(name)}  [{time.perf_counter() - t:.1f} s]")
    print(f"cache: {cache_root()}")

    _section("2. synthetic data in the real formats")
    _ensure_dataset("mesc", out / "mesc", args.force)
    _ensure_dataset("dfew", out / "dfew", args.force)

    _section(
        "3. the fused model (configs/model/tiny.yaml) and the MESC data module (configs/data/mesc_synthetic.yaml)"
    )
    import yaml

    model_config = yaml.safe_load((REPO / "configs/model/tiny.yaml").read_text())
    print(format_table(count_parameters(model_config)))
    model: MultiMoodModel = _parse_component(MultiMoodModel, REPO / "configs/model/tiny.yaml")
    dm = _parse_component(
        L.LightningDataModule, REPO / "configs/data/mesc_synthetic.yaml", {"data_dir": str(out / "mesc")}
    )
    dm.setup("fit")
    print(dm.data.report.summary())
    batch = next(iter(dm.train_dataloader()))
    for key in ("input_ids", "video", "audio", "history_ids"):
        if key in batch:
            print(f"batch[{key!r}]: {tuple(batch[key].shape)}")
    print(f"modalities drawn (p = [p_a, p_v, p_av]): {batch['modalities']}")

    _section(f"4. {args.steps} optimisation steps of the trainable parts (LoRA, projectors, connector)")
    print(format_trainable_table(model.trainable_table()))  # what each part's `trainable` option made of it
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(
        f"trainable parameters: {sum(p.numel() for p in trainable):,} of {sum(p.numel() for p in model.parameters()):,}"
    )
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)
    model.train()
    losses = []
    loader = dm.train_dataloader()
    step = 0
    while step < args.steps:
        for batch in loader:
            loss = model(batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step == 1 or step % 5 == 0:
                print(f"step {step:3d}  loss {loss.item():.3f}", flush=True)
            if step >= args.steps:
                break
    model.eval()
    print(f"loss: first {losses[0]:.3f}, last {losses[-1]:.3f}")

    _section("5. generation on the validation split, parsed back into the four tasks")
    texts = model.generate(next(iter(dm.val_dataloader())), max_new_tokens=48, do_sample=False)
    parsed = [parse_answer(t) for t in texts]
    print(f"first answer (synthetic data): {texts[0]!r}")
    print(
        f"parse failures: {parse_failure_rate(parsed):.0%} of {len(parsed)} (a few steps from random weights)"
    )

    _section("6. one DFEW batch (fold 1, official 1-indexed split files)")
    dfew = _parse_component(
        L.LightningDataModule,
        REPO / "configs/data/dfew.yaml",
        {
            "data_dir": str(out / "dfew"),
            "tokenizer": "tiny:qwen2",
            "num_frames": 4,
            "image_size": 56,
            "num_workers": 0,
        },
    )
    dfew.setup("fit")
    dfew_batch = next(iter(dfew.train_dataloader()))
    print(f"label convention detected: {dfew.label_base}-indexed; video {tuple(dfew_batch['video'].shape)}")
    with torch.no_grad():
        print(f"DFEW loss (untrained): {model(dfew_batch).loss.item():.3f}")

    _section(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
