"""GRPO step time of our loop (GRPOModule in a Lightning Trainer) vs TRL's ``GRPOTrainer``, side by
side in one process, and the two losses on one fixed batch (issue #9 b).

Both sides train the same text-only model (``tiny:qwen2``; a bigger variant in a second row) with
the same LoRA adapter (r 8, alpha 16, no dropout, ``all-linear``), the reference being the model
with the adapter disabled, on the same prompts in the same order: chat-formatted prompts of exactly
``P`` tokens, ``prompts_per_step`` per optimizer step, G completions each, every completion forced
to exactly ``T`` tokens (``min_new_tokens = max_new_tokens``), so both do the same work. One update
per generation (TRL: ``steps_per_generation=1``, ``num_iterations=1``), beta 1.12 (paper), AdamW
(torch's, same lr, no weight decay), grad-norm clip 1.0, float32 on the CPU.

One optimizer step is generation + reward + reference log-probs + policy log-probs + loss +
backward + optimizer step, timed from the trainer's own hooks: Lightning's
``on_train_batch_start`` / ``on_train_batch_end`` for ours, transformers' ``on_step_begin`` /
``on_step_end`` for TRL. The two alternate in blocks (ours ``block`` steps, TRL ``block`` steps, ours
...) so machine load hits both alike; TRL's ``train()`` is re-entered per block, so the first step of
every block (and the whole first block) is dropped as warm-up on both sides. Per-phase times come
from timers wrapped around each side's generation, reward and log-prob calls.

The loss check takes one of our rollouts (prompt ids, completion ids and masks), advantages from its
rewards and reference log-probs from the adapter-disabled model, and feeds the same tensors to our
``grpo_loss`` (log-probs from :func:`multimood.rl.rollout.completion_logprobs`) and to TRL's
``_compute_loss`` (:func:`benchmarks.trl_grpo.trl_grpo_loss`) on TRL's model holding our LoRA weights.

    python -m benchmarks.grpo_step [--blocks 4] [--block 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch

from benchmarks.common import spread, write_row
from benchmarks.trl_grpo import build_trl_grpo_trainer, length_reward, trl_grpo_loss
from lit_modules import grpo as grpo_module
from lit_modules.grpo import GRPOModule
from multimood.hub import resolve
from multimood.models import LanguageModel, MultiMoodModel
from multimood.rewards.base import RewardOutput
from multimood.rewards.combine import CombinedReward
from multimood.rl import group_advantages, grpo_loss
from multimood.rl.rollout import TransformersRollout, completion_logprobs, encode_prompts, repeat_blocks

LLM = "tiny:qwen2"
# Wider and deeper, so the layers rather than per-call overheads carry the cost (still CPU-sized).
LARGER_LLM = (
    "tiny:qwen2?hidden_size=256&intermediate_size=768&num_hidden_layers=4"
    "&num_attention_heads=4&num_key_value_heads=2"
)
LORA = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_modules": "all-linear"}
BETA = 1.12
LR = 1e-5
MAX_GRAD_NORM = 1.0
PHASES = ("generate", "reward", "ref_logps", "policy_logps", "rest")
FILLER = "the client says that work has been hard this week and sleep does not come easily "


class CharLengthReward:
    """Characters / 100 per completion, always present: TRL's ``length_reward`` as our component."""

    name = "length"

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> RewardOutput:
        values = torch.tensor(length_reward(list(completions)), dtype=torch.float32)
        return RewardOutput(values, torch.ones(len(completions), dtype=torch.bool))


def make_prompts(tokenizer: Any, count: int, prompt_tokens: int) -> tuple[list[str], torch.Tensor]:
    """``count`` distinct chat-formatted prompts of exactly ``prompt_tokens`` tokens, as text (TRL's
    input) and ids (ours). The text re-tokenises to the same ids, which is checked."""
    texts, rows = [], []
    for i in range(count):
        words = f"message {i}: " + FILLER * (prompt_tokens // 4 + 4)
        content = tokenizer(words, add_special_tokens=False)["input_ids"]
        frame = tokenizer.apply_chat_template(
            [{"role": "user", "content": "X"}], tokenize=False, add_generation_prompt=True
        )
        before, after = frame.split("X")
        fixed = len(tokenizer(before + after, add_special_tokens=False)["input_ids"])
        if prompt_tokens <= fixed + 4:
            raise ValueError(f"prompt_tokens={prompt_tokens}: the chat template alone takes {fixed} tokens")
        body = content[: prompt_tokens - fixed]
        for _ in range(8):  # a cut can merge tokens across the boundary: trim until the length is exact
            text = before + tokenizer.decode(body) + after
            ids = tokenizer(text)["input_ids"]
            if len(ids) == prompt_tokens:
                break
            body = body[: len(body) - (len(ids) - prompt_tokens)] if len(ids) > prompt_tokens else body
        else:
            raise RuntimeError(f"prompt {i}: could not build a {prompt_tokens}-token prompt (got {len(ids)})")
        if tokenizer(text)["input_ids"] != ids:
            raise RuntimeError(f"prompt {i} does not re-tokenise to the same ids")
        texts.append(text)
        rows.append(ids)
    return texts, torch.tensor(rows)


class PromptBatches(torch.utils.data.IterableDataset):
    """Our training batches: the prompts in order, ``per_step`` at a time, cycling (as TRL's sampler
    does with ``shuffle_dataset=False``)."""

    def __init__(self, prompt_ids: torch.Tensor, per_step: int) -> None:
        self.prompt_ids, self.per_step = prompt_ids, per_step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n, start = len(self.prompt_ids), 0
        while True:
            index = [(start + k) % n for k in range(self.per_step)]
            ids = self.prompt_ids[index]
            mask = torch.ones_like(ids)
            yield {
                "sample_ids": [str(i) for i in index],
                "input_ids": ids,
                "attention_mask": mask,
                "prompt_ids": ids,
                "prompt_attention_mask": mask,
                "answers": [""] * len(index),
            }
            start = (start + self.per_step) % n


class PhaseTimer:
    """Seconds per phase of the current step; wrapped calls add to it."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, fn: Callable[..., Any], phase: Callable[[], str] | str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                name = phase() if callable(phase) else phase
                self.current[name] += time.perf_counter() - start

        return timed

    def take(self, total: float) -> dict[str, float]:
        out = {p: self.current.get(p, 0.0) for p in PHASES if p != "rest"}
        out["rest"] = total - sum(out.values())  # loss, backward, optimizer, logging
        self.current = defaultdict(float)
        return out


class TimedRollout:
    """A rollout whose calls count as the ``generate`` phase (the module reads ``max_new_tokens``)."""

    def __init__(self, inner: TransformersRollout, timer: PhaseTimer) -> None:
        self.inner, self.max_new_tokens = inner, inner.max_new_tokens
        self.call = timer.wrap(inner, "generate")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


def _logps_phase() -> str:
    return "policy_logps" if torch.is_grad_enabled() else "ref_logps"


class StepLog:
    """Step times and phases of one side, with the block each step belongs to."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float, dict[str, float]]] = []  # (block, index in block, s, phases)
        self.block = 0
        self.in_block = 0
        self.started = 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()

    def end(self, timer: PhaseTimer) -> None:
        total = time.perf_counter() - self.started
        self.steps.append((self.block, self.in_block, total, timer.take(total)))
        self.in_block += 1

    def next_block(self) -> None:
        self.block += 1
        self.in_block = 0

    def kept(self, warmup_blocks: int) -> list[tuple[float, dict[str, float]]]:
        """Steps after warm-up: not in the first ``warmup_blocks`` blocks, not the first step of a block."""
        return [(s, p) for block, i, s, p in self.steps if block >= warmup_blocks and i > 0]


def _ours(llm_name: str, group: int, completion_tokens: int) -> GRPOModule:
    torch.manual_seed(0)
    model = MultiMoodModel(LanguageModel(llm_name, dtype="float32", trainable="lora", **LORA))
    return GRPOModule(
        model,
        CombinedReward({"length": CharLengthReward()}),
        optimizer=lambda params: torch.optim.AdamW(params, lr=LR, weight_decay=0.0),  # as TRL's adamw_torch
        rollout=TransformersRollout(max_new_tokens=completion_tokens, min_new_tokens=completion_tokens),
        num_generations=group,
        beta=BETA,
        max_grad_norm=MAX_GRAD_NORM,
        generate_on_validation=False,
    )


def _trl(
    model_path: str,
    texts: list[str],
    prompts_per_step: int,
    group: int,
    prompt_tokens: int,
    completion_tokens: int,
):
    from peft import LoraConfig

    return build_trl_grpo_trainer(
        model_path,
        texts,
        num_generations=group,
        max_prompt_length=prompt_tokens,
        max_completion_length=completion_tokens,
        beta=BETA,
        prompts_per_step=prompts_per_step,
        peft_config=LoraConfig(
            r=LORA["lora_r"],
            lora_alpha=LORA["lora_alpha"],
            lora_dropout=LORA["lora_dropout"],
            target_modules=LORA["lora_target_modules"],
            task_type="CAUSAL_LM",
        ),
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        gradient_checkpointing=False,  # TRL's default is True; ours does not checkpoint
        shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": completion_tokens},
        logging_steps=10_000,
    )


def _lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def loss_agreement(module: GRPOModule, trl_trainer: Any, batch: dict[str, Any]) -> dict[str, float]:
    """Our loss and TRL's on one fixed batch from one of our rollouts (TRL's model gets our LoRA
    weights, with lora_B drawn away from 0 first so the policy differs from the reference)."""
    model, group = module.model, module.hparams.num_generations
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in _lora_state(model.llm.model).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        ours_lora, trl_lora = _lora_state(model.llm.model), _lora_state(trl_trainer.model)
        if set(ours_lora) != set(trl_lora):
            raise RuntimeError(
                f"LoRA layouts differ: ours only {sorted(set(ours_lora) - set(trl_lora))[:3]}, "
                f"TRL only {sorted(set(trl_lora) - set(ours_lora))[:3]}"
            )
        for name, p in trl_lora.items():
            p.copy_(ours_lora[name])

    blocks = repeat_blocks(encode_prompts(model, batch), group)
    prompt_ids = batch["prompt_ids"].repeat_interleave(group, dim=0)
    prompt_mask = batch["prompt_attention_mask"].repeat_interleave(group, dim=0)
    rollout = module.rollout(model, prompt_ids, prompt_mask, blocks)
    ids, mask = rollout.completion_ids, rollout.completion_mask
    texts = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
    reward = module.reward(texts, [""] * len(texts))
    advantages = group_advantages(reward.values, group)
    model.train()
    with torch.no_grad(), model.llm.adapter_disabled():
        ref = completion_logprobs(model, prompt_ids, prompt_mask, blocks, ids)
    ours, stats = grpo_loss(
        completion_logprobs(model, prompt_ids, prompt_mask, blocks, ids),
        None,
        ref,
        advantages,
        mask,
        beta=BETA,
        max_completion_length=module.rollout.max_new_tokens,
    )
    trl_trainer.model.train()
    theirs = trl_grpo_loss(trl_trainer, prompt_ids, prompt_mask, ids, mask, advantages, None, ref)
    return {
        "loss_ours": float(ours.detach()),
        "loss_trl": float(theirs.detach()),
        "loss_abs_diff": abs(float(ours.detach()) - float(theirs.detach())),
        "loss_batch_kl": float(stats["kl"]),
        "loss_batch_advantage_abs_mean": float(advantages.abs().mean()),
    }


def measure(
    llm_name: str = LLM,
    blocks: int = 4,
    block: int = 4,
    prompts_per_step: int = 2,
    group: int = 4,
    prompt_tokens: int = 128,
    completion_tokens: int = 64,
    num_prompts: int = 8,
    warmup_blocks: int = 1,
) -> dict[str, Any]:
    """Time ``blocks`` alternating blocks of ``block`` steps per side; the row's numbers.

    The first ``warmup_blocks`` blocks and the first step of every block are not counted.
    """
    if block < 2 or blocks <= warmup_blocks:
        raise ValueError(
            f"need block >= 2 and blocks > warmup_blocks (the first step of a block and the warm-up "
            f"blocks are not timed), got block={block}, blocks={blocks}, warmup_blocks={warmup_blocks}"
        )
    from transformers import TrainerCallback

    module = _ours(llm_name, group, completion_tokens)
    texts, prompt_ids = make_prompts(module.model.tokenizer, num_prompts, prompt_tokens)
    trl_trainer = _trl(
        str(resolve(llm_name)), texts, prompts_per_step, group, prompt_tokens, completion_tokens
    )

    ours_log, trl_log = StepLog(), StepLog()
    ours_timer, trl_timer = PhaseTimer(), PhaseTimer()
    # Our phases: the rollout seam, the reward, and completion_logprobs as lit_modules.grpo calls it.
    rollout, reward = module.rollout, module.reward
    module.rollout = TimedRollout(rollout, ours_timer)
    module.reward = ours_timer.wrap(reward, "reward")
    real_logprobs = grpo_module.completion_logprobs
    # TRL's phases: generation, reward functions, log-prob passes (no grad: reference; grad: policy).
    trl_trainer._generate_single_turn = trl_timer.wrap(trl_trainer._generate_single_turn, "generate")
    trl_trainer._calculate_rewards = trl_timer.wrap(trl_trainer._calculate_rewards, "reward")
    trl_trainer._get_per_token_logps_and_entropies = trl_timer.wrap(
        trl_trainer._get_per_token_logps_and_entropies, _logps_phase
    )

    class TRLSteps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            trl_log.begin()

        def on_step_end(self, args, state, control, **kwargs):
            trl_log.end(trl_timer)

    trl_trainer.add_callback(TRLSteps())
    trl_trainer.args.max_steps = block

    def trl_block() -> None:
        trl_trainer.train()
        trl_log.next_block()

    class Alternate(L.Callback):
        """Times our steps; after every ``block`` of them, runs a block of TRL steps."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            ours_log.begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ours_log.end(ours_timer)
            if ours_log.in_block == block:
                ours_log.next_block()
                trl_block()

    grpo_module.completion_logprobs = ours_timer.wrap(real_logprobs, _logps_phase)
    try:
        trainer = L.Trainer(
            max_steps=blocks * block,
            accelerator="cpu",
            limit_val_batches=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            callbacks=[Alternate()],
        )
        loader = torch.utils.data.DataLoader(PromptBatches(prompt_ids, prompts_per_step), batch_size=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, train_dataloaders=loader)
    finally:
        grpo_module.completion_logprobs = real_logprobs
        module.rollout, module.reward = rollout, reward

    first = next(iter(PromptBatches(prompt_ids, prompts_per_step)))
    agreement = loss_agreement(module, trl_trainer, first)

    kept = {"ours": ours_log.kept(warmup_blocks), "trl": trl_log.kept(warmup_blocks)}
    if not kept["ours"] or not kept["trl"]:
        raise RuntimeError(
            f"no step left after warm-up: ours {len(ours_log.steps)}, TRL {len(trl_log.steps)} steps"
        )
    median = {side: statistics.median(s for s, _ in rows) for side, rows in kept.items()}
    phases = {
        side: {p: round(statistics.median(ph[p] for _, ph in rows), 4) for p in PHASES}
        for side, rows in kept.items()
    }
    import trl

    return {
        "llm": llm_name,
        "trl": trl.__version__,
        "trl_settings": "steps_per_generation=1, num_iterations=1, gradient_checkpointing=False, optim=adamw_torch",
        "prompts_per_step": prompts_per_step,
        "num_generations": group,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "beta": BETA,
        "lora": LORA,
        "blocks": blocks,
        "block": block,
        "warmup_blocks": warmup_blocks,
        "steps_timed": {side: len(rows) for side, rows in kept.items()},
        "step_s": {side: spread([s for s, _ in rows], 4) for side, rows in kept.items()},
        "median_step_s": median,
        "ratio_ours_over_trl": median["ours"] / median["trl"],
        "median_phase_s": phases,
        **agreement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llm", action="append", default=None, help="tiny model name(s); default: both rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.llm or [LLM, LARGER_LLM]:
        row = measure(
            name,
            blocks=args.blocks,
            block=args.block,
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
        )
        path = write_row("grpo_step", row)
        print(
            f"{name}: median step ours {row['median_step_s']['ours'] * 1e3:.0f} ms vs TRL "
            f"{row['median_step_s']['trl'] * 1e3:.0f} ms (ratio {row['ratio_ours_over_trl']:.2f}); "
            f"phases ours {row['median_phase_s']['ours']}, TRL {row['median_phase_s']['trl']}; "
            f"loss |diff| {row['loss_abs_diff']:.2e} -> {path}"
        )


if __name__ == "__main__":
    main()
