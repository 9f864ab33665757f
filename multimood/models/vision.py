"""The frozen vision tower: per-frame patch features from a CLIP-family image encoder.

Paper section 3 / appendix A: SigLIP-So400M-Patch14-384 encodes 16 frames per clip; the video
connector receives, for every frame, all 27x27 = 729 patch tokens (no CLS, no pooled token) from
the second-to-last layer. This mirrors VideoLLaMA2, which runs ``SiglipVisionModel`` with
``mm_vision_select_layer = -2`` and keeps ``hidden_states[-2]``.

**Which layer** ``select_layer`` picks, for every backend: the output of one transformer block,
counted like transformers' ``hidden_states`` tuple ``(embeddings, block 1, ..., block L)``:
``-1`` is the last block, ``-2`` (default) the second-to-last, ``k > 0`` block ``k`` (1-based).
The raw patch embeddings (``0``) are not selectable. In every case the features are the block's
residual-stream output *before* any final norm (SigLIP's ``post_layernorm`` / timm's ``norm``):

- open_clip + timm trunk (the paper's ``hf-hub:timm/ViT-SO400M-14-SigLIP-384``): output of
  ``trunk.blocks[L + select_layer]`` (for negative values), via ``forward_intermediates``;
- open_clip's own ``VisionTransformer``: output of ``transformer.resblocks[...]`` likewise (after
  its ``ln_pre``, which precedes the blocks); the class token is dropped;
- transformers (``SiglipVisionModel``, ``CLIPVisionModel``, ...): ``hidden_states[select_layer]``;
  CLIP's class token is dropped.

Blocks after the selected one, the final norm and the pooling/projection heads never contribute to
the output, so they are removed at load time (less memory, and no parameters left without
gradients when the tower is unfrozen). The open_clip text tower is discarded as well.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from multimood.hub import register_folder_architectures, resolve
from multimood.models.trainable import (
    TOWER_MODES,
    TOWER_NO_LORA,
    Trainable,
    check_trainable,
    set_requires_grad,
)

Backend = Literal["open_clip", "transformers"]
DTypeName = Literal["float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# PIL resampling codes stored in transformers image-processor configs.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


def _interpolation_name(resample: Any) -> str:
    """Name of an image processor's resampling filter (a PIL code in transformers configs)."""
    try:
        return _PIL_RESAMPLE[int(resample)]
    except (TypeError, ValueError, KeyError):
        return str(getattr(resample, "value", resample))


def _block_index(select_layer: int, num_blocks: int, model_name: str) -> int:
    """0-based index of the block whose output ``select_layer`` names (see the module docstring)."""
    if not (1 <= select_layer <= num_blocks or -num_blocks <= select_layer <= -1):
        raise ValueError(
            f"select_layer={select_layer} is out of range for {model_name!r} with {num_blocks} blocks: "
            f"use -1..-{num_blocks} (from the end) or 1..{num_blocks} (block number); 0, the patch "
            "embeddings before any block, is not a feature layer"
        )
    return select_layer - 1 if select_layer > 0 else num_blocks + select_layer


class VisionTower(nn.Module):
    """A CLIP-family image encoder that returns per-frame patch tokens from one intermediate layer.

    Input pixels must already be preprocessed as the encoder expects: resized to
    :attr:`image_size` and normalised with :attr:`image_mean` / :attr:`image_std`.

    Args:
        model_name: Which encoder. With ``backend="open_clip"``: an open_clip hub id
            (``hf-hub:timm/ViT-SO400M-14-SigLIP-384``, the paper's), a local open_clip folder
            (``open_clip_config.json`` + weights), ``tiny:siglip`` (a tiny random model for tests), or
            a built-in open_clip name together with ``pretrained``. With ``backend="transformers"``:
            a hub id or folder of a transformers vision model or of a dual-encoder checkpoint whose
            vision half is used (e.g. ``google/siglip-so400m-patch14-384``, as VideoLLaMA2 loads
            it, or ``openai/clip-vit-large-patch14-336``); its image-processor config supplies the
            normalisation constants.
        backend: Library that loads ``model_name``: ``open_clip`` or ``transformers``.
        select_layer: Which block's output to return: ``-2`` = second-to-last (paper, VideoLLaMA2),
            ``-1`` = last, ``k > 0`` = block ``k`` counted from 1. Features are taken before any
            final norm.
        trainable: ``frozen`` (paper: "Both visual and audio encoders remain frozen"): no
            gradients, always in eval mode (even when the parent module is put in training mode),
            forward under ``torch.no_grad``. ``full``: every encoder weight trains. ``lora`` is
            refused (see :mod:`multimood.models.trainable`).
        pretrained: Only for built-in open_clip names (e.g. ``ViT-B-16-SigLIP``): an open_clip
            pretrained tag (``webli``) or a checkpoint file. Hub ids and folders carry their own
            weights and must leave it unset.
        dtype: Dtype of every encoder weight, norms included (``float32``, ``bfloat16``,
            ``float16``). Frames are cast to it and the features back to the frames' dtype.
            VideoLLaMA2 runs its SigLIP tower in bf16; the paper configuration does too.

    Attributes set at load time, for configuring the data pipeline and the connector:
    ``hidden_size`` (C), ``image_size`` and ``patch_grid`` as (height, width), ``num_patches``,
    ``image_mean`` / ``image_std`` (RGB, for pixels scaled to [0, 1]), ``interpolation`` (resize
    filter name), ``num_blocks`` (blocks in the full encoder) and ``block_index`` (0-based index of
    the block whose output is returned).
    """

    def __init__(
        self,
        model_name: str = "hf-hub:timm/ViT-SO400M-14-SigLIP-384",
        backend: Backend = "open_clip",
        select_layer: int = -2,
        trainable: Trainable = "frozen",
        pretrained: str | None = None,
        dtype: DTypeName = "float32",
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.model_name = model_name
        self.backend = backend
        self.select_layer = select_layer
        self.trainable = check_trainable("VisionTower", trainable, allowed=TOWER_MODES, why=TOWER_NO_LORA)
        if backend == "open_clip":
            self._load_open_clip(model_name, pretrained)
        elif backend == "transformers":
            if pretrained is not None:
                raise ValueError(
                    "pretrained= applies to built-in open_clip names only, not to backend='transformers'"
                )
            self._load_transformers(model_name)
        else:
            raise ValueError(f"backend must be 'open_clip' or 'transformers', got {backend!r}")
        self.model.to(_DTYPES[dtype])  # after pruning: the dropped blocks and heads are never cast
        set_requires_grad(self.model, self.trainable)
        if self.trainable == "frozen":
            self.model.eval()

    # -- public geometry --------------------------------------------------------------------------

    @property
    def num_patches(self) -> int:
        """Patch tokens per frame, e.g. 27 * 27 = 729 for SigLIP-So400M-Patch14-384."""
        return self.patch_grid[0] * self.patch_grid[1]

    # -- loading ----------------------------------------------------------------------------------

    def _load_open_clip(self, model_name: str, pretrained: str | None) -> None:
        import open_clip

        name = resolve(model_name)
        if name.startswith("local-dir:"):
            name = name[len("local-dir:") :]
        if Path(name).is_dir():
            if not (Path(name) / "open_clip_config.json").is_file():
                raise FileNotFoundError(
                    f"{name} is not an open_clip folder: open_clip_config.json is missing"
                )
            register_folder_architectures(name)
            open_clip_name, kwargs = f"local-dir:{name}", {}
        elif name.startswith("hf-hub:"):
            open_clip_name, kwargs = name, {}
        elif name in open_clip.list_models():
            if pretrained is None:
                raise ValueError(
                    f"open_clip model {name!r} is a built-in architecture: pass pretrained=<tag or checkpoint "
                    f"file> (tags: {open_clip.list_pretrained_tags_by_model(name)}); it is never used with random weights"
                )
            open_clip_name, kwargs = name, {"pretrained": pretrained}
        else:
            raise ValueError(
                f"open_clip cannot load {model_name!r} (resolved to {name!r}): expected 'hf-hub:<org>/<repo>', an "
                "existing folder with open_clip_config.json, 'tiny:siglip', or a built-in open_clip model name"
            )
        if pretrained is not None and "pretrained" not in kwargs:
            raise ValueError(
                f"pretrained={pretrained!r} applies to built-in open_clip names only, not to {name!r}"
            )

        # require_pretrained: open_clip otherwise only logs a warning and returns random weights when a
        # folder has no checkpoint or a hub download fails.
        clip = open_clip.create_model(open_clip_name, require_pretrained=True, **kwargs)
        visual = clip.visual  # the text tower is dropped with `clip`
        cfg = dict(visual.preprocess_cfg)
        if hasattr(visual, "trunk"):  # open_clip TimmModel around a timm ViT
            trunk = visual.trunk
            if not (hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed")):
                raise ValueError(
                    f"{model_name!r}: the timm trunk {type(trunk).__name__} is not a ViT (no blocks/patch_embed)"
                )
            num_blocks = len(trunk.blocks)
            self.block_index = _block_index(self.select_layer, num_blocks, model_name)
            trunk.prune_intermediate_layers([self.block_index], prune_norm=True, prune_head=True)
            visual.head = nn.Identity()
            self.hidden_size = int(trunk.embed_dim)
            self.patch_grid = _pair(trunk.patch_embed.grid_size)
        elif hasattr(visual, "transformer") and hasattr(visual, "grid_size"):  # open_clip VisionTransformer
            num_blocks = len(visual.transformer.resblocks)
            self.block_index = _block_index(self.select_layer, num_blocks, model_name)
            visual.prune_intermediate_layers([self.block_index], prune_norm=True, prune_head=True)
            for pool in ("attn_pool", "attn_pool_contrastive"):
                if getattr(visual, pool, None) is not None:
                    setattr(visual, pool, None)
            self.hidden_size = int(visual.transformer.width)
            self.patch_grid = _pair(visual.grid_size)
        else:
            raise ValueError(
                f"{model_name!r}: open_clip vision tower {type(visual).__name__} is neither a timm ViT trunk nor "
                "open_clip's VisionTransformer"
            )
        self.model = visual
        self.num_blocks = num_blocks
        self.image_size = _pair(visual.image_size)
        self.image_mean = tuple(float(v) for v in cfg["mean"])
        self.image_std = tuple(float(v) for v in cfg["std"])
        self.interpolation = str(cfg.get("interpolation", "bicubic"))

    def _load_transformers(self, model_name: str) -> None:
        from transformers import AutoConfig, AutoImageProcessor
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        name = resolve(model_name)
        folder = Path(name)
        if folder.is_dir() and not (folder / "config.json").is_file():
            hint = (
                " (it is an open_clip folder: use backend='open_clip')"
                if (folder / "open_clip_config.json").is_file()
                else ""
            )
            raise FileNotFoundError(f"{folder} has no config.json for backend='transformers'{hint}")
        config = AutoConfig.from_pretrained(name)
        # A dual encoder (SiglipConfig, CLIPConfig) keeps its image side in `vision_config`; the vision
        # model class reads just that half of the checkpoint, as VideoLLaMA2 does.
        vision_config = getattr(config, "vision_config", config)
        if type(vision_config) not in MODEL_MAPPING:
            raise ValueError(
                f"transformers has no vision model for {type(vision_config).__name__} ({name!r})"
            )
        model = MODEL_MAPPING[type(vision_config)].from_pretrained(name)
        try:
            processor = AutoImageProcessor.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"{name!r} has no image-processor config (preprocessor_config.json) to take the pixel "
                "mean/std from; save the model's image processor beside it"
            ) from err

        layers = [
            (path, module)
            for path, module in model.named_modules()
            if path.endswith("encoder.layers") and isinstance(module, nn.ModuleList)
        ]
        if len(layers) != 1:
            raise ValueError(f"{name!r}: cannot find the encoder's layer list in {type(model).__name__}")
        path, blocks = layers[0]
        num_blocks = len(blocks)
        self.block_index = _block_index(self.select_layer, num_blocks, model_name)
        # Truncated so that hidden_states[-1] is the selected block's output (pre post-layernorm).
        encoder = model.get_submodule(path.rsplit(".", 1)[0])
        encoder.layers = blocks[: self.block_index + 1]
        # The final norm and pooling head beside the encoder (SigLIP: post_layernorm, head; CLIP:
        # post_layernorm) only feed outputs we discard: make them no-ops.
        tower = model.get_submodule(path.rsplit(".", 2)[0]) if path.count(".") >= 2 else model
        for unused in ("post_layernorm", "head"):
            if isinstance(getattr(tower, unused, None), nn.Module):
                setattr(tower, unused, nn.Identity())

        self.model = model
        self.num_blocks = num_blocks
        self.hidden_size = int(vision_config.hidden_size)
        self.image_size = _pair(vision_config.image_size)
        patch = _pair(vision_config.patch_size)
        self.patch_grid = (self.image_size[0] // patch[0], self.image_size[1] // patch[1])
        self.image_mean = tuple(float(v) for v in processor.image_mean)
        self.image_std = tuple(float(v) for v in processor.image_std)
        self.interpolation = _interpolation_name(getattr(processor, "resample", None))

    # -- running ----------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> VisionTower:
        """Set training mode; a frozen encoder stays in eval mode (no dropout, fixed statistics)."""
        super().train(mode)
        if self.trainable == "frozen":
            self.model.eval()
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch tokens of every frame.

        pixels: (B, T, 3, H, W), preprocessed, H x W = :attr:`image_size`.
        Returns (B, T, N, C): N = :attr:`num_patches` in row-major patch order, C = :attr:`hidden_size`,
        in the dtype of ``pixels``.
        """
        if pixels.dim() != 5 or pixels.shape[2] != 3:
            raise ValueError(
                f"VisionTower expects pixels of shape (B, T, 3, H, W), got {tuple(pixels.shape)}"
            )
        b, t = pixels.shape[:2]
        if tuple(pixels.shape[-2:]) != self.image_size:
            raise ValueError(
                f"VisionTower({self.model_name!r}) expects {self.image_size[0]}x{self.image_size[1]} frames, "
                f"got {pixels.shape[-2]}x{pixels.shape[-1]}"
            )
        param = next(self.model.parameters())
        frames = pixels.flatten(0, 1).to(device=param.device, dtype=param.dtype)  # (B*T, 3, H, W)
        grad_mode = torch.no_grad() if self.trainable == "frozen" else contextlib.nullcontext()
        with grad_mode:
            tokens = self._encode(frames)  # (B*T, N, C)
        return tokens.reshape(b, t, *tokens.shape[1:]).to(pixels.dtype)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.backend == "open_clip":
            # Both open_clip tower types drop their prefix (class) tokens in NLC intermediates.
            out = self.model.forward_intermediates(
                frames, indices=[self.block_index], stop_early=True, intermediates_only=True, output_fmt="NLC"
            )
            tokens = out["image_intermediates"][0]
        else:
            tokens = self.model(pixel_values=frames, output_hidden_states=True).hidden_states[-1]
            extra = tokens.shape[1] - self.num_patches
            if extra < 0:
                raise ValueError(
                    f"{self.model_name!r} returned {tokens.shape[1]} tokens for {self.num_patches} patches"
                )
            tokens = tokens[:, extra:]  # drop leading class token(s), e.g. CLIP's
        if tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"{self.model_name!r} returned {tokens.shape[1]} patch tokens, expected {self.num_patches}"
            )
        return tokens
