"""Build the PPO reward model's preference pairs with a trained SFT model (paper appendix, SPEC D').

    python reward_pairs.py --config runs/sft/lightning_logs/version_0/config.yaml \\
        --ckpt_path runs/sft/lightning_logs/version_0/checkpoints/last.ckpt --out runs/reward_pairs/train.jsonl

``--config`` is the SFT run's own ``config.yaml`` (LightningCLI writes it beside the checkpoints),
so the model and the data are built exactly as the SFT run built them; ``--ckpt_path`` gives the
SFT weights (with the run's ``init_from`` for the frozen parts). Each train sample gets one greedy
answer; pairs whose response has ROUGE-L F1 < ``--rouge_threshold`` (0.3) against the reference are
written as JSON lines ``{sample_id, split, chosen, rejected, rouge_l}`` (:mod:`multimood.rl.pairs`).

Only ``--split train`` makes training pairs. ``--split val --for_selection true`` makes held-out
pairs for the reward model's validation accuracy; ``test`` is refused (the authors' PPO script
trained on test.jsonl, SPEC "Data hygiene"). Only counts are printed, never dialogue text.
"""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.cli import LightningArgumentParser

from fit import MultiMoodCLI

log = logging.getLogger("reward_pairs")


class RewardPairsCLI(MultiMoodCLI):
    """The SFT run's configuration plus the pair options; builds the model and data, trains nothing."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--out", type=str | None, default=None, help="JSON-lines file to write.")
        parser.add_argument("--split", type=str, default="train", help="train (or val with --for_selection).")
        parser.add_argument(
            "--for_selection",
            type=bool,
            default=False,
            help="Allow --split val: held-out pairs for validation.",
        )
        parser.add_argument(
            "--rouge_threshold", type=float, default=0.3, help="Keep pairs below this ROUGE-L F1."
        )
        parser.add_argument(
            "--max_samples", type=int | None, default=None, help="Stop after this many samples."
        )
        parser.add_argument("--max_new_tokens", type=int, default=400, help="Longest generated answer.")

    def before_instantiate_classes(self) -> None:
        from multimood.rl.pairs import check_pair_split

        if not self.config.get("out") or not self.config.get("ckpt_path"):
            raise SystemExit("reward_pairs.py needs --ckpt_path (the SFT weights) and --out (the pairs file)")
        check_pair_split(self.config["split"], self.config["for_selection"])  # before any model loads
        self.config["run"] = "fit"  # the SFT run's config says what it ran; nothing runs here
        super().before_instantiate_classes()


def main(args: list[str] | None = None) -> dict[str, int]:
    from datamodules.common import epoch_loader
    from lit_modules.common import load_stage_weights
    from multimood.rl.pairs import build_reward_pairs, write_pairs

    cli = RewardPairsCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_callback=None,
        run=False,
        args=args,
    )
    config = cli.config
    module, data = cli.model, cli.datamodule
    load_stage_weights(module, config["ckpt_path"])
    model = module.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    data.connect(model)
    data.setup("fit")
    split = config["split"]
    hp = data.hparams
    loader = epoch_loader(
        data.datasets[split],
        batch_size=hp.eval_batch_size or hp.batch_size,
        shuffle=False,
        seed=hp.seed,
        num_workers=hp.num_workers,
        collate_fn=data.collator(),
        pad=False,
    )
    batches = (move_data_to_device(batch, device) for batch in loader)
    with cli.trainer.precision_plugin.forward_context():
        pairs, counts = build_reward_pairs(
            model,
            batches,
            split=split,
            threshold=config["rouge_threshold"],
            max_samples=config["max_samples"],
            max_new_tokens=config["max_new_tokens"],
            for_selection=config["for_selection"],
        )
    out = write_pairs(pairs, config["out"])
    print(json.dumps({"out": str(out), **counts}))
    return counts


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
