"""Stage D: GRPO on the fused model (paper section 3.4, eqs. 5-12), with the trust and similarity rewards.

Per training batch of prompts (each with its video, audio and compressed history):

1. the media and history are encoded once (:func:`multimood.rl.rollout.encode_prompts`; frozen as
   after stage C) and shared by the G completions of each prompt;
2. G completions per prompt are sampled in one batched ``generate`` (paper: G = 4) through the
   rollout seam (``rollout``, :class:`~multimood.rl.rollout.TransformersRollout` by default);
3. the reward (``reward``, :class:`~multimood.rewards.combine.CombinedReward`; paper eq. 7:
   ``(r_trust + r_sim) / 2``) scores all completions of the step in one call;
4. group-relative advantages (eq. 11) — a completion whose reward is missing (a judge that failed
   after its retries) gets no advantage and is left out of its group's statistics and of the loss;
5. reference log-probs from the same LM with the LoRA adapter disabled (no second model copy),
   old log-probs when a generation batch is used for more than one update;
6. ``updates_per_generation`` optimizer steps on the GRPO loss (eqs. 8-10, 12).

The policy is the stage-C model with a new LoRA adapter: the LLM loads the merged SFT weights
(``python fit.py --run export --export_merged`` on the stage-C run) and ``trainable: lora`` adds
the adapter GRPO trains, so "adapter disabled" is exactly the SFT model, the paper's reference.
Training reads the train split; validation generates greedily and scores the four tasks (model
selection); test is for reporting only.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

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
from lit_modules.evaluation import AnswerEvaluation
from multimood.data.answer import parse_answer
from multimood.models import MultiMoodModel
from multimood.rewards.combine import CombinedReward
from multimood.rl import group_advantages, grpo_loss
from multimood.rl.rollout import (
    Rollout,
    TransformersRollout,
    completion_logprobs,
    encode_prompts,
    repeat_blocks,
)

log = logging.getLogger(__name__)

# What GRPO trains: the LLM's adapter. The towers, projectors and compressor stay as stage C left them.
GRPO_TRAINABLE = ("llm",)


class GRPOModule(L.LightningModule):
    """Stage D: GRPO with group-relative advantages, a k3 KL to the SFT model and the paper's rewards.

    Args:
        model: The fused model; the LLM must carry a LoRA adapter (``trainable: lora``) when
            ``beta > 0`` (the reference is the LM with the adapter disabled); every other part frozen.
        reward: The reward: components, their weights and what a missing component does
            (:class:`~multimood.rewards.combine.CombinedReward`; paper: trust and similarity, equal
            weights). Each component is replaceable by ``class_path``.
        optimizer: Optimizer factory over the adapter (paper: lr 1e-5).
        rollout: The generation seam (default: transformers ``generate``, sampling,
            ``max_new_tokens`` 128 as the paper's max completion length).
        num_generations: G, completions per prompt (paper: 4).
        beta: KL coefficient (paper: 1.12, "as written in the paper").
        epsilon: Clip range of the probability ratio (only acts with ``updates_per_generation > 1``).
        epsilon_high: Upper clip bound (default: ``epsilon``).
        loss_type: ``grpo`` (paper eq. 9: mean over each completion's tokens, then over
            completions), ``bnpo`` or ``dr_grpo`` (:func:`multimood.rl.grpo_loss`).
        scale_rewards: Advantage scaling: ``group`` (paper eq. 11), ``batch`` or ``none``.
        updates_per_generation: Optimizer steps per generation batch (1: on-policy, eq. 10).
        max_grad_norm: Gradient-norm clip per optimizer step (manual optimisation: the trainer's
            ``gradient_clip_val`` does not apply); None for none.
        lr_schedule: Decay after warmup: ``cosine``, ``linear`` or ``constant``.
        warmup_ratio: Fraction of the optimizer steps spent warming up.
        init_from: Earlier stages' weights (stage A's compressor, stage B/C's projectors).
        generate_on_validation / max_new_tokens / num_beams / bertscore_model / log_generations:
            Evaluation by greedy generation, as in stage C (:class:`lit_modules.evaluation.AnswerEvaluation`).
    """

    def __init__(
        self,
        model: MultiMoodModel,
        reward: CombinedReward,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        rollout: Rollout | None = None,
        num_generations: int = 4,
        beta: float = 1.12,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo",
        scale_rewards: Literal["group", "batch", "none"] = "group",
        updates_per_generation: int = 1,
        max_grad_norm: float | None = 1.0,
        lr_schedule: LRSchedule = "constant",
        warmup_ratio: float = 0.0,
        init_from: list[InitFrom] | None = None,
        generate_on_validation: bool = True,
        max_new_tokens: int = 400,
        num_beams: int = 1,
        bertscore_model: str | None = None,
        log_generations: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "reward", "optimizer", "rollout", "init_from"])
        if num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (advantages are relative to the group), got {num_generations}"
            )
        if updates_per_generation < 1:
            raise ValueError(f"updates_per_generation must be >= 1, got {updates_per_generation}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        check_stage_trains("GRPOModule", model, allowed=GRPO_TRAINABLE)
        if beta > 0 and not model.llm.has_adapter:
            raise ValueError(
                "GRPOModule with beta > 0 needs a LoRA adapter on the LLM (llm trainable: lora): the "
                "reference model is the LLM with its adapter disabled"
            )
        self.model = model
        self.reward = reward
        self.rollout: Rollout = rollout if rollout is not None else TransformersRollout()
        self.optimizer_factory = optimizer
        store_init_from(self, init_from)
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only what trains
        self.evaluation = AnswerEvaluation(max_new_tokens, num_beams, bertscore_model, log_generations)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        setup_stage(self)

    def configure_optimizers(self) -> dict[str, Any]:
        return warmup_optimizers(self, updates_per_batch=self.hparams.updates_per_generation)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        group = hp.num_generations
        prompts = len(batch["sample_ids"])
        model = self.model

        started = time.perf_counter()
        blocks = repeat_blocks(encode_prompts(model, batch), group)
        prompt_ids = batch["prompt_ids"].repeat_interleave(group, dim=0)
        prompt_mask = batch["prompt_attention_mask"].repeat_interleave(group, dim=0)
        rollout = self.rollout(model, prompt_ids, prompt_mask, blocks)
        ids, mask = rollout.completion_ids, rollout.completion_mask
        texts = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        generated = time.perf_counter()

        references = [answer for answer in batch["answers"] for _ in range(group)]
        reward = self.reward(texts, references)
        rewarded = time.perf_counter()
        present = reward.present.to(self.device)
        values = reward.values.to(self.device)
        advantages = group_advantages(values, group, scale=hp.scale_rewards, valid=present)
        # A completion without a reward moves nothing: out of the loss, not scored 0.
        loss_mask = mask * present[:, None].to(mask.dtype)

        with torch.no_grad():
            ref_logps = None
            if hp.beta > 0:
                with model.llm.adapter_disabled():
                    ref_logps = completion_logprobs(model, prompt_ids, prompt_mask, blocks, ids)
            old_logps = None
            if hp.updates_per_generation > 1:
                old_logps = completion_logprobs(model, prompt_ids, prompt_mask, blocks, ids)

        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        for _ in range(hp.updates_per_generation):
            logps = completion_logprobs(model, prompt_ids, prompt_mask, blocks, ids)
            loss, stats = grpo_loss(
                logps,
                old_logps,
                ref_logps,
                advantages,
                loss_mask,
                beta=hp.beta,
                epsilon=hp.epsilon,
                epsilon_high=hp.epsilon_high,
                loss_type=hp.loss_type,
                max_completion_length=getattr(self.rollout, "max_new_tokens", None),
            )
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if hp.max_grad_norm is not None:
                self.clip_gradients(
                    optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm"
                )
            optimizer.step()
            scheduler.step()

        self._log_step(
            loss,
            stats,
            reward,
            values,
            present,
            mask,
            texts,
            prompts,
            generated - started,
            rewarded - generated,
        )

    def _log_step(
        self,
        loss: torch.Tensor,
        stats: dict[str, torch.Tensor],
        reward: Any,
        values: torch.Tensor,
        present: torch.Tensor,
        mask: torch.Tensor,
        texts: list[str],
        prompts: int,
        generate_seconds: float,
        reward_seconds: float,
    ) -> None:
        group = self.hparams.num_generations
        kept = values[present]
        grouped = values.view(prompts, group)
        valid = present.view(prompts, group)
        # A group gives no signal when fewer than two rewards are present or they are all equal.
        spread = torch.stack(
            [
                (g[v].max() - g[v].min()) if int(v.sum()) >= 2 else g.new_zeros(())
                for g, v in zip(grouped, valid, strict=True)
            ]
        )
        logged: dict[str, Any] = {
            "train/loss": loss.detach(),
            "train/reward": kept.mean() if len(kept) else values.new_tensor(math.nan),
            "train/reward_std": kept.std() if len(kept) > 1 else values.new_zeros(()),
            "train/reward_missing_fraction": 1.0 - present.float().mean(),
            "train/zero_std_group_fraction": (spread <= 1e-8).float().mean(),
            "train/completion_length": mask.sum(dim=1).float().mean(),
            "train/parse_failure_rate": sum(not parse_answer(t).ok for t in texts) / len(texts),
            "time/generate_seconds": generate_seconds,
            "time/reward_seconds": reward_seconds,
        }
        logged.update({f"train/{k}": v for k, v in stats.items()})
        logged.update({f"reward/{k}": v for k, v in reward.stats.items()})
        size = len(texts)
        finite = {k: v for k, v in logged.items() if not (torch.is_tensor(v) and not torch.isfinite(v).all())}
        self.log_dict(finite, batch_size=size, prog_bar=False)
        if "train/reward" in finite:
            self.log("reward", finite["train/reward"], batch_size=size, prog_bar=True, logger=False)

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self._generates_in_validation() and not self.trainer.sanity_checking:
            self.evaluation.update(self, batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation.update(self, batch)

    def on_validation_epoch_start(self) -> None:
        self.evaluation.start()

    def on_test_epoch_start(self) -> None:
        self.evaluation.start()

    def on_validation_epoch_end(self) -> None:
        if self._generates_in_validation() and not self.trainer.sanity_checking:
            self.evaluation.finish(self, "val")

    def on_test_epoch_end(self) -> None:
        self.evaluation.finish(self, "test")

    def _generates_in_validation(self) -> bool:
        return self.hparams.generate_on_validation or self.trainer.state.fn == "validate"

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)
