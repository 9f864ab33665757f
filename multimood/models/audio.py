"""The audio tower of the fused model: BEATs from an official checkpoint, frozen by default."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from multimood.hub import resolve
from multimood.models.beats import BEATsEncoder
from multimood.models.trainable import (
    TOWER_MODES,
    TOWER_NO_LORA,
    Trainable,
    check_trainable,
    set_requires_grad,
)

DTypeName = Literal["float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AudioTower(nn.Module):
    """BEATs features for BEATs fbanks computed by the data pipeline (paper eq. 4, E_A).

    Args:
        checkpoint: An official BEATs checkpoint (``.pt`` file, or a folder holding one; the paper
            uses ``BEATs_iter3_plus_AS2M``), or ``tiny:beats``. A fine-tuned checkpoint's AudioSet
            head is checked and dropped: only features are used.
        trainable: ``frozen`` (paper: both encoders frozen) or ``full``. A frozen tower also stays
            in eval mode when its parent trains, because released BEATs configs carry layer drop;
            ``lora`` is refused (see :mod:`multimood.models.trainable`).
        padding_rule: How padded fbank frames mask tokens: ``exact`` (a token is padding if any of
            its frames is) or ``official`` (the reference implementation's chunking).
        dtype: Dtype of every BEATs weight (the released checkpoints are float32). Fbanks are cast
            to it and the features back to the fbank's dtype. VideoLLaMA2 runs BEATs in bf16; the
            paper configuration does too. The weight-normed positional kernel and GELU are still
            computed in float32 inside, as the official code does.
    """

    def __init__(
        self,
        checkpoint: str,
        trainable: Trainable = "frozen",
        padding_rule: Literal["exact", "official"] = "exact",
        dtype: DTypeName = "float32",
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.checkpoint = checkpoint
        self.trainable = check_trainable("AudioTower", trainable, allowed=TOWER_MODES, why=TOWER_NO_LORA)
        self.encoder = BEATsEncoder.from_checkpoint(
            resolve(checkpoint), padding_rule=padding_rule, drop_predictor=True
        ).to(_DTYPES[dtype])
        set_requires_grad(self.encoder, self.trainable)
        if self.trainable == "frozen":
            self.encoder.eval()

    @property
    def output_dim(self) -> int:
        return self.encoder.output_dim

    def train(self, mode: bool = True) -> AudioTower:
        super().train(mode)
        if self.trainable == "frozen":
            self.encoder.eval()
        return self

    def forward(
        self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """fbank (B, F, 128), padding (B, F) True=pad -> features (B, N, D) in the fbank's dtype,
        padding (B, N)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable != "frozen"):
            features, padding = self.encoder.forward_fbank(fbank, padding_mask)
        return features.to(fbank.dtype), padding
