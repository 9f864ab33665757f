"""BEATs audio encoder (Chen et al. 2023), read from official checkpoint files.

Its input features (the kaldi fbank) live in :mod:`multimood.data.fbank`. It is our own code;
module and parameter names follow microsoft/unilm ``beats/`` so that the released checkpoints
(``BEATs_iter3_plus_AS2M*.pt``) load unchanged and what we save loads in the official code.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from multimood.data.fbank import (
    BEATS_FRAME_LENGTH_MS,
    BEATS_FRAME_SHIFT_MS,
    BEATS_MEL_BINS,
    BEATS_SAMPLE_RATE,
    beats_fbank,
)

# --------------------------------------------------------------------------------------------------
# Checkpoint configuration
# --------------------------------------------------------------------------------------------------

# Activations the official ``get_activation_fn`` knows, except "glu" (it changes fc1's parameter
# names; no released BEATs checkpoint uses it).
_ACTIVATIONS = ("gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear")
_CHECKPOINT_SUFFIXES = (".pt", ".pth")


def _as_bool(value: Any, key: str, source: str) -> bool:
    # The official code tests some flags with ``== 1``, so 0/1 integers mean the same as booleans.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{source}: cfg[{key!r}] must be a boolean, got {value!r}")


def _as_int(value: Any, key: str, source: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{source}: cfg[{key!r}] must be an integer >= {minimum}, got {value!r}")
    return value


def _as_float(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{source}: cfg[{key!r}] must be a non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BEATsConfig:
    """The architecture stored under ``cfg`` in an official BEATs checkpoint (same key names).

    Build it with :meth:`from_dict`, which reads every value from the checkpoint: the official
    ``BEATsConfig`` silently falls back to defaults that differ from the released models (for
    example ``max_distance`` 1280 vs. 800), so here a missing key is an error.

    Args:
        input_patch_size: side of the square patches cut from the (frames x 128) fbank (16).
        embed_dim: width of the patch embedding (512).
        conv_bias: whether the patch embedding has a bias.
        encoder_layers: number of transformer layers (12).
        encoder_embed_dim: transformer width, the feature size (768).
        encoder_ffn_embed_dim: feed-forward width (3072).
        encoder_attention_heads: attention heads (12).
        activation_fn: feed-forward activation, one of ``gelu``, ``gelu_accurate``, ``gelu_fast``,
            ``relu``, ``tanh``, ``linear``.
        layer_norm_first: pre-LN layers if true; BEATs uses post-LN (false).
        deep_norm: DeepNorm residual scaling, alpha = (2 x layers)^(1/4) (Wang et al. 2022).
        conv_pos: kernel size of the convolutional positional embedding (128).
        conv_pos_groups: groups of that convolution (16).
        relative_position_embedding: bucketed relative position bias (computed in layer 0, shared).
        num_buckets: relative position buckets (320).
        max_distance: distance at which buckets stop growing (800).
        gru_rel_pos: gate the relative position bias with the query (WavLM, Chen et al. 2022).
        dropout: dropout after the positional embedding and on the residual branches.
        attention_dropout: dropout on attention probabilities.
        activation_dropout: dropout after the feed-forward activation.
        encoder_layerdrop: probability of skipping a whole layer in training.
        dropout_input: dropout on the projected patch embeddings.
        layer_wise_gradient_decay_ratio: gradients entering each layer are multiplied by this
            (fine-tuning trick; 1.0 disables it).
        finetuned_model: whether the checkpoint has the AudioSet ``predictor`` head.
        predictor_dropout: dropout before the predictor (required when ``finetuned_model``).
        predictor_class: predictor outputs (527 AudioSet classes; required when ``finetuned_model``).
        extra: ``cfg`` keys this class does not know. The official code ignores them too (it only
            reads its own attribute names), so they cannot change the network; they are kept so
            that :meth:`to_dict` writes them back, and :meth:`from_dict` warns about them.
    """

    input_patch_size: int
    embed_dim: int
    conv_bias: bool
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    activation_fn: str
    layer_norm_first: bool
    deep_norm: bool
    conv_pos: int
    conv_pos_groups: int
    relative_position_embedding: bool
    num_buckets: int
    max_distance: int
    gru_rel_pos: bool
    dropout: float
    attention_dropout: float
    activation_dropout: float
    encoder_layerdrop: float
    dropout_input: float
    layer_wise_gradient_decay_ratio: float
    finetuned_model: bool
    predictor_dropout: float | None = None
    predictor_class: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _BOOLS: ClassVar[tuple[str, ...]] = (
        "conv_bias",
        "layer_norm_first",
        "deep_norm",
        "relative_position_embedding",
        "gru_rel_pos",
    )
    _POSITIVE_INTS: ClassVar[tuple[str, ...]] = (
        "input_patch_size",
        "embed_dim",
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "conv_pos",
        "conv_pos_groups",
        "num_buckets",
        "max_distance",
    )
    _FLOATS: ClassVar[tuple[str, ...]] = (
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "encoder_layerdrop",
        "dropout_input",
        "layer_wise_gradient_decay_ratio",
    )
    _PREDICTOR: ClassVar[tuple[str, ...]] = ("predictor_dropout", "predictor_class")

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """Keys every checkpoint ``cfg`` must hold (the predictor keys only when fine-tuned)."""
        return (*cls._BOOLS, *cls._POSITIVE_INTS, *cls._FLOATS, "activation_fn", "finetuned_model")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], source: str = "cfg") -> BEATsConfig:
        """Validate an official ``cfg`` dict; ``source`` names the file in error messages.

        Raises ValueError listing every missing key, or naming the first bad value. Unknown keys
        give a warning and are kept in ``extra``.
        """
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{source}: 'cfg' must be a dict, got {type(cfg).__name__}")
        required = list(cls.required_keys())
        finetuned = cfg.get("finetuned_model")
        if finetuned is not None and _as_bool(finetuned, "finetuned_model", source):
            required += cls._PREDICTOR
        missing = sorted(key for key in required if key not in cfg)
        if missing:
            raise ValueError(f"{source}: BEATs cfg is missing required key(s): {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {key: cfg[key] for key in cfg if key not in known}
        if extra:
            warnings.warn(
                f"{source}: BEATs cfg has key(s) unknown to this implementation, ignored as the "
                f"official code ignores them: {', '.join(sorted(extra))}",
                UserWarning,
                stacklevel=2,
            )
        values: dict[str, Any] = {key: _as_bool(cfg[key], key, source) for key in cls._BOOLS}
        values |= {key: _as_int(cfg[key], key, source, minimum=1) for key in cls._POSITIVE_INTS}
        values |= {key: _as_float(cfg[key], key, source) for key in cls._FLOATS}
        values["finetuned_model"] = _as_bool(cfg["finetuned_model"], "finetuned_model", source)
        if cfg.get("predictor_dropout") is not None:
            values["predictor_dropout"] = _as_float(cfg["predictor_dropout"], "predictor_dropout", source)
        if cfg.get("predictor_class") is not None:
            values["predictor_class"] = _as_int(cfg["predictor_class"], "predictor_class", source, minimum=1)
        activation = cfg["activation_fn"]
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"{source}: cfg['activation_fn'] = {activation!r} is not supported; use one of {_ACTIVATIONS}"
            )
        config = cls(activation_fn=activation, extra=extra, **values)
        config._check(source)
        return config

    def _check(self, source: str) -> None:
        """Cross-field constraints the official code asserts (or silently breaks on)."""
        problems = []
        if self.encoder_embed_dim % self.encoder_attention_heads:
            problems.append("encoder_embed_dim must be divisible by encoder_attention_heads")
        if self.encoder_embed_dim % self.conv_pos_groups:
            problems.append("encoder_embed_dim must be divisible by conv_pos_groups")
        if self.deep_norm and self.layer_norm_first:
            problems.append("deep_norm and layer_norm_first cannot both be true")
        if self.input_patch_size > BEATS_MEL_BINS:
            problems.append(f"input_patch_size must be at most {BEATS_MEL_BINS} (the fbank's mel bins)")
        if self.relative_position_embedding and (
            self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4
        ):
            # Buckets are split in two directions, half of each exact: both need room.
            problems.append("num_buckets must be >= 4 and max_distance > num_buckets // 4")
        if not 0 <= self.encoder_layerdrop < 1:
            problems.append("encoder_layerdrop must be in [0, 1)")
        if self.finetuned_model and (self.predictor_class is None or self.predictor_dropout is None):
            problems.append("finetuned_model needs predictor_class and predictor_dropout")
        if problems:
            raise ValueError(f"{source}: invalid BEATs cfg: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        """The official ``cfg`` dict (unknown keys from the source included, unset predictor keys left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in self._PREDICTOR:
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}


# --------------------------------------------------------------------------------------------------
# Network. Submodule names follow microsoft/unilm beats/{BEATs,backbone}.py, so that state-dict keys
# (e.g. ``encoder.layers.3.self_attn.grep_linear.weight``) are the official ones.
# --------------------------------------------------------------------------------------------------


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` (BEATs' layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "gelu":
        # As the official code: exact GELU computed in float32, cast back (matters in bf16/fp16).
        return lambda x: F.gelu(x.float()).type_as(x)
    if name in ("gelu_accurate", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"relu": F.relu, "tanh": torch.tanh, "linear": lambda x: x}[name]


class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation (Salimans & Kingma 2016): w = g * v / ||v||.

    The norm runs over output and input channels separately for each kernel position (``dim=2``
    in torch's terms), as in the official positional convolution. The parameters are stored as
    ``weight_g`` (1, 1, kernel) and ``weight_v`` (channels, channels / groups, kernel): the names of
    the legacy ``torch.nn.utils.weight_norm`` that official checkpoints carry. (The newer
    ``parametrizations.weight_norm`` would name them ``parametrizations.weight.original0/1``.)
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official initialisation: v ~ N(0, 4 / (kernel x channels)), g = ||v||, zero bias.
        channels, _, kernel = self.weight_v.shape
        nn.init.normal_(self.weight_v, mean=0.0, std=math.sqrt(4.0 / (kernel * channels)))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
        nn.init.zeros_(self.bias)

    def weight(self) -> torch.Tensor:
        """The effective kernel, computed in float32 (low-precision norms of 768 x 48 values drift)."""
        v = self.weight_v.float()
        return (v * (self.weight_g.float() / v.norm(dim=(0, 1), keepdim=True))).to(self.weight_v.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class _DropLastStep(nn.Module):
    """With an even kernel, ``padding = kernel // 2`` yields one step too many: drop the last one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-1]


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index of every (query, key) pair: (length, length) long, T5-style, bidirectional.

    Half the buckets are for keys after the query; within each half, distances below a quarter of
    ``num_buckets`` get their own bucket and larger ones share log-spaced buckets up to
    ``max_distance``. The float operations are in the official order, so boundaries match.
    """
    position = torch.arange(length)
    relative = position[None, :] - position[:, None]  # key - query
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    # clamp: log(0) is never selected below, but casting -inf to long is undefined.
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


class _GatedRelPosAttention(nn.Module):
    """Multi-head self-attention plus a relative position bias gated per query (WavLM's gated
    relative position bias, Chen et al. 2022, eq. 4-5): bias' = (a * (b * grep_a - 1) + 2) * bias,
    with a, b = sigmoid of a linear map of each head's query.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        attention_dropout: float,
        relative_attention_bias: nn.Embedding | None,
        gated: bool,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        # Registration order follows the official module, so state-dict key order matches too.
        if relative_attention_bias is not None:
            # Shared object: layer 0 owns it, every layer lists it (the official state dict holds
            # one copy per layer).
            self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(dim // heads, 8) if gated else None
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1)) if gated else None

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x: (B, N, D); position_bias: (H, N, N) or None; key_padding_mask: (B, N) True=padding."""
        batch, length, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, H, N, D/H)
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        mask = None
        if position_bias is not None:
            mask = position_bias.unsqueeze(0)  # (1, H, N, N)
            if self.grep_linear is not None:
                # The gate reads the unscaled query: 8 outputs summed in 2 groups of 4 -> a, b.
                gates = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1))
                gate_a, gate_b = gates.chunk(2, dim=-1)  # (B, H, N, 1) each
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask  # (B, H, N, N)
        if key_padding_mask is not None:
            padding = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            padding = padding.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
            mask = padding if mask is None else mask + padding
        # SDPA's default scale is head_dim^-0.5, the official one. (The official code also subtracts
        # the row maximum with a factor 32 for fp16 range; softmax is invariant to it.)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class _EncoderLayer(nn.Module):
    """One transformer layer: post-LN (BEATs, with DeepNorm residual scaling) or pre-LN."""

    def __init__(self, config: BEATsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.activation = _activation(config.activation_fn)
        self.self_attn = _GatedRelPosAttention(
            dim,
            config.encoder_attention_heads,
            config.attention_dropout,
            relative_attention_bias,
            gated=config.gru_rel_pos,
        )
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        # DeepNorm (Wang et al. 2022, "DeepNet", eq. for encoders): x_{l+1} = LN(alpha x_l + f(x_l)).
        self.residual_scale = (2 * config.encoder_layers) ** 0.25 if config.deep_norm else 1.0

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.fc2(self.dropout2(self.activation(self.fc1(x)))))

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), position_bias, padding_mask))
            return x + self._feed_forward(self.final_layer_norm(x))
        attended = self.dropout1(self.self_attn(x, position_bias, padding_mask))
        x = self.self_attn_layer_norm(x * self.residual_scale + attended)
        return self.final_layer_norm(x * self.residual_scale + self._feed_forward(x))


class _TransformerEncoder(nn.Module):
    """Convolutional positional embedding + transformer layers sharing one relative position bias."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        conv = _WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups)
        trim = _DropLastStep() if config.conv_pos % 2 == 0 else nn.Identity()
        self.pos_conv = nn.Sequential(conv, trim, nn.GELU())  # keys: pos_conv.0.{weight_g,weight_v,bias}
        self.dropout = config.dropout
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        shared_bias = None
        if config.relative_position_embedding:
            shared_bias = nn.Embedding(config.num_buckets, config.encoder_attention_heads)
            nn.init.xavier_normal_(shared_bias.weight)
        self.layers = nn.ModuleList(_EncoderLayer(config, shared_bias) for _ in range(config.encoder_layers))
        self.layer_norm_first = config.layer_norm_first
        self.layer_norm = nn.LayerNorm(dim)
        self.layerdrop = config.encoder_layerdrop
        self.gradient_decay = config.layer_wise_gradient_decay_ratio
        # Bucket indices (L, L) for the longest length seen, on the device of the bias table; see
        # position_bias. A plain attribute, not a buffer: it never enters state_dict, DDP does not
        # broadcast it (ranks may hold different lengths), and to_empty() cannot fill it with garbage.
        self._buckets: torch.Tensor | None = None

    def position_bias(self, length: int) -> torch.Tensor | None:
        """Relative position bias (H, N, N) from layer 0's bucket table, or None when disabled.

        The bucket indices depend only on the length, so they are computed once and reused: on the
        CPU, as the official code computes them (float rounding at bucket boundaries then matches),
        then kept on the table's device. A bucket depends only on key - query, so the indices for a
        shorter length are the top-left corner of a longer one's; the cache is rebuilt only for a
        longer input or after the module moved to another device (the first forward there).
        """
        table = getattr(self.layers[0].self_attn, "relative_attention_bias", None)
        if table is None:
            return None
        device = table.weight.device
        buckets = self._buckets
        if buckets is None or buckets.device != device or buckets.shape[0] < length:
            buckets = relative_position_buckets(length, self.num_buckets, self.max_distance).to(device)
            self._buckets = buckets
        return table(buckets[:length, :length]).permute(2, 0, 1)  # (H, N, N)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, N, D), padding_mask: (B, N) True=padding -> (B, N, D)."""
        if padding_mask is not None:
            # Padding is zero before the positional convolution, exactly as the zero padding a
            # shorter clip gets at its end: valid positions then see the same neighbourhood.
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        position_bias = self.position_bias(x.shape[1])
        for layer in self.layers:
            if self.gradient_decay != 1.0 and torch.is_grad_enabled():
                x = _ScaleGradient.apply(x, self.gradient_decay)
            if self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop:
                continue
            x = layer(x, position_bias, padding_mask)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


PaddingRule = Literal["exact", "official"]


class BEATsEncoder(nn.Module):
    """BEATs audio encoder (Chen et al. 2023) with the official checkpoint layout.

    16 kHz mono audio -> 128-bin kaldi fbank (:func:`beats_fbank`) -> 16x16 patches (time-major:
    for each 16-frame time step, 8 frequency patches) -> LayerNorm -> projection to the encoder
    width -> convolutional positional embedding -> post-LN transformer layers with a shared, gated
    relative position bias and DeepNorm -> (B, N, 768) features. MultiMood eq. 4 feeds them to the
    audio projector P_A. A 10 s clip gives 998 frames -> 62 x 8 = 496 tokens.

    Load released weights with :meth:`from_checkpoint`; :meth:`to_checkpoint` writes the same
    layout back, so official tools can read what we save.

    Args:
        config: the architecture, a :class:`BEATsConfig` or an official ``cfg`` dict.
        padding_rule: how padding masks map onto tokens. ``"exact"`` (default): a frame is padding
            if any sample of its 25 ms window is, a token if any frame of its 16-frame time patch
            is; each clip of a padded batch then gets the features it gets alone. ``"official"``:
            microsoft's rule (the mask is cut into as many equal chunks as there are frames, then
            tokens, and a chunk is padding only if all of it is); it reproduces the official
            ``extract_features`` on padded batches, but lets a few tokens computed partly from
            padding into the attention of valid ones.
        label_dict: the checkpoint's ``label_dict`` (fine-tuned models), written back by
            :meth:`to_checkpoint`; None for none.
    """

    def __init__(
        self,
        config: BEATsConfig | Mapping[str, Any],
        padding_rule: PaddingRule = "exact",
        label_dict: Mapping[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, BEATsConfig):
            config = BEATsConfig.from_dict(config)
        if padding_rule not in ("exact", "official"):
            raise ValueError(f"padding_rule must be 'exact' or 'official', got {padding_rule!r}")
        self.config = config
        self.padding_rule = padding_rule
        self.label_dict = dict(label_dict) if label_dict is not None else None
        # Same registration order as the official class.
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        patch = config.input_patch_size
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, patch, stride=patch, bias=config.conv_bias)
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = _TransformerEncoder(config)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.predictor_dropout: nn.Dropout | None = None
        self.predictor: nn.Linear | None = None
        if config.finetuned_model:
            self.predictor_dropout = nn.Dropout(config.predictor_dropout)
            self.predictor = nn.Linear(config.encoder_embed_dim, config.predictor_class)

    @property
    def output_dim(self) -> int:
        """Width of the features (768 for the released models)."""
        return self.config.encoder_embed_dim

    def num_tokens(self, num_frames: int) -> int:
        """Tokens for a clip of ``num_frames`` fbank frames: whole time patches x frequency patches."""
        patch = self.config.input_patch_size
        return (num_frames // patch) * (BEATS_MEL_BINS // patch)

    # ---- padding masks ----------------------------------------------------------------------

    def _frame_padding(self, sample_padding: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, S) sample mask -> (B, F) frame mask."""
        if self.padding_rule == "official":
            return _chunk_all(sample_padding, num_frames)
        window = int(BEATS_SAMPLE_RATE * BEATS_FRAME_LENGTH_MS / 1000)
        shift = int(BEATS_SAMPLE_RATE * BEATS_FRAME_SHIFT_MS / 1000)
        return sample_padding.unfold(1, window, shift).any(-1)

    def _token_padding(self, frame_padding: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """(B, F) frame mask -> (B, N) token mask."""
        if self.padding_rule == "official":
            return _chunk_all(frame_padding, num_tokens)
        patch = self.config.input_patch_size
        steps = frame_padding.shape[1] // patch
        time_padding = frame_padding[:, : steps * patch].reshape(-1, steps, patch).any(-1)  # (B, T)
        return time_padding.repeat_interleave(num_tokens // steps, dim=1)  # (B, T x mel patches)

    # ---- forward ----------------------------------------------------------------------------

    def extract_features(
        self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a batch of 16 kHz mono waveforms in [-1, 1].

        waveforms: (B, S) float; padding_mask: (B, S) bool, True = padding, or None.
        Returns features (B, N, D) and their padding mask (B, N), True = padding (all False
        without an input mask; the official class returns None then). Features at padded
        positions are returned as computed, not zeroed, as in the official class.
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
        if padding_mask is not None and (
            padding_mask.shape != waveforms.shape or padding_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"padding_mask must be a bool tensor of shape {tuple(waveforms.shape)}, "
                f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        fbank = torch.stack([beats_fbank(waveform) for waveform in waveforms])  # (B, F, 128)
        frame_padding = None
        if padding_mask is not None:
            frame_padding = self._frame_padding(padding_mask, fbank.shape[1])
        return self.forward_fbank(fbank, frame_padding)

    def forward_fbank(
        self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of precomputed, normalised fbanks (:func:`beats_fbank`, padded to one length).

        fbank: (B, F, 128); padding_mask: (B, F) bool, True = padded frame, or None.
        Returns features (B, N, D) and their padding mask (B, N), as :meth:`extract_features`.
        """
        patch = self.config.input_patch_size
        if fbank.dim() != 3 or fbank.shape[2] != BEATS_MEL_BINS:
            raise ValueError(f"fbank must be (batch, frames, {BEATS_MEL_BINS}), got {tuple(fbank.shape)}")
        if fbank.shape[1] < patch:
            raise ValueError(f"fbank has {fbank.shape[1]} frames, fewer than one {patch}-frame patch")
        if padding_mask is not None and (
            padding_mask.shape != fbank.shape[:2] or padding_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"padding_mask must be a bool tensor of shape {tuple(fbank.shape[:2])}, "
                f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        x = self.patch_embedding(fbank.to(self.patch_embedding.weight.dtype).unsqueeze(1))  # (B, E, T, 8)
        x = x.flatten(2).transpose(1, 2)  # (B, N = T x 8, E), time-major
        x = self.layer_norm(x)
        if padding_mask is None:
            token_padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            token_padding = self._token_padding(padding_mask, x.shape[1])
            empty = token_padding.all(-1).nonzero().flatten().tolist()
            if empty:
                raise ValueError(
                    f"clip(s) {empty} of the batch have no unpadded {patch}-frame patch: BEATs needs "
                    f"at least {patch} frames (0.175 s at 16 kHz) of audio per clip"
                )
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)  # (B, N, D)
        x = self.dropout_input(x)
        x = self.encoder(x, token_padding if padding_mask is not None else None)
        return x, token_padding

    def forward(
        self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`extract_features`."""
        return self.extract_features(waveforms, padding_mask)

    def classify(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """AudioSet class probabilities (B, C) from features, with the fine-tuned ``predictor``.

        As the official fine-tuned model: per-token logits averaged over unpadded tokens, then a
        sigmoid. Raises for checkpoints without a predictor.
        """
        if self.predictor is None or self.predictor_dropout is None:
            raise ValueError("this BEATs model has no predictor head (not a fine-tuned checkpoint)")
        logits = self.predictor(self.predictor_dropout(features))  # (B, N, C)
        if padding_mask is None:
            return torch.sigmoid(logits.mean(dim=1))
        valid = (~padding_mask).unsqueeze(-1).to(logits.dtype)
        return torch.sigmoid((logits * valid).sum(dim=1) / valid.sum(dim=1))

    # ---- checkpoints ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        map_location: str | torch.device = "cpu",
        padding_rule: PaddingRule = "exact",
        drop_predictor: bool = False,
        weights_only: bool = True,
    ) -> BEATsEncoder:
        """Load an official BEATs checkpoint (``{'cfg', 'model'[, 'label_dict']}``).

        Args:
            path: the ``.pt`` file, or a folder holding exactly one ``.pt``/``.pth`` file (what
                ``resolve("tiny:beats")`` returns).
            map_location: device the weights are loaded to (``torch.load``'s argument).
            padding_rule: see the class docstring.
            drop_predictor: fine-tuned checkpoints carry an AudioSet ``predictor`` head that
                feature extraction never uses. False (default) keeps it (``classify`` works and
                :meth:`to_checkpoint` writes an identical file); True checks its weights load,
                then removes it (no unused parameters in training; the config then says
                ``finetuned_model: False`` and the label dictionary is dropped).
            weights_only: ``torch.load``'s safe mode. Official files are plain dicts of tensors
                and numbers and need no more; set False only for files you trust.

        Raises ValueError naming the file for a bad layout, a bad ``cfg``, or missing/unexpected
        weight keys (all listed).
        """
        file = _checkpoint_file(Path(path))
        try:
            checkpoint = torch.load(file, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{file}: torch.load(weights_only=True) refused the file ({error}); if you trust it, "
                "pass weights_only=False"
            ) from error
        if not isinstance(checkpoint, Mapping) or not {"cfg", "model"} <= checkpoint.keys():
            found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise ValueError(
                f"{file}: not an official BEATs checkpoint (need 'cfg' and 'model'), found {found}"
            )
        config = BEATsConfig.from_dict(checkpoint["cfg"], source=str(file))
        with torch.device("meta"):  # no random init: every tensor comes from the file
            model = cls(config, padding_rule=padding_rule, label_dict=checkpoint.get("label_dict"))
        model.load_official_state_dict(checkpoint["model"], source=str(file), assign=True)
        if drop_predictor and model.predictor is not None:
            model.predictor = model.predictor_dropout = None
            model.config = replace(
                config, finetuned_model=False, predictor_dropout=None, predictor_class=None
            )
            model.label_dict = None
        return model

    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict", assign: bool = False
    ) -> None:
        """Load official weights.

        By default the values are copied into the existing parameters, which keep their dtype and
        device (a bf16 checkpoint loads into a float32 model as float32). ``assign=True`` makes the
        given tensors the parameters, with their dtype and device: what a ``meta``-device model
        needs (:meth:`from_checkpoint`).

        Also accepts the names ``torch.nn.utils.parametrizations.weight_norm`` gives the positional
        convolution (``parametrizations.weight.original0/1``). Raises ValueError listing missing
        and unexpected keys, and if the per-layer copies of the shared relative position table differ.
        """
        state_dict = _official_names(state_dict)
        expected = self.state_dict().keys()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: weights do not match the BEATs cfg; missing keys: {missing or 'none'}; "
                f"unexpected keys: {unexpected or 'none'}"
            )
        shared = [key for key in state_dict if key.endswith("self_attn.relative_attention_bias.weight")]
        for key in shared[1:]:
            if not torch.equal(state_dict[key], state_dict[shared[0]]):
                raise ValueError(f"{source}: {key} differs from {shared[0]}, but all layers share one table")
        try:
            self.load_state_dict(state_dict, strict=True, assign=assign)
        except RuntimeError as error:  # shape mismatches
            raise ValueError(f"{source}: {error}") from error

    def to_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write ``{'cfg', 'model'[, 'label_dict']}`` as the official code does; returns the path."""
        checkpoint: dict[str, Any] = {
            "cfg": self.config.to_dict(),
            "model": {key: value.detach().cpu() for key, value in self.state_dict().items()},
        }
        if self.label_dict is not None:
            checkpoint["label_dict"] = self.label_dict
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)
        return path


def _chunk_all(mask: torch.Tensor, pieces: int) -> torch.Tensor:
    """The official ``forward_padding_mask``: drop the remainder, cut (B, L) into ``pieces`` equal
    chunks, a chunk is padding when all of it is. (B, L) -> (B, pieces)."""
    usable = mask.shape[1] - mask.shape[1] % pieces
    return mask[:, :usable].reshape(mask.shape[0], pieces, -1).all(-1)


def _official_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        renamed[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    return renamed


def _checkpoint_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no BEATs checkpoint at {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES)
    if len(files) != 1:
        raise ValueError(
            f"{path}: expected exactly one checkpoint file ({' or '.join(_CHECKPOINT_SUFFIXES)}), "
            f"found {[p.name for p in files] or 'none'}"
        )
    return files[0]
