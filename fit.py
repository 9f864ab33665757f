"""Train any MultiMood stage with LightningCLI.

    python fit.py --config configs/<stage>.yaml [--config more.yaml] [--trainer.max_epochs 3 ...]
    python fit.py --config configs/<stage>.yaml --print_config   # the full, resolved configuration
    python fit.py --help                                          # every option, from the docstrings

The LightningModule (one per training stage, in ``lit_modules``) and the LightningDataModule (in
``datamodules``) are chosen by ``class_path`` in the YAML; every constructor argument is an option.
``--ckpt_path`` resumes an interrupted run (optimizer, scheduler and loop state); loading the
weights of an earlier stage into a new one is a module option (``init_from``), not a resume.
"""

from __future__ import annotations

import os

# Tokenizers run in DataLoader worker processes: Hugging Face tokenizers' own thread pool does not
# survive the fork (it warns and disables itself), so turn it off before anything tokenises.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(args: list[str] | None = None) -> None:
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class MultiMoodCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(
                "--ckpt_path",
                type=str | None,
                default=None,
                help="Resume this run from a Lightning checkpoint (weights, optimizer, schedulers, loop state).",
            )

    cli = MultiMoodCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        run=False,
        args=args,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))


if __name__ == "__main__":
    main()
