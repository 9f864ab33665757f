"""Stage D' (second half): the PPO baseline (paper appendix; SPEC section 6 row D').

"PPO begins with a rollout phase where the model generates responses to input prompts, followed by
evaluation using a reward model. It incorporates a KL-divergence penalty to constrain policy shifts
and employs Generalized Advantage Estimation (GAE) [...] A key feature of PPO is its clipping
mechanism" (paper appendix). On the full multimodal model: the prompts carry their media and
history, encoded once per step (:func:`multimood.rl.rollout.encode_prompts`).

One training step (manual optimisation):

1. encode the prompts' feature blocks; sample one completion per prompt (eval mode, KV cache);
2. score each completion: a trained reward model (``reward_model`` + ``reward_model_ckpt``, from
   ``RewardModelModule``) or any reward component with the :class:`multimood.rewards.base.RewardOutput`
   contract (``reward``, e.g. the BGE-M3 similarity). A completion whose reward is missing
   (``present`` False) leaves the step (``train/missing_rewards`` counts them);
3. old log-probs and values (policy, no gradient) and reference log-probs (the same LLM with its
   LoRA adapter disabled, see below);
4. per-token rewards ``-kl_coef (log π_old - log π_ref)`` plus the score on the last token, GAE,
   whitened advantages (:mod:`multimood.rl.ppo`);
5. ``ppo_epochs`` updates of ``ppo_policy_loss + vf_coef * value_loss`` (clip 0.2 both).

The value head is ``nn.Linear(hidden, 1)`` on the policy's final hidden states, one value per
completion token (shared trunk: the value loss also reaches the LoRA adapters). Old log-probs and
every update run with dropout off (as TRL's PPO, ``disable_dropout``), so that the first epoch's
ratio is exactly 1; the model stays in train mode otherwise (gradient checkpointing works only in
train mode).

The reference: the base with the adapter disabled. Starting PPO from the SFT adapters makes the
reference the pre-SFT base, not the SFT model; merge the SFT adapters into the base first
(``fit.py --run export --export_merged``) and start a new adapter on the merged model for a
reference equal to the SFT model (docs/design/ppo.md).

Memory: the reward model is a second fused model (its own LLM, towers and compressor). At 7B with
NF4 that is about 5 GB of base weights plus the towers; sharing one base between the policy and
the reward model's adapter (peft adapter switching) is future work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lit_modules.common import (
    InitFrom,
    LRSchedule,
    check_stage_trains,
    init_from_list,
    load_init_from,
    load_stage_checkpoint,
    save_stage_checkpoint,
    setup_stage,
    store_init_from,
    warmup_optimizers,
)
from lit_modules.evaluation import AnswerEvaluation
from multimood.models import MultiMoodModel
from multimood.rewards.base import RewardComponent, RewardOutput
from multimood.rl import gae, kl_penalty_rewards, ppo_policy_loss, value_loss, whiten
from multimood.rl.reward_model import RewardModel, load_reward_model
from multimood.rl.rollout import (
    TransformersRollout,
    completion_logprobs,
    completion_logprobs_and_hidden,
    encode_prompts,
)

log = logging.getLogger(__name__)

# PPO trains the LLM's adapters (and the value head, which is not part of the fused model).
PPO_TRAINABLE = ("llm",)


@contextmanager
def dropout_off(module: nn.Module) -> Iterator[None]:
    """Every ``nn.Dropout`` below ``module`` in eval mode for the block (LoRA dropout included),
    the rest left as it is; each one's mode is restored after."""
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in dropouts]
    for m in dropouts:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(dropouts, modes, strict=True):
            m.training = mode


class PPOModule(L.LightningModule):
    """PPO with a value head and a KL penalty on the fused multimodal model.

    Args:
        model: The policy: the fused model with LoRA on its LLM (start it from SFT with
            ``init_from``); towers, projectors and compressor frozen (paper: "as C").
        reward_model: The reward model's fused model, built as the reward-model run built it;
            with ``reward_model_ckpt``. Exactly one of ``reward_model`` and ``reward``.
        reward_model_ckpt: The reward-model run's checkpoint (its LoRA and head).
        reward_model_init_from: The frozen parts of the reward model (projectors, compressor):
            the ``init_from`` of the reward-model run.
        reward: A reward component instead (``completions, references -> RewardOutput``), e.g.
            ``multimood.rewards.similarity``; references are the prompts' reference answers.
        optimizer: Optimizer factory over the LoRA adapters and the value head (paper-style lr 1e-5).
        lr_schedule: Decay after warmup, stepped once per training step.
        warmup_ratio: Fraction of the training steps spent warming up.
        init_from: Earlier stages' weights for the policy (SFT adapters, stage A/B parts).
        max_new_tokens: Longest sampled completion (paper: 128).
        temperature: Sampling temperature (the log-probs use the same one).
        top_p: Nucleus sampling mass (1.0: off).
        ppo_epochs: Updates per batch of rollouts (TRL: 4).
        clip: PPO ratio clip ε (paper: 0.2); also the value clip.
        vf_coef: Weight of the value loss (TRL: 0.1).
        kl_coef: Weight of the per-token KL penalty in the rewards (TRL: 0.05).
        gamma: GAE discount (TRL: 1.0).
        lam: GAE λ (TRL: 0.95).
        whiten_advantages: Normalise the advantages over the step's valid tokens (TRL does).
        max_grad_norm: Gradient clipping per update (manual optimisation clips here, not in the
            Trainer); None: off.
        max_new_tokens_eval / num_beams / bertscore_model / log_generations: validation and test by
            generation (:class:`lit_modules.evaluation.AnswerEvaluation`).
    """

    def __init__(
        self,
        model: MultiMoodModel,
        reward_model: MultiMoodModel | None = None,
        reward_model_ckpt: str | None = None,
        reward_model_init_from: list[InitFrom] | None = None,
        reward: RewardComponent | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = "constant",
        warmup_ratio: float = 0.0,
        init_from: list[InitFrom] | None = None,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        ppo_epochs: int = 4,
        clip: float = 0.2,
        vf_coef: float = 0.1,
        kl_coef: float = 0.05,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        max_grad_norm: float | None = 1.0,
        max_new_tokens_eval: int = 400,
        num_beams: int = 1,
        bertscore_model: str | None = None,
        log_generations: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["model", "reward_model", "reward", "optimizer", "init_from", "reward_model_init_from"]
        )
        self.automatic_optimization = False
        check_stage_trains("PPOModule", model, allowed=PPO_TRAINABLE, required=("llm",))
        if not model.llm.has_adapter:
            raise ValueError(
                "PPOModule: the policy's LLM needs LoRA (trainable: lora): the reference model is the "
                "base with the adapter disabled"
            )
        if (reward_model is None) == (reward is None):
            raise ValueError(
                "PPOModule: give exactly one of reward_model (with reward_model_ckpt) and reward"
            )
        if reward_model is not None and reward_model_ckpt is None:
            raise ValueError(
                "PPOModule: reward_model needs reward_model_ckpt (the reward-model run's checkpoint)"
            )
        if ppo_epochs < 1:
            raise ValueError(f"PPOModule: ppo_epochs must be >= 1, got {ppo_epochs}")
        if not 0 < clip < 1:
            raise ValueError(f"PPOModule: clip must be in (0, 1), got {clip}")
        self.model = model
        self.value_head = nn.Linear(model.llm.hidden_size, 1)
        self.reward_model = RewardModel(reward_model) if reward_model is not None else None
        self.reward_model_init_from = init_from_list(reward_model_init_from)
        self._reward_model_loaded = False
        self.reward = reward
        self.optimizer_factory = optimizer
        store_init_from(self, init_from)
        self.strict_loading = False  # checkpoints hold only what trains (LoRA, value head)
        self.rollout = TransformersRollout(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        self.evaluation = AnswerEvaluation(max_new_tokens_eval, num_beams, bertscore_model, log_generations)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        setup_stage(self)
        if self.reward_model is not None and not self._reward_model_loaded:
            if self.reward_model_init_from:
                load_init_from(self.reward_model.model, self.reward_model_init_from)
            load_reward_model(self.reward_model, self.hparams.reward_model_ckpt)
            self.reward_model.requires_grad_(False)
            self._reward_model_loaded = True

    def configure_optimizers(self) -> dict[str, Any]:
        return warmup_optimizers(self, extra_parameters=self.value_head.parameters())

    # ------------------------------------------------------------------ rewards
    def score(
        self, batch: dict[str, Any], completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> RewardOutput:
        """One reward per completion (one completion per prompt)."""
        if self.reward_model is not None:
            values = self.reward_model.score(batch, completion_ids, completion_mask)
            return RewardOutput(values.cpu(), torch.ones(len(values), dtype=torch.bool))
        texts = self.model.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        out = self.reward(texts, list(batch["answers"]))
        if out.values.shape != (len(texts),):
            raise ValueError(
                f"reward {getattr(self.reward, 'name', self.reward)!r} returned {tuple(out.values.shape)} "
                f"values for {len(texts)} completions"
            )
        return out

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, T, H) final hidden states -> (N, T) float32 values."""
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        policy = self.model
        size = len(batch["sample_ids"])
        blocks = encode_prompts(policy, batch)
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
        rollout = self.rollout(policy, prompt_ids, prompt_mask, blocks)
        ids, mask = rollout.completion_ids, rollout.completion_mask
        rewards_out = self.score(batch, ids, mask)
        present = rewards_out.present.to(self.device)
        missing = int((~present).sum())
        # Counts are summed over the epoch (train/missing_rewards: completions that left the loss).
        self.log("train/missing_rewards", float(missing), on_step=False, on_epoch=True, reduce_fx="sum")
        self.log("train/completion_length", mask.sum(dim=1).float().mean(), batch_size=size)
        # Under DDP every rank takes the same backward passes and optimizer steps (gradients are
        # averaged across ranks inside backward): a rank without a single reward joins them with
        # every completion masked out of the loss, contributing zero gradients, instead of skipping.
        join_only = not present.any()
        if join_only and self.trainer.world_size == 1:
            log.warning(
                "PPO batch %d (optimizer step %d): every reward is missing; no update",
                batch_idx,
                self.global_step,
            )
            self._step_scheduler()
            return
        if join_only:
            log.warning(
                "PPO batch %d, rank %d: every reward is missing; this rank adds zero gradients to the update",
                batch_idx,
                self.global_rank,
            )
            present = torch.ones_like(present)
        # Completions without a reward leave the step (their rows are dropped, not scored 0).
        keep = present.nonzero().flatten()
        ids, mask = ids[keep], mask[keep]
        prompt_ids, prompt_mask = prompt_ids[keep], prompt_mask[keep]
        blocks = {token: [per_sample[i] for i in keep.tolist()] for token, per_sample in blocks.items()}
        scores = rewards_out.values.to(self.device)[keep]

        with torch.no_grad(), dropout_off(policy):
            old_logps, hidden = completion_logprobs_and_hidden(
                policy, prompt_ids, prompt_mask, blocks, ids, hp.temperature
            )
            old_values = self._values(hidden)
            with policy.llm.adapter_disabled():
                ref_logps = completion_logprobs(policy, prompt_ids, prompt_mask, blocks, ids, hp.temperature)
            rewards = kl_penalty_rewards(scores, old_logps, ref_logps, mask, hp.kl_coef)
            advantages, returns = gae(rewards, old_values, mask, hp.gamma, hp.lam)
            if hp.whiten_advantages and int(mask.sum()) >= 2:
                advantages = whiten(advantages, mask)

        loss_mask = torch.zeros_like(mask) if join_only else mask
        optimizer = self.optimizers()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        totals: dict[str, float] = {}
        first_ratio = float("nan")
        for epoch in range(hp.ppo_epochs):
            with dropout_off(policy):  # as for the old log-probs: the first epoch's ratio is exactly 1
                logps, hidden = completion_logprobs_and_hidden(
                    policy, prompt_ids, prompt_mask, blocks, ids, hp.temperature
                )
                values = self._values(hidden)
            pg_loss, pg_stats = ppo_policy_loss(logps, old_logps, advantages, loss_mask, hp.clip)
            vf_loss, vf_stats = value_loss(values, old_values, returns, loss_mask, hp.clip)
            loss = pg_loss + hp.vf_coef * vf_loss
            optimizer.zero_grad()
            self.manual_backward(loss)
            if hp.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            optimizer.step()
            if epoch == 0:  # 1 up to rounding: the update pass equals the rollout's scoring pass
                first_ratio = float(pg_stats["ratio_mean"])
            for key, value in {
                "loss": loss,
                "policy_loss": pg_loss,
                "value_loss": vf_loss,
                "clip_fraction": pg_stats["clip_fraction"],
                "approx_kl": pg_stats["approx_kl"],
                "value_clip_fraction": vf_stats["clip_fraction"],
            }.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / hp.ppo_epochs
        self._step_scheduler()
        if join_only:  # nothing of this batch to report but the missing count logged above
            return

        kept = len(keep)
        maskf = mask.float()
        kl = ((old_logps - ref_logps) * maskf).sum(dim=1).mean()  # per completion, summed over tokens
        self.log("train/reward", scores.mean(), batch_size=kept, prog_bar=True)
        self.log("train/kl", kl, batch_size=kept)
        self.log("train/returns", (returns * maskf).sum() / maskf.sum(), batch_size=kept)
        self.log("train/values", (old_values * maskf).sum() / maskf.sum(), batch_size=kept)
        self.log("train/ratio_first_update", first_ratio, batch_size=kept)
        for key, value in totals.items():
            self.log(f"train/{key}", value, batch_size=kept, prog_bar=key == "loss")
        for key, value in rewards_out.stats.items():
            self.log(f"train/reward_stats/{key}", float(value), batch_size=size)

    def _step_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self.evaluation.start()

    def on_test_epoch_start(self) -> None:
        self.evaluation.start()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not self.trainer.sanity_checking:
            self.evaluation.update(self, batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation.update(self, batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.evaluation.finish(self, "val")

    def on_test_epoch_end(self) -> None:
        self.evaluation.finish(self, "test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_stage_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_stage_checkpoint(self, checkpoint)
