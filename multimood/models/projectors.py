"""Projectors from an encoder's feature width to the LLM width.

The paper's audio projector P_A is linear (eq. 4). VideoLLaMA2.1-AV, whose weights the paper
starts from, uses a 2-layer MLP with GELU (``mlp2x_gelu``) for its audio projector; choose that
kind to load those weights. Module layouts match VideoLLaMA2's projector builders, so their
state-dict keys load unchanged (``weight``/``bias`` for linear, ``0.*``/``2.*`` for the MLP).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from multimood.models.trainable import (
    PROJECTOR_MODES,
    PROJECTOR_NO_LORA,
    Trainable,
    check_trainable,
    set_requires_grad,
)

ProjectorKind = Literal["linear", "mlp2x_gelu"]


def build_projector(kind: ProjectorKind, in_dim: int, out_dim: int) -> nn.Module:
    """``linear``: Linear(in, out). ``mlp2x_gelu``: Linear(in, out) -> GELU -> Linear(out, out)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ValueError(f"unknown projector kind {kind!r}; use 'linear' or 'mlp2x_gelu'")


class AudioProjector(nn.Module):
    """P_A: audio-encoder features (B, N, in_dim) -> LLM embeddings (B, N, out_dim).

    Args:
        in_dim: Audio feature width (768 for BEATs); the fused model passes the audio tower's.
        out_dim: LLM hidden size; the fused model passes the LLM's.
        kind: ``linear`` (paper eq. 4, the default) or ``mlp2x_gelu`` (VideoLLaMA2.1-AV's layout).
        trainable: ``full`` (trained in projector alignment) or ``frozen`` (kept in SFT, paper
            B.2); a frozen projector also runs in eval mode inside a training model. See
            :mod:`multimood.models.trainable`.
    """

    def __init__(
        self, in_dim: int, out_dim: int, kind: ProjectorKind = "linear", trainable: Trainable = "full"
    ) -> None:
        super().__init__()
        self.trainable = check_trainable(
            "AudioProjector", trainable, allowed=PROJECTOR_MODES, why=PROJECTOR_NO_LORA
        )
        self.kind = kind
        self.proj = build_projector(kind, in_dim, out_dim)
        set_requires_grad(self, self.trainable)

    def forward(self, features):
        return self.proj(features)
