"""TRL 1.16's GRPOTrainer, built offline for a local model: the reference our GRPO maths is checked
against (tests/integration/test_grpo_vs_trl.py) and the baseline of a step-time comparison.

Not a benchmark by itself (``run_all`` does not list it)::

    from benchmarks.trl_grpo import build_trl_grpo_trainer
    trainer = build_trl_grpo_trainer("/path/to/model", prompts, num_generations=4,
                                     max_prompt_length=256, max_completion_length=128, beta=1.12)
    trainer.train()                      # a real TRL run (generation + loss + optimizer)
    loss = trl_grpo_loss(trainer, ...)   # only TRL's loss on a fixed batch

Nothing here touches the network: the model and tokenizer are loaded from ``model_path`` (a folder,
e.g. ``multimood.hub.resolve("tiny:qwen2")``) and TRL builds its reference model from the same folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch


def length_reward(completions: list[str], **_: Any) -> list[float]:
    """A cheap deterministic reward (characters / 100) for runs where the reward's value does not matter."""
    return [len(text) / 100.0 for text in completions]


def truncate_prompts(tokenizer: Any, prompts: Sequence[str], max_prompt_length: int) -> list[str]:
    """Keep the last ``max_prompt_length`` tokens of each prompt.

    TRL 1.16 has no ``max_prompt_length`` option any more (prompts are used whole), so the caller's
    limit is applied to the text before TRL sees it; the left side goes, as TRL used to truncate.
    """
    out = []
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(tokenizer.decode(ids[-max_prompt_length:]) if len(ids) > max_prompt_length else text)
    return out


def build_trl_grpo_trainer(
    model_path: str,
    prompts: Sequence[str],
    num_generations: int,
    max_prompt_length: int,
    max_completion_length: int,
    beta: float,
    *,
    loss_type: str = "grpo",
    epsilon: float = 0.2,
    prompts_per_step: int = 1,
    reward_func: Callable[..., list[float]] = length_reward,
    peft_config: Any = None,
    use_cpu: bool = True,
    bf16: bool = False,
    output_dir: str | None = None,
    seed: int = 0,
    **config: Any,
):
    """A ``trl.GRPOTrainer`` for the local model at ``model_path`` with the paper's GRPO settings.

    Args:
        model_path: a local transformers folder (model + tokenizer); loaded with
            ``AutoModelForCausalLM`` / ``AutoTokenizer``, no hub access.
        prompts: the training prompts (plain text); truncated to ``max_prompt_length`` tokens.
        num_generations: G, completions per prompt (paper: 4).
        max_prompt_length, max_completion_length: token limits.
        beta: KL coefficient (paper: 1.12); TRL loads a reference model when it is not 0.
        loss_type: TRL's aggregation; ``"grpo"`` is the paper's eq. 9 (TRL's default is ``"dapo"``).
        prompts_per_step: prompts per optimizer step (the per-device batch is ``prompts_per_step x G``).
        peft_config: a ``peft.LoraConfig`` to train an adapter (TRL's reference is then the model with
            the adapter disabled, as ours); None trains every weight against a reference copy.
        use_cpu, bf16: device and precision of the run.
        config: any other ``GRPOConfig`` field, overriding the defaults set here.

    The defaults pin the choices where TRL 1.16 departs from the paper (see docs/design/grpo.md):
    ``loss_type="grpo"``, ``scale_rewards="group"`` and ``use_bias_correction_kl=False`` (the paper's KL
    term is not weighted by the importance ratio).
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    dataset = Dataset.from_dict({"prompt": truncate_prompts(tokenizer, prompts, max_prompt_length)})
    settings: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="trl-grpo-"),
        report_to="none",
        use_cpu=use_cpu,
        bf16=bf16,
        seed=seed,
        num_generations=num_generations,
        per_device_train_batch_size=prompts_per_step * num_generations,
        max_completion_length=max_completion_length,
        beta=beta,
        epsilon=epsilon,
        loss_type=loss_type,
        scale_rewards="group",
        use_bias_correction_kl=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    settings.update(config)
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_func,
        args=GRPOConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def trl_grpo_loss(
    trainer: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_per_token_logps: torch.Tensor | None,
    ref_per_token_logps: torch.Tensor | None,
) -> torch.Tensor:
    """TRL's loss on one fixed batch: ``GRPOTrainer._compute_loss`` with the keys it reads in 1.16.

    Outside ``trainer.train()`` the attribute ``current_gradient_accumulation_steps`` (set by the HF
    training loop, TRL divides the loss by it in train mode) does not exist yet; it is set to 1 here.
    """
    if not hasattr(trainer, "current_gradient_accumulation_steps"):
        trainer.current_gradient_accumulation_steps = 1
    inputs: dict[str, Any] = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "num_items_in_batch": completion_mask.sum(),
    }
    if old_per_token_logps is not None:
        inputs["old_per_token_logps"] = old_per_token_logps
    if ref_per_token_logps is not None:
        inputs["ref_per_token_logps"] = ref_per_token_logps
    return trainer._compute_loss(trainer.model, inputs)
