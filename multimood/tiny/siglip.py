"""A tiny SigLIP-style open_clip model: the paper's vision tower at toy size, built offline.

The paper's tower is ``hf-hub:timm/ViT-SO400M-14-SigLIP-384``: an open_clip ``CustomTextCLIP`` whose
vision side is open_clip's ``TimmModel`` wrapping the timm ViT ``vit_so400m_patch14_siglip_384``
(patch 14, 384 px, width 1152, 27 blocks, no class token, 'map' attention pooling, no projection).
The tiny model keeps every structural choice and shrinks only the sizes, so that
:class:`multimood.models.vision.VisionTower` runs the same code on it as on the real model:

- a timm ``VisionTransformer`` with ``patch_size=14, class_token=False, global_pool='map'``,
  registered with timm under a name that spells its sizes (see :func:`tiny_vit_name`);
- wrapped by open_clip as ``timm_pool='map', timm_proj='none'`` (``embed_dim`` = ViT width);
- a one-layer text tower shaped like SigLIP's (no causal mask, last-token pooling), because
  ``open_clip.create_model`` always builds one;
- written as an open_clip folder (``open_clip_config.json`` with ``model_cfg`` and
  ``preprocess_cfg``, plus ``open_clip_model.safetensors``) that
  ``open_clip.create_model("local-dir:" + folder)`` loads.

open_clip builds the trunk from its timm name alone, so the name must be registered with timm
before loading: importing this module registers the default tiny ViT, and
:func:`register_tiny_vit` registers any other size (``VisionTower`` calls it for local folders).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from multimood.seeding import seeded
from multimood.tiny import take_options

# SigLIP normalises pixels to [-1, 1] (open_clip's INCEPTION_MEAN / INCEPTION_STD) after a bicubic
# "squash" resize to the square input size (open_clip's SigLIP preprocess config).
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

PATCH_SIZE = 14  # as ViT-SO400M-14
MLP_RATIO = 3.7362  # ViT-SO400M's 4304 / 1152

# Sizes a ``tiny:siglip?...`` name may override. 56 px = 4x4 patches of 14 px.
DEFAULTS: dict[str, int] = {"image_size": 56, "width": 32, "depth": 3, "heads": 2}

# Text tower: open_clip's bundled BPE tokenizer (49,408 ids) so the tokenizer works offline too.
_TEXT_CFG: dict[str, Any] = {
    "context_length": 16,
    "vocab_size": 49408,
    "width": 32,
    "heads": 2,
    "layers": 1,
    "mlp_ratio": 4.0,
    "no_causal_mask": True,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
}

# The name carries every size because open_clip passes timm nothing but the name. "siglip" stays
# out of it: open_clip would otherwise pick a hub tokenizer for names containing that word.
_NAME_RE = re.compile(r"^vit_mmtiny_patch14_map_(\d+)w_(\d+)d_(\d+)h_(\d+)px$")


def tiny_vit_name(image_size: int, width: int, depth: int, heads: int) -> str:
    """The timm model name of a tiny ViT of these sizes, e.g. ``vit_mmtiny_patch14_map_32w_3d_2h_56px``."""
    return f"vit_mmtiny_patch14_map_{width}w_{depth}d_{heads}h_{image_size}px"


def is_tiny_vit_name(name: str) -> bool:
    """Whether ``name`` is a timm name produced by :func:`tiny_vit_name`."""
    return bool(_NAME_RE.match(name))


def register_tiny_vit(name: str) -> None:
    """Register the tiny ViT called ``name`` with timm (no-op when already registered)."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    match = _NAME_RE.match(name)
    if match is None:
        raise ValueError(
            f"{name!r} is not a tiny ViT name (expected the form {tiny_vit_name(56, 32, 3, 2)!r})"
        )
    if timm.is_model(name):
        return
    width, depth, heads, image_size = (int(g) for g in match.groups())
    if width % heads:
        raise ValueError(f"tiny ViT {name!r}: width {width} is not divisible by heads {heads}")
    if image_size % PATCH_SIZE:
        raise ValueError(
            f"tiny ViT {name!r}: image_size {image_size} is not a multiple of the patch {PATCH_SIZE}"
        )

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        if pretrained:
            raise ValueError(f"{name} is a random-weight test model; it has no pretrained weights")
        # timm.create_model passes its pretrained-config plumbing to every entrypoint; unused here.
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        # The same constructor arguments as timm's vit_so400m_patch14_siglip_384, smaller.
        args: dict[str, Any] = {
            "img_size": image_size,
            "patch_size": PATCH_SIZE,
            "embed_dim": width,
            "depth": depth,
            "num_heads": heads,
            "mlp_ratio": MLP_RATIO,
            "class_token": False,
            "global_pool": "map",
        }
        return VisionTransformer(**{**args, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    # timm lists registered entrypoints in the defining module's __all__; keep the module consistent.
    setattr(sys.modules[__name__], name, entrypoint)
    register_model(entrypoint)


def build_tiny_siglip(out_dir: Path, overrides: dict[str, Any]) -> None:
    """Write a tiny SigLIP-style open_clip folder (random weights, deterministic by ``seed``).

    Overrides: ``seed`` (default 0), ``image_size`` (a multiple of 14; default 56 = 4x4 patches),
    ``width`` (32), ``depth`` (3 ViT blocks), ``heads`` (2).
    """
    import open_clip
    from safetensors.torch import save_file

    seed, options = take_options("tiny:siglip", overrides, DEFAULTS)
    sizes = {key: int(value) for key, value in options.items()}
    name = tiny_vit_name(**sizes)
    register_tiny_vit(name)

    config = {
        "model_cfg": {
            "embed_dim": sizes["width"],
            "init_logit_bias": -10,
            "custom_text": True,
            "vision_cfg": {
                "image_size": sizes["image_size"],
                "timm_model_name": name,
                "timm_model_pretrained": False,
                "timm_pool": "map",
                "timm_proj": "none",
            },
            "text_cfg": dict(_TEXT_CFG),
        },
        "preprocess_cfg": {
            "mean": list(SIGLIP_MEAN),
            "std": list(SIGLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "squash",
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    model_cfg = {k: v for k, v in config["model_cfg"].items() if k != "custom_text"}
    with seeded(seed):
        # The class open_clip.create_model picks for ``custom_text``; built directly, it does not warn
        # about the weights this function is about to write.
        model = open_clip.CustomTextCLIP(**model_cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))


# Importing this module makes the default tiny ViT known to timm (the vision tower imports it).
register_tiny_vit(tiny_vit_name(**DEFAULTS))
