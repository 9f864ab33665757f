"""Train/eval modes of the model parts: frozen parts stay in eval mode; generation runs in eval mode.

Frozen means deterministic: parts with no trainable parameter run in eval mode, even in training.

The paper trains in stages and keeps earlier parts fixed: "Both visual and audio encoders remain
frozen during training" (appendix B.2, projector training) and, in SFT, "keeping the pre-trained
audio-visual projectors and ConvCom frozen". A frozen part left in train mode would still apply
dropout (a stage-A compressor's LoRA dropout), layer drop (BEATs) or update batch-norm statistics,
so the features the trained parts learn from would change from one pass to the next. Which parts
are frozen is read from ``requires_grad`` when ``train()`` is called, so freezing after
construction (a stage script that calls ``requires_grad_(False)``) counts too.

Generation is an evaluation of the policy, also inside a training step (RL rollouts):
:func:`evaluating` runs it in eval mode and then restores every submodule's own mode. In train mode
with gradient checkpointing, transformers drops the KV cache while ``generate`` still feeds one new
token per step, so every step after the first would see no context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``module`` in eval mode; restore each submodule's previous mode after.

    Each submodule's flag is restored one by one (not ``module.train(previous)``), so parts that were
    deliberately in eval mode inside a training model (frozen ones) stay so, and modules whose
    ``train()`` has side effects are not re-run.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.train(False)
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def _has_parameters(module: nn.Module) -> tuple[bool, bool]:
    """(has any parameter, has a trainable one), over the whole subtree."""
    any_param = trainable = False
    for p in module.parameters():
        any_param = True
        if p.requires_grad:
            trainable = True
            break
    return any_param, trainable


def eval_frozen_parts(module: nn.Module) -> list[str]:
    """Put every frozen subtree below ``module`` in eval mode; return their qualified names.

    A subtree is frozen when it holds parameters and none requires grad; it is switched to eval as a
    whole (its own ``train(False)``, so overrides run). Subtrees with a trainable parameter are
    searched further down. Parameter-free modules (``nn.Dropout``) follow their parent: dropout
    inside a training layer keeps working, dropout inside a frozen LoRA layer stops.
    """
    switched: list[str] = []

    def visit(prefix: str, parent: nn.Module) -> None:
        for name, child in parent.named_children():
            qualified = f"{prefix}.{name}" if prefix else name
            any_param, trainable = _has_parameters(child)
            if not any_param:
                continue
            if not trainable:
                if any(m.training for m in child.modules()):
                    child.train(False)
                switched.append(qualified)
            else:
                visit(qualified, child)

    any_param, trainable = _has_parameters(module)
    if any_param and not trainable:
        module.train(False)
        return [""]
    visit("", module)
    return switched
