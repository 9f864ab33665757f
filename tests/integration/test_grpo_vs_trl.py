"""Our GRPO loss equals TRL 1.16's GRPOTrainer loss on the same batch and model, for each loss type
the two share; gradients too. The oracle is TRL's own ``_compute_loss`` (its fused LM head computes
the log-probabilities), fed one fixed batch with off-policy ratios on both sides of the clip range,
a KL term, a left-padded prompt, completions of different lengths and one empty completion.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.trl_grpo import build_trl_grpo_trainer, trl_grpo_loss
from multimood.hub import resolve
from multimood.rl import grpo_loss, token_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")

G = 4
MAX_COMPLETION = 8  # TRL's max_completion_length; the batch is padded to T = 6 < 8 (matters for dr_grpo)
BETA = 0.3
EPSILON = 0.2


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(resolve("tiny:qwen2"))


def _trainer(model_path: str, loss_type: str, **config):
    return build_trl_grpo_trainer(
        model_path,
        ["hello there", "how are you"],
        num_generations=G,
        max_prompt_length=16,
        max_completion_length=MAX_COMPLETION,
        beta=BETA,
        loss_type=loss_type,
        epsilon=EPSILON,
        **config,
    )


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    """B = 4 completions (one group of G), prompt width 5, completion width 6."""
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, vocab, (G, 5), generator=gen)
    prompt_mask = torch.ones(G, 5, dtype=torch.long)
    prompt_mask[1, :2] = 0  # left padding
    prompt_ids[1, :2] = 0
    completion_ids = torch.randint(3, vocab, (G, 6), generator=gen)
    lengths = torch.tensor([6, 4, 1, 0])  # the last completion is empty
    completion_mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    completion_ids = completion_ids.masked_fill(completion_mask == 0, 0)
    return dict(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=torch.tensor([1.2, -0.7, 0.5, -1.0]),
    )


def _our_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    width = batch["completion_ids"].shape[1]
    # the logits at position p score token p + 1
    return token_logprobs(logits[:, -width - 1 : -1], batch["completion_ids"])


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_loss_and_gradients_equal_trl(model_path: str, loss_type: str) -> None:
    trainer = _trainer(model_path, loss_type)
    model = trainer.model
    model.train()
    batch = _batch(model.config.vocab_size)
    mask = batch["completion_mask"].bool()

    with torch.no_grad():
        current = _our_logps(model, batch)
    # old policy: per-token log-ratios logp - old of +-0.35 (ratios 1.42 / 0.70, outside the clip range
    # [0.8, 1.2] on both sides, for positive and negative advantages) and +-0.1 (inside it)
    log_ratio = torch.tensor([0.35, -0.35, 0.1, -0.1, 0.35, -0.35]).repeat(G, 1)
    old = current - log_ratio
    ref = current + (torch.rand(current.shape, generator=torch.Generator().manual_seed(1)) - 0.5)

    model.zero_grad()
    expected = trl_grpo_loss(trainer, **batch, old_per_token_logps=old, ref_per_token_logps=ref)
    expected.backward()
    expected_grads = _grads(model).clone()

    model.zero_grad()
    ours, stats = grpo_loss(
        _our_logps(model, batch),
        old,
        ref,
        batch["advantages"],
        batch["completion_mask"],
        beta=BETA,
        epsilon=EPSILON,
        loss_type=loss_type,
        max_completion_length=MAX_COMPLETION,
    )
    ours.backward()

    assert torch.allclose(ours, expected, atol=1e-5, rtol=0), (loss_type, ours.item(), expected.item())
    assert torch.allclose(_grads(model), expected_grads, atol=1e-5, rtol=1e-4)
    # the batch really exercises both clip sides and the KL term
    assert stats["clip_fraction/low"] > 0 and stats["clip_fraction/high"] > 0
    assert stats["kl"] > 0
    metrics = trainer._metrics["train"]
    for ours_key, trl_key in [
        ("clip_fraction/low", "clip_ratio/low_mean"),
        ("clip_fraction/high", "clip_ratio/high_mean"),
        ("clip_fraction", "clip_ratio/region_mean"),
        ("kl", "kl"),
    ]:
        assert stats[ours_key].item() == pytest.approx(metrics[trl_key][-1], abs=1e-6), ours_key
    assert mask.sum() == 11


def test_trl_default_kl_weighting_changes_gradients_not_the_value(model_path: str) -> None:
    """TRL 1.16 multiplies the KL by the importance ratio by default (``use_bias_correction_kl``). On
    policy the ratio is 1 in value, so the loss agrees, but the KL gradient differs: we follow the
    paper (eq. 10), and docs/design/grpo.md records the difference."""
    trainer = _trainer(model_path, "grpo", use_bias_correction_kl=True)
    model = trainer.model
    model.train()
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        ref = _our_logps(model, batch) + 0.3

    model.zero_grad()
    expected = trl_grpo_loss(trainer, **batch, old_per_token_logps=None, ref_per_token_logps=ref)
    expected.backward()
    trl_grads = _grads(model).clone()

    model.zero_grad()
    ours, _ = grpo_loss(
        _our_logps(model, batch), None, ref, batch["advantages"], batch["completion_mask"], BETA
    )
    ours.backward()

    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(_grads(model), trl_grads, atol=1e-5, rtol=1e-4)
