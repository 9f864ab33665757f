"""What a plug-in part of :class:`~multimood.models.multimood.MultiMoodModel` must provide.

Users plug their own backbones in by import path (a YAML ``class_path``). The fused model sizes the
connector and projectors from the towers, finds the placeholders through the LLM, and, when a batch
lacks a modality, builds a small stand-in input so that every trainable part still takes part in
the step (DDP and FSDP need that; see ``docs/design/model.md``). Those needs are listed here as
:class:`typing.Protocol` classes, and :func:`check_component` verifies them when the fused model is
built: a part that lacks something fails there with a ``ValueError`` naming the part, its class and
what is missing, instead of building a zero-width connector or failing deep inside a training step.

Every part must also be a ``torch.nn.Module`` (so that its parameters are moved, frozen, saved and
synchronised with the rest).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class VisionTowerProtocol(Protocol):
    """Frames -> per-frame patch features.

    ``forward(video)``: video (B, T, 3, H, W) -> features (B, T, N, C).
    """

    #: C, the width of the patch features; sizes the video connector's input.
    hidden_size: int
    #: N, patch tokens per frame; shapes the stand-in features when a batch has no video.
    num_patches: int
    #: (H, W) of the input frames; needed only when the tower runs on a stand-in clip (it has
    #: trainable parameters, or the fused model has ``stand_ins="all"``).
    image_size: tuple[int, int]


@runtime_checkable
class VideoConnectorProtocol(Protocol):
    """Patch features -> LLM tokens (the STC connector), built by a factory ``(C, llm_hidden)``.

    ``forward(features)``: (B, T, N, C) -> (B, Nv, llm_hidden). Optional attributes, used to keep
    the stand-in input small: ``min_frames`` (int, default 1), the fewest frames it accepts, and
    ``min_patches`` (int, default the tower's ``num_patches``), the fewest patches per frame.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AudioTowerProtocol(Protocol):
    """Fbank frames -> audio features.

    ``forward(fbank, padding)``: fbank (B, F, 128) and padding (B, F) bool, True = padded (or None)
    -> (features (B, Na, C), padding (B, Na) or None). A tower that runs on a stand-in (it has
    trainable parameters, or ``stand_ins="all"``) must accept one second (100 frames) of an all-zero
    fbank.
    """

    #: C, the width of the audio features; sizes the audio projector's input.
    output_dim: int


@runtime_checkable
class AudioProjectorProtocol(Protocol):
    """Audio features -> LLM tokens (P_A), built by a factory ``(C, llm_hidden)``.

    ``forward(features)``: (B, Na, C) -> (B, Na, llm_hidden).
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HistoryCompressorProtocol(Protocol):
    """History ids -> one LLM embedding per turn (the ConvCompressor), built by a factory ``(llm_hidden)``.

    ``forward(ids, mask)``: right-padded ids (B, L) with ``<MEM>`` closing every turn, mask (B, L)
    -> (memory (B, T, llm_hidden), valid (B, T) bool). Optional method
    ``check_history_tokenizer(tokenizer)``: raise ``ValueError`` when the data side's history
    tokenizer would give ids this compressor misreads.
    """

    #: The id that closes each history turn; the stand-in history is this id alone.
    mem_token_id: int


# What each part needs: attribute -> what it is for. Checked by check_component.
_REQUIRED: dict[str, dict[str, str]] = {
    "vision_tower": {
        "hidden_size": "the width C of its (B, T, N, C) patch features, which sizes the video connector",
        "num_patches": "the patch tokens N per frame, which shape the stand-in features for batches without video",
    },
    "audio_tower": {
        "output_dim": "the width C of its (B, Na, C) features, which sizes the audio projector",
    },
    "history_compressor": {
        "mem_token_id": "the <MEM> id closing each history turn, checked against the data side's",
    },
}

_PROTOCOLS: dict[str, type] = {
    "vision_tower": VisionTowerProtocol,
    "video_connector": VideoConnectorProtocol,
    "audio_tower": AudioTowerProtocol,
    "audio_projector": AudioProjectorProtocol,
    "history_compressor": HistoryCompressorProtocol,
}


def _describe(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__name__} ({cls.__module__}.{cls.__qualname__})"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_component(role: str, component: Any) -> None:
    """Raise ``ValueError`` unless ``component`` provides what the fused model needs for ``role``.

    ``role`` is the fused model's argument name (``vision_tower``, ``video_connector``,
    ``audio_tower``, ``audio_projector``, ``history_compressor``).
    """
    protocol = _PROTOCOLS[role].__name__
    where = f"see multimood.models.contracts.{protocol}"
    if not isinstance(component, nn.Module):
        raise ValueError(
            f"{role}: {_describe(component)} is not a torch.nn.Module; the fused model needs one "
            f"(parameters, modes, state dict) ({where})"
        )
    for name, purpose in _REQUIRED.get(role, {}).items():
        value = getattr(component, name, None)
        if value is None:
            raise ValueError(f"{role}: {_describe(component)} has no '{name}' ({purpose}); {where}")
        if name == "mem_token_id":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = _positive_int(value)
        if not ok:
            raise ValueError(
                f"{role}: {_describe(component)}.{name} must be a positive int ({purpose}), got {value!r}; {where}"
            )


def has_trainable_parameters(*modules: nn.Module | None) -> bool:
    """True when any of ``modules`` holds a parameter that requires grad."""
    return any(p.requires_grad for m in modules if m is not None for p in m.parameters())


def image_size_of(tower: nn.Module) -> tuple[int, int]:
    """(H, W) of a vision tower's input frames, for the stand-in clip of a trainable tower."""
    size = getattr(tower, "image_size", None)
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, tuple | list) and len(size) == 2 and all(_positive_int(s) for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(
        f"vision_tower: {_describe(tower)} has no usable 'image_size' (got {size!r}), but it runs on "
        "a stand-in clip when a batch has no video (it has trainable parameters, or stand_ins='all') "
        "and needs (H, W) for it; see multimood.models.contracts.VisionTowerProtocol"
    )
