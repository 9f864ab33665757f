"""Train or evaluate any MultiMood stage with LightningCLI.

    python fit.py --config configs/<stage>/<name>.yaml [--config more.yaml] [--trainer.max_epochs 3 ...]
    python fit.py --config configs/<stage>/<name>.yaml --print_config   # the resolved configuration
    python fit.py --help                                                # every option, from docstrings
    python fit.py --config configs/sft/tiny.yaml --run test --ckpt_path runs/.../last.ckpt
    python fit.py --config configs/sft/tiny.yaml --run export --ckpt_path runs/.../last.ckpt --export_dir out

The LightningModule (one per stage, in ``lit_modules``) and the LightningDataModule (in
``datamodules``) are chosen by ``class_path`` in the YAML; every constructor argument is an option.

- ``--run fit`` (default) trains; with ``--test_after_fit true`` the test split is scored at the end
  with the weights the fit ended with. ``--run validate`` / ``--run test`` only evaluate.
- ``--ckpt_path`` resumes an interrupted fit (weights that train, optimizer, schedulers, loop
  state), or gives the weights to evaluate or export. Loading an earlier stage's weights into a new stage is
  the module option ``init_from``, not a resume.
- ``--run export`` writes the checkpoint's model for use without this repo: ``<export_dir>/adapter``
  (PEFT LoRA adapters + tokenizer), ``merged`` (with ``--export_merged true``: a plain transformers
  folder) and ``parts`` (connector, projectors, compressor); see ``lit_modules/export.py``.
- Values the data and the model must agree on (LLM tokenizer, history tokenizer and its budget,
  frame size and normalisation) are set on the model side only. A data config that sets one of
  them differently is refused before any model is built (names both keys); values known only once
  the towers have loaded are taken (or checked) when the trainer sets the data module up.
"""

from __future__ import annotations

import os
from typing import Any, Literal

# Tokenizers run in DataLoader worker processes: Hugging Face tokenizers' own thread pool does not
# survive the fork (it warns and disables itself), so turn it off before anything tokenises.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

Run = Literal["fit", "validate", "test", "export"]

# (data option, where the model config says it; the first one set wins). Paths are under the fused
# model's init_args; the module's `model` argument holds the fused model.
CONFIG_LINKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tokenizer", ("llm.init_args.tokenizer", "llm.init_args.name_or_path")),
    (
        "history_tokenizer",
        ("history_compressor.init_args.tokenizer", "history_compressor.init_args.backbone"),
    ),
    ("history_max_tokens", ("history_compressor.init_args.max_tokens",)),
)


def _get(namespace: Any, dotted: str) -> Any:
    node = namespace
    for part in dotted.split("."):
        if node is None:
            return None
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
    return node


def check_config_links(config: Any) -> None:
    """Refuse a data config that contradicts the model config, before anything is built.

    Only values written in the config are compared here (names, budgets); values known once a
    tower has loaded are checked by the data module's ``connect``.
    """
    model = _get(config, "model.init_args.model.init_args")
    data = _get(config, "data.init_args")
    if model is None or data is None:
        return
    for data_key, model_keys in CONFIG_LINKS:
        theirs = _get(data, data_key)
        if theirs is None:
            continue
        for model_key in model_keys:
            ours = _get(model, model_key)
            if ours is not None:
                if ours != theirs:
                    raise ValueError(
                        f"data.init_args.{data_key} = {theirs!r} contradicts "
                        f"model.init_args.model.init_args.{model_key} = {ours!r}: remove "
                        f"data.init_args.{data_key} (the data takes it from the model)"
                    )
                break


def check_config_paths(config: Any) -> None:
    """Files a run needs that the config names: the data folder and every ``init_from`` source.
    Checked before anything is built, so a typo costs no model load."""
    from pathlib import Path

    data_dir = _get(config, "data.init_args.data_dir")
    needs_data = _get(config, "run") != "export"  # an export reads only weights
    if needs_data and data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"data.init_args.data_dir: {data_dir} is not a folder")
    for i, source in enumerate(_get(config, "model.init_args.init_from") or []):
        path = _get(source, "path")
        if path is None:
            continue
        local = Path(str(path)).expanduser()
        is_hub_id = (
            _get(source, "format") == "videollama2_av" and not local.exists() and str(path).count("/") == 1
        )
        if not local.exists() and not is_hub_id:
            raise FileNotFoundError(f"model.init_args.init_from[{i}].path: {path} not found")


class MultiMoodCLI(LightningCLI):
    """LightningCLI with the run options above; importable (tests parse every shipped YAML with it)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run",
            type=Run,
            default="fit",
            help="fit (train), validate or test (evaluate the weights of --ckpt_path), or export them.",
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="fit: resume this run (weights, optimizer, schedulers, loop state); "
            "validate/test/export: the weights to evaluate or export.",
        )
        parser.add_argument("--export_dir", type=str | None, default=None, help="export: folder to write.")
        parser.add_argument(
            "--export_merged",
            type=bool,
            default=False,
            help="export: also write merged/, the LLM with its adapters merged (a plain transformers folder).",
        )
        parser.add_argument(
            "--export_dequantize_4bit",
            type=bool,
            default=False,
            help="export: allow merged/ from a 4-bit base (dequantised NF4 + adapters; see docs/design/export.md).",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, score the test split with the weights the fit ended with.",
        )

    def before_instantiate_classes(self) -> None:
        run = self.config.get("run")
        if run == "export" and not (self.config.get("ckpt_path") and self.config.get("export_dir")):
            raise SystemExit("--run export needs --ckpt_path (the weights) and --export_dir (where to write)")
        if run in ("validate", "test") and not self.config.get("ckpt_path"):
            raise SystemExit(f"--run {run} needs --ckpt_path (the weights to evaluate)")
        check_config_links(self.config)
        check_config_paths(self.config)


def main(args: list[str] | None = None) -> MultiMoodCLI:
    cli = MultiMoodCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        run=False,
        args=args,
    )
    config = cli.config
    run, ckpt_path = config.get("run", "fit"), config.get("ckpt_path")
    if run == "fit":
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
        if config.get("test_after_fit"):
            cli.trainer.test(cli.model, datamodule=cli.datamodule)
    elif run == "export":
        from lit_modules.export import export_stage

        export_stage(
            cli.model,
            ckpt_path,
            config["export_dir"],
            merged=config.get("export_merged", False),
            dequantize_4bit=config.get("export_dequantize_4bit", False),
            model_config=config.as_dict()["model"]["init_args"].get("model"),
        )
    else:  # validate or test (a checkpoint is required, checked before anything was built)
        getattr(cli.trainer, run)(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


if __name__ == "__main__":
    main()
