"""One vocabulary for what trains in each component: ``frozen``, ``lora`` or ``full``.

Every component of the fused model takes its training mode as a constructor argument with the same
values (the idea of torchtune's per-component ``TrainableParams``):

- ``frozen``: no parameter trains. A frozen part also runs in eval mode inside a training model
  (:mod:`multimood.models.modes`), so dropout or layer drop never change its output.
- ``lora``: the pretrained weights stay fixed and LoRA adapters (peft) train. Only the parts that
  wrap a pretrained transformer or Mamba take it (the LLM, the compressor's backbone).
- ``full``: every parameter trains.

Components accept the subset they can honour and refuse the others up front with
:func:`check_trainable`. Each stores its mode as an attribute (``trainable``, or
``<part>_trainable`` when one component has several parts, e.g. the compressor's
``backbone_trainable`` and ``projector_trainable``), so a training stage can check what it was
given: :func:`trainable_table` lists every top-level part with its declared modes and its
trainable / total parameter counts.

The paper's stages map to these values (appendix B.2): both encoders ``frozen`` throughout; stage A
trains the compressor (backbone ``lora``, projector ``full``); stage B the projectors (LLM
``frozen``); stage C the LLM with ``lora`` while "keeping the pre-trained audio-visual projectors and
ConvCom frozen".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

from torch import nn

Trainable = Literal["frozen", "lora", "full"]
TRAINABLE_MODES: tuple[str, ...] = get_args(Trainable)

# The encoder towers take frozen or full. LoRA there would need target names per backend (timm,
# open_clip and transformers name their attention projections differently) and a test for each;
# the paper keeps both encoders frozen.
TOWER_MODES = ("frozen", "full")
TOWER_NO_LORA = "the encoder towers take no LoRA adapters: fine-tune them with 'full' or keep them 'frozen'"
# Projectors and connectors are small and trained from scratch: adapters would only add weights.
PROJECTOR_MODES = ("frozen", "full")
PROJECTOR_NO_LORA = "a projector is trained whole or kept; LoRA adapters would only add weights to it"


def check_trainable(
    component: str,
    value: Any,
    allowed: Sequence[str] = TRAINABLE_MODES,
    option: str = "trainable",
    why: str | None = None,
) -> Trainable:
    """Return ``value`` when ``component`` accepts it for ``option``; else raise ``ValueError``.

    Args:
        component: Name for the message, e.g. ``VisionTower``.
        value: The mode given by the user.
        allowed: The modes this component (part) supports, a subset of ``frozen``/``lora``/``full``.
        option: The argument name, e.g. ``trainable`` or ``backbone_trainable``.
        why: Why a known mode outside ``allowed`` is refused (added to that message).
    """
    choices = ", ".join(repr(m) for m in allowed)
    if value not in TRAINABLE_MODES:
        raise ValueError(f"{component}: {option}={value!r} is not a training mode; use one of {choices}")
    if value not in allowed:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{component}: {option}={value!r} is not supported{reason}; use one of {choices}")
    return value


def set_requires_grad(module: nn.Module, mode: Trainable) -> None:
    """``frozen``: no parameter of ``module`` requires grad; ``full``: every floating one does.

    ``lora`` is not a state this function can set: adapters are added (and the base frozen) by the
    component that owns them, with peft.
    """
    if mode == "frozen":
        module.requires_grad_(False)
    elif mode == "full":
        for param in module.parameters():
            # Integer parameters (packed quantised weights) cannot require grad at all.
            if param.is_floating_point():
                param.requires_grad_(True)
    else:
        raise ValueError(f"set_requires_grad takes 'frozen' or 'full', got {mode!r}")


def declared_modes(module: nn.Module) -> dict[str, str]:
    """The modes ``module`` declares: its ``trainable`` and ``*_trainable`` attributes, by name."""
    return {
        name: value
        for name, value in vars(module).items()
        if (name == "trainable" or name.endswith("_trainable")) and value in TRAINABLE_MODES
    }


def _numel(param: nn.Parameter) -> int:
    """Logical size of a parameter: a bitsandbytes 4-bit weight counts as the matrix it stands for."""
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def trainable_table(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per top-level part of ``model``: its declared modes and its parameter counts.

    Returns ``{part: {**modes, "trainable_params": int, "total_params": int}}`` in the order the
    parts were registered, e.g. ``{"llm": {"trainable": "lora", "trainable_params": 4096,
    "total_params": 610304}, ...}``. Modes are what the part was built with (:func:`declared_modes`;
    a plug-in part without them has counts only); counts are read from ``requires_grad`` now, so
    freezing after construction shows. A 4-bit weight counts with its logical size. Parts without
    parameters are listed with zero counts.
    """
    table: dict[str, dict[str, Any]] = {}
    for name, part in model.named_children():
        params = list(part.parameters())
        table[name] = {
            **declared_modes(part),
            "trainable_params": sum(_numel(p) for p in params if p.requires_grad),
            "total_params": sum(_numel(p) for p in params),
        }
    return table


def format_trainable_table(table: dict[str, dict[str, Any]]) -> str:
    """A fixed-width text rendering of :func:`trainable_table` for logs."""
    lines = [f"{'part':<20} {'modes':<52} {'trainable':>14} {'total':>14}"]
    for name, row in table.items():
        modes = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("trainable_params", "total_params"))
        lines.append(
            f"{name:<20} {modes or '-':<52} {row['trainable_params']:>14,} {row['total_params']:>14,}"
        )
    return "\n".join(lines)
