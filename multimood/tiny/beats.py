"""A tiny BEATs checkpoint with random weights, in the official ``{'cfg', 'model'}`` layout.

The architecture is the real one shrunk in width and depth (2 layers of width 32, patch embedding
of width 24 so that the 512 -> 768 ``post_extract_proj`` of the real model has a counterpart,
positional convolution of kernel 16), with the real input geometry: 16x16 patches on 128 mel bins,
so a 10 s clip still gives 496 tokens. Load it with ``BEATsEncoder.from_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multimood.models.beats import BEATsConfig, BEATsEncoder
from multimood.seeding import seeded
from multimood.tiny import take_options

CHECKPOINT_NAME = "BEATs_tiny.pt"

# Every key an official cfg holds; the values of BEATs_iter3+ where size does not matter.
TINY_BEATS_CFG: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 24,
    "conv_bias": False,
    "encoder_layers": 2,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 4,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 32,
    "max_distance": 128,
    "gru_rel_pos": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "layer_wise_gradient_decay_ratio": 0.6,
    "finetuned_model": False,
    "predictor_dropout": 0.0,
    "predictor_class": 5,
}


def build_tiny_beats(out_dir: Path, overrides: dict[str, Any]) -> None:
    """Write ``out_dir/BEATs_tiny.pt``; overrides are ``seed`` and any official cfg key.

    With ``finetuned_model=true`` the file also has the ``predictor`` head and a ``label_dict``
    (``{index: "tiny_label_<index>"}``), like the released fine-tuned checkpoints.
    """
    seed, cfg = take_options("tiny:beats", overrides, TINY_BEATS_CFG)
    config = BEATsConfig.from_dict(cfg, source="tiny:beats")
    label_dict = None
    if config.finetuned_model:
        label_dict = {index: f"tiny_label_{index}" for index in range(config.predictor_class or 0)}
    with seeded(seed):
        model = BEATsEncoder(config, label_dict=label_dict)
    model.to_checkpoint(Path(out_dir) / CHECKPOINT_NAME)
