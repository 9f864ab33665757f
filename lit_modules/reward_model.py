"""Stage D' (first half): the PPO baseline's reward model (paper appendix; SPEC section 6 row D').

"The reward model is trained on sentence pairs (<chosen>, <rejected>)": chosen is the reference
answer, rejected an answer the SFT model generated whose response has ROUGE-L < 0.3 against the
reference (built from the train split by ``reward_pairs.py``, :mod:`multimood.rl.pairs`).

The reward model is the fused model with a scalar head on the final hidden state of the last token
(:mod:`multimood.rl.reward_model`), scoring ``prompt + answer`` with the sample's media and history,
as the policy sees them. Batches come from the usual data module; each sample's pair is looked up by
``sample_id`` and samples without one are skipped and counted (``train/unpaired``). Loss: Bradley-
Terry, ``-log σ(s_chosen - s_rejected)`` (:func:`multimood.rl.pairwise_reward_loss`).

Validation: the pairwise accuracy and loss on held-out pairs (``val_pairs``, built from val with
``--for_selection``), never trained on. Without them, validation logs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lit_modules.common import (
    InitFrom,
    LRSchedule,
    check_stage_trains,
    load_stage_checkpoint,
    save_stage_checkpoint,
    setup_stage,
    store_init_from,
    warmup_optimizers,
)
from multimood.models import MultiMoodModel
from multimood.rl import pairwise_reward_loss
from multimood.rl.pairs import RewardPairs
from multimood.rl.reward_model import answer_completions, sequence_scores

log = logging.getLogger(__name__)

# The reward model trains its LLM (LoRA, or fully for a tiny model) and its head; the rest as C.
REWARD_MODEL_TRAINABLE = ("llm",)


class RewardModelModule(L.LightningModule):
    """Trains the fused model plus a scalar head to rank the reference answer above poor ones.

    Args:
        model: The fused model (start it from the SFT model with ``init_from``); its LLM trains
            (LoRA, or ``full`` for a tiny model), everything else stays frozen.
        pairs: JSON-lines pairs file of the train split (``reward_pairs.py``). Needed to fit.
        val_pairs: Held-out pairs of the val split (``reward_pairs.py --split val --for_selection``)
            for the validation accuracy; None: no validation metric.
        optimizer: Optimizer factory over the LLM's trainable parameters and the head.
        lr_schedule: Decay after warmup (``cosine``, ``linear``, ``constant``).
        warmup_ratio: Fraction of the optimizer steps spent warming up.
        init_from: Earlier stages' weights (the SFT adapters, stage A's compressor, stage B's
            projectors), as in SFT.
    """

    def __init__(
        self,
        model: MultiMoodModel,
        pairs: str | None = None,
        val_pairs: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = "linear",
        warmup_ratio: float = 0.0,
        init_from: list[InitFrom] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "init_from"])
        check_stage_trains("RewardModelModule", model, allowed=REWARD_MODEL_TRAINABLE, required=("llm",))
        self.model = model
        # No bias: the pairwise loss sees only score differences, so a bias gets no gradient at all
        # (transformers' sequence-classification heads have none either).
        self.head = nn.Linear(model.llm.hidden_size, 1, bias=False)
        self.optimizer_factory = optimizer
        store_init_from(self, init_from)
        self.strict_loading = False  # checkpoints hold only what trains
        self.pairs: RewardPairs | None = None
        self.val_pairs: RewardPairs | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        setup_stage(self)
        if stage == "fit":
            if self.hparams.pairs is None:
                raise ValueError(
                    "RewardModelModule: model.init_args.pairs (the train pairs file) is needed to fit"
                )
            self.pairs = RewardPairs(self.hparams.pairs, split="train")
            log.info("reward pairs: %d train pairs from %s", len(self.pairs), self.pairs.path)
        if self.hparams.val_pairs is not None and stage in ("fit", "validate"):
            self.val_pairs = RewardPairs(self.hparams.val_pairs, split="val")

    def configure_optimizers(self) -> dict[str, Any]:
        return warmup_optimizers(self, extra_parameters=self.head.parameters())

    # ------------------------------------------------------------------ scoring
    def pair_scores(
        self, batch: dict[str, Any], pairs: RewardPairs
    ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """Scores of each paired sample's chosen and rejected answers, (K,) each, and the number of
        samples without a pair; None when no sample of the batch has one."""
        rows = [i for i, sid in enumerate(batch["sample_ids"]) if sid in pairs]
        unpaired = len(batch["sample_ids"]) - len(rows)
        if not rows:
            return None
        # Frozen parts: encoded for the whole batch (their stand-ins and masks stay as the model
        # expects), then the paired rows are taken, twice (chosen rows, then rejected rows).
        blocks = self.model.feature_blocks(batch)
        picked = {token: [per_sample[i] for i in rows] * 2 for token, per_sample in blocks.items()}
        index = torch.tensor(rows + rows, device=batch["prompt_ids"].device)
        texts = [pairs[batch["sample_ids"][i]].chosen for i in rows]
        texts += [pairs[batch["sample_ids"][i]].rejected for i in rows]
        ids, mask = answer_completions(self.model.tokenizer, texts, device=self.device)
        scores = sequence_scores(
            self.model,
            self.head,
            batch["prompt_ids"][index],
            batch["prompt_attention_mask"][index],
            picked,
            ids,
            mask,
        )
        return scores[: len(rows)], scores[len(rows) :], unpaired

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.pairs is None:
            raise RuntimeError("RewardModelModule: pairs not loaded (setup('fit') loads them)")
        result = self.pair_scores(batch, self.pairs)
        size = len(batch["sample_ids"])
        if result is None:
            self.log("train/unpaired", float(size), on_step=False, on_epoch=True, reduce_fx="sum")
            return None  # nothing to learn from in this batch: no optimizer step
        chosen, rejected, unpaired = result
        loss, stats = pairwise_reward_loss(chosen, rejected)
        pairs = len(chosen)
        self.log("train/loss", loss, batch_size=pairs, prog_bar=True)
        self.log("train/accuracy", stats["accuracy"], batch_size=pairs, prog_bar=True)
        self.log("train/margin", stats["margin"], batch_size=pairs)
        # Samples without a pair, summed over the epoch.
        self.log("train/unpaired", float(unpaired), on_step=False, on_epoch=True, reduce_fx="sum")
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.val_pairs is None:
            return
        result = self.pair_scores(batch, self.val_pairs)
        if result is None:
            return
        chosen, rejected, _ = result
        loss, stats = pairwise_reward_loss(chosen, rejected)
        self.log("val/loss", loss, batch_size=len(chosen), sync_dist=True)
        self.log("val/accuracy", stats["accuracy"], batch_size=len(chosen), sync_dist=True)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)
