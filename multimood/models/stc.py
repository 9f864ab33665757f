"""VideoLLaMA2's spatial-temporal convolution (STC) connector, "v35" variant.

The paper (section 3, appendix A) projects the vision tower's per-frame patch tokens into the LLM with
VideoLLaMA2's STC connector (``STCConnectorV35``, ``mm_projector_type = stc_connector_v35``):

1. ``s1``: a RegNet stage (timm ``RegStage``: 4 bottleneck blocks with squeeze-excitation, SiLU,
   ``LayerNorm2d``) applied to every frame, in_dim -> hidden_dim channels;
2. ``sampler``: ``Conv3d`` with kernel = stride = (2, 2, 2) and no padding, then SiLU: halves time,
   height and width (a 27 x 27 grid becomes 13 x 13: the last row and column are not covered,
   exactly as in VideoLLaMA2);
3. ``s2``: a second RegNet stage, hidden_dim -> hidden_dim, per downsampled frame;
4. ``readout``: Linear(hidden_dim, out_dim) - GELU - Linear(out_dim, out_dim) on every token.

16 frames of 27 x 27 SigLIP patches give 8 x 13 x 13 = 1,352 tokens. Submodule names and parameter
shapes equal VideoLLaMA2's (``s1.*``, ``sampler.*``, ``s2.*``, ``readout.*``), so its released
``mm_projector`` weights load with :func:`videollama2_projector_state_dict` +
``load_state_dict(strict=True)``. In VideoLLaMA2 hidden_dim is the LLM width (3,584 for Qwen2-7B).

Frame counts that the temporal kernel does not divide (a single image, or an odd number of frames):
VideoLLaMA2 never meets them (it samples a fixed even number of frames and repeats a still image
to that count); its Conv3d would drop a trailing odd frame and fails on one frame. ``odd_frames``
chooses: ``"repeat_last"`` (default) repeats the last frame up to the next multiple, so no frame is
lost and a still image becomes a two-frame clip of itself (VideoLLaMA2's treatment of images, at the
minimum length); ``"drop_last"`` keeps VideoLLaMA2's behaviour (trailing frames dropped; fewer
frames than the kernel is an error); ``"error"`` refuses such inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from timm.layers import LayerNorm2d
from timm.models.regnet import RegStage
from torch import nn

from multimood.models.trainable import (
    PROJECTOR_MODES,
    PROJECTOR_NO_LORA,
    Trainable,
    check_trainable,
    set_requires_grad,
)

OddFrames = Literal["repeat_last", "drop_last", "error"]

_VIDEOLLAMA2_PREFIX = "mm_projector."


def _reg_stage(depth: int, in_chs: int, out_chs: int) -> nn.Module:
    """A stride-1 RegNet stage as VideoLLaMA2 configures it (timm's default bottleneck and SE ratio)."""
    if depth == 0:
        return nn.Identity()
    return RegStage(
        depth=depth,
        in_chs=in_chs,
        out_chs=out_chs,
        stride=1,
        dilation=1,
        act_layer=nn.SiLU,
        norm_layer=LayerNorm2d,
    )


class STCConnector(nn.Module):
    """Video connector: (B, T, N, in_dim) frame patch tokens -> (B, T'*H'*W', out_dim) LLM tokens.

    Args:
        in_dim: Channels of the vision tower's tokens (1152 for SigLIP-So400M).
        out_dim: Width of the LLM embeddings (3584 for Qwen2-7B).
        hidden_dim: Channels inside the connector (RegStages and Conv3d). Default: ``out_dim``,
            as in VideoLLaMA2.
        depth: Bottleneck blocks per RegStage (VideoLLaMA2: 4); 0 replaces both stages by identity.
        mlp_depth: Linear layers in the readout MLP, GELU between them (VideoLLaMA2: 2).
        downsample: Conv3d kernel and stride over (time, height, width) (VideoLLaMA2: (2, 2, 2)).
        odd_frames: What to do when the temporal stride does not divide the number of frames:
            ``repeat_last`` (pad by repeating the last frame), ``drop_last`` (VideoLLaMA2's
            Conv3d behaviour) or ``error``. See the module docstring.
        output_norm: An RMSNorm (learned per-channel gain, initialised to 1) on every output token, so
            each token reaches the LLM with root-mean-square 1 whatever the tower's scale. Not in
            VideoLLaMA2 (default off, and then the state dict is VideoLLaMA2's). The demo turns it on:
            with a random tiny LLM and a random tower, tokens of one common direction and ~18% class
            signal are not read within its step budget without it (docs/design/demo.md).
        trainable: ``full`` (trained in projector alignment, stage B) or ``frozen`` ("keeping the
            pre-trained audio-visual projectors [...] frozen" in SFT); a frozen connector also runs in
            eval mode inside a training model. See :mod:`multimood.models.trainable`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        depth: int = 4,
        mlp_depth: int = 2,
        downsample: tuple[int, int, int] = (2, 2, 2),
        odd_frames: OddFrames = "repeat_last",
        output_norm: bool = False,
        trainable: Trainable = "full",
    ) -> None:
        super().__init__()
        self.trainable = check_trainable(
            "STCConnector", trainable, allowed=PROJECTOR_MODES, why=PROJECTOR_NO_LORA
        )
        if odd_frames not in ("repeat_last", "drop_last", "error"):
            raise ValueError(f"odd_frames must be 'repeat_last', 'drop_last' or 'error', got {odd_frames!r}")
        if mlp_depth < 1:
            raise ValueError(f"mlp_depth must be at least 1, got {mlp_depth}")
        if len(downsample) != 3 or min(downsample) < 1:
            raise ValueError(
                f"downsample must be three positive ints (time, height, width), got {downsample}"
            )
        hidden_dim = out_dim if hidden_dim is None else hidden_dim
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.downsample = tuple(int(k) for k in downsample)
        self.odd_frames = odd_frames

        self.s1 = _reg_stage(depth, in_dim, hidden_dim)
        sampler_in = hidden_dim if depth else in_dim
        self.sampler = nn.Sequential(
            nn.Conv3d(
                sampler_in,
                hidden_dim,
                kernel_size=self.downsample,
                stride=self.downsample,
                padding=0,
                bias=True,
            ),
            nn.SiLU(),
        )
        self.s2 = _reg_stage(depth, hidden_dim, hidden_dim)
        readout: list[nn.Module] = [nn.Linear(hidden_dim, out_dim)]
        for _ in range(1, mlp_depth):
            readout += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.readout = nn.Sequential(*readout)
        self.output_norm = nn.RMSNorm(out_dim, eps=1e-6) if output_norm else None
        set_requires_grad(self, self.trainable)

    @property
    def min_frames(self) -> int:
        """The fewest frames every ``odd_frames`` policy accepts (one temporal kernel); the fused
        model feeds this many to the connector as a stand-in when a batch has no video."""
        return self.downsample[0]

    @property
    def min_patches(self) -> int:
        """Patches per frame of the smallest square grid the spatial kernel accepts (2x2 = 4); the
        fused model's stand-in features use it, so a stand-in costs next to nothing."""
        return max(self.downsample[1], self.downsample[2]) ** 2

    def output_grid(self, num_frames: int, grid: tuple[int, int]) -> tuple[int, int, int]:
        """(T', H', W') after the Conv3d for ``num_frames`` frames of ``grid`` = (H, W) patches."""
        kt, kh, kw = self.downsample
        frames = self._frames_after_policy(num_frames)
        if grid[0] < kh or grid[1] < kw:
            raise ValueError(f"a {grid[0]}x{grid[1]} patch grid is smaller than the {kh}x{kw} spatial kernel")
        return frames // kt, grid[0] // kh, grid[1] // kw

    def num_tokens(self, num_frames: int, grid: tuple[int, int]) -> int:
        """LLM tokens produced for one clip, e.g. 16 frames of 27x27 patches -> 8 * 13 * 13 = 1,352."""
        return math.prod(self.output_grid(num_frames, grid))

    def _frames_after_policy(self, num_frames: int) -> int:
        kt = self.downsample[0]
        if num_frames < 1:
            raise ValueError(f"STCConnector needs at least one frame, got {num_frames}")
        if num_frames % kt == 0:
            return num_frames
        if self.odd_frames == "repeat_last":
            return num_frames + (-num_frames) % kt
        if self.odd_frames == "drop_last" and num_frames >= kt:
            return num_frames
        raise ValueError(
            f"STCConnector(odd_frames={self.odd_frames!r}) got {num_frames} frames, which the temporal stride "
            f"{kt} does not divide; sample a multiple of {kt} frames or use odd_frames='repeat_last'"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, N, C) with N a square number of patches, or (B, T, H, W, C). Returns (B, T'*H'*W', out_dim)."""
        if x.dim() == 4:
            b, t, n, c = x.shape
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"STCConnector needs a square patch grid, got {n} tokens per frame")
            x = x.reshape(b, t, side, side, c)
        elif x.dim() != 5:
            raise ValueError(f"STCConnector expects (B, T, N, C) or (B, T, H, W, C), got {tuple(x.shape)}")
        b, t, h, w, c = x.shape
        if c != self.in_dim:
            raise ValueError(f"STCConnector(in_dim={self.in_dim}) got tokens with {c} channels")
        self.output_grid(t, (h, w))  # validates the frame count and grid size early

        x = x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)  # (B*T, C, H, W): frames as images
        x = self.s1(x)
        x = x.reshape(b, t, *x.shape[1:]).transpose(1, 2)  # (B, D, T, H, W)
        padded = self._frames_after_policy(t)
        if padded > t:  # s1 is per frame, so repeating its output equals repeating the input frame
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, padded - t, -1, -1)], dim=2)
        x = self.sampler(x)  # (B, D, T', H', W')
        d, t2, h2, w2 = x.shape[1:]
        x = x.transpose(1, 2).reshape(b * t2, d, h2, w2)
        x = self.s2(x)
        x = x.reshape(b, t2, d, h2 * w2).permute(0, 1, 3, 2).reshape(b, t2 * h2 * w2, d)  # (B, T'H'W', D)
        x = self.readout(x)
        return self.output_norm(x) if self.output_norm is not None else x


def videollama2_projector_state_dict(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a VideoLLaMA2 checkpoint's video projector, renamed for :class:`STCConnector`.

    VideoLLaMA2 saves the projector as ``mm_projector.bin`` (stage 1) or inside the full model, under
    ``model.mm_projector.<key>``; this keeps the entries holding ``mm_projector.`` and strips the prefix
    (its own loader does the same). Audio projector keys (``mm_projector_a.``) are not taken.
    """
    out = {
        key.split(_VIDEOLLAMA2_PREFIX, 1)[1]: value
        for key, value in weights.items()
        if _VIDEOLLAMA2_PREFIX in key
    }
    if not out:
        raise KeyError(f"no '{_VIDEOLLAMA2_PREFIX}*' keys among {len(weights)} checkpoint entries")
    return out
