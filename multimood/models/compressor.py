"""ConvCompressor: a Mamba backbone that turns a dialogue history into one LLM embedding per turn.

Paper section 3.2 ("Conversation Compressor") and figure 3: every history turn U_i (role,
utterance, emotion label, strategy label) is followed by a ``<MEM>`` token,
``H' = U_1 <MEM> U_2 <MEM> ... U_T <MEM>``; Mamba reads H'; the hidden states at the ``<MEM>``
positions go through a trainable memory projector P_H to the LLM width and replace the
``<history>`` placeholder of the prompt (appendix A.1). Backbone: Mamba-370M (appendix B.2).

This module is the model half, ids -> memory embeddings (:class:`MambaHistoryCompressor`). The text
-> ids half, which needs only a tokenizer and runs in DataLoader workers, is
:mod:`multimood.data.history` (:class:`~multimood.data.history.HistoryTokenizer`).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from multimood.data.history import DEFAULT_HISTORY_TOKENIZER, HistoryIds, HistoryTokenizer
from multimood.models.modes import eval_frozen_parts
from multimood.models.trainable import (
    PROJECTOR_MODES,
    PROJECTOR_NO_LORA,
    Trainable,
    check_trainable,
    set_requires_grad,
)

# The paper's backbone (appendix B.2): the same name as the history tokenizer's default, because
# Mamba must read its own tokenizer's ids.
PAPER_BACKBONE = DEFAULT_HISTORY_TOKENIZER

# LoRA may only target linear layers that transformers' Mamba mixer *calls as modules* on every code
# path. ``dt_proj.weight`` is read directly (``dt_proj.weight @ x``), so an adapter on it would be
# silently bypassed; peft itself rejects ``out_proj`` and ``conv1d`` for Mamba (the fused CUDA kernel
# reads their weights directly).
DEFAULT_LORA_TARGETS = ("in_proj", "x_proj")
_LORA_FORBIDDEN = {
    "dt_proj": "the mixer reads dt_proj.weight directly, so a LoRA adapter on it would never be applied",
    "out_proj": "peft rejects it for Mamba: the fused CUDA kernel reads out_proj.weight directly",
    "conv1d": "peft rejects it for Mamba: the convolution weight is passed to the kernels directly",
}
# Kept in full precision under 4-bit loading: the mixer multiplies by ``dt_proj.weight`` itself,
# which fails on bitsandbytes' packed 4-bit storage.
_NOT_QUANTIZED = ["dt_proj"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ProjectorType = Literal["linear", "mlp2x_gelu"]


# --------------------------------------------------------------------------------------------------
# Backbone configuration
# --------------------------------------------------------------------------------------------------


def paper_backbone_config(**overrides: Any):
    """The ``MambaConfig`` of ``state-spaces/mamba-370m-hf``, built without downloading anything.

    Numbers from that checkpoint's config.json (checked against the hub copy): hidden 1024, 48
    layers, SSM state 16, expand 2 (inner width 2048), conv kernel 4, dt rank ceil(1024/16) = 64,
    GPT-NeoX vocabulary padded to 50,280 rows, RMSNorm, residual in fp32, no linear biases, conv
    bias; bos = eos = pad = 0 (``<|endoftext|>``).
    """
    from transformers import MambaConfig

    values: dict[str, Any] = {
        "vocab_size": 50280,
        "hidden_size": 1024,
        "num_hidden_layers": 48,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
        "time_step_rank": math.ceil(1024 / 16),
        "use_bias": False,
        "use_conv_bias": True,
        "residual_in_fp32": True,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
    }
    values.update(overrides)
    return MambaConfig(**values)


def mamba_kernels_available() -> bool:
    """True when the CUDA kernels (``mamba_ssm`` + ``causal_conv1d``) can run: a GPU and both packages."""
    return (
        torch.cuda.is_available()
        and importlib.util.find_spec("mamba_ssm") is not None
        and importlib.util.find_spec("causal_conv1d") is not None
    )


def _resolve_use_mambapy(use_mambapy: bool | None) -> bool:
    # Without the CUDA kernels transformers falls back to a sequential scan, far too slow to train
    # on CPU; mambapy's parallel scan gives the same outputs (docs/design/compressor.md).
    wanted = (not mamba_kernels_available()) if use_mambapy is None else use_mambapy
    if wanted and importlib.util.find_spec("mambapy") is None:
        raise ImportError(
            "use_mambapy is on (explicitly, or because the mamba_ssm/causal_conv1d CUDA kernels are "
            "unavailable) but the 'mambapy' package is not installed; install mambapy, or pass "
            "use_mambapy=False to accept transformers' much slower sequential scan"
        )
    return wanted


def _make_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    if kind == "mlp2x_gelu":
        return nn.Sequential(
            nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features)
        )
    raise ValueError(f"unknown projector {kind!r}; expected 'linear' or 'mlp2x_gelu'")


def _count(params) -> int:
    return sum(p.numel() for p in params)


# --------------------------------------------------------------------------------------------------
# The compressor
# --------------------------------------------------------------------------------------------------


class MambaHistoryCompressor(nn.Module):
    """ConvCompressor (paper 3.2, fig. 3): Mamba over ``U_1<MEM>...U_T<MEM>``, ``<MEM>`` states -> P_H.

    Mamba reads its own tokenizer's ids (GPT-NeoX for ``state-spaces/mamba-370m-hf``; the authors'
    code fed it Qwen2 ids), ``<MEM>`` is one learned vector substituted at the marker positions (so
    it trains also on a 4-bit + LoRA backbone), and histories are right-padded (exact on every Mamba
    code path, fused CUDA kernel included). Why, in full: ``docs/design/compressor.md``.

    **Output.** ``forward`` returns one embedding per kept turn, ``(B, T_max, llm_hidden_size)``,
    left-aligned, with a ``(B, T_max)`` mask; a sample without turns has an all-False row.

    Args:
        llm_hidden_size: width of the LLM's input embeddings, the output width of P_H (3584 for the
            Qwen2-7B of VideoLLaMA2). First, so that a factory (``functools.partial`` or a YAML
            ``class_path`` without it) can be completed with the LLM width by the fused model.
        backbone: Mamba checkpoint (hub id, local folder, or ``tiny:mamba`` in tests), loaded with
            ``MambaModel.from_pretrained``; the paper's is ``state-spaces/mamba-370m-hf``.
        tokenizer: tokenizer feeding Mamba; ``None`` means the backbone's own (recommended).
        projector: memory projector P_H. ``linear`` (default) is what the authors' released code
            uses (one ``nn.Linear``; the paper only says "trainable memory projector");
            ``mlp2x_gelu`` is Linear-GELU-Linear.
        backbone_trainable: what trains in the Mamba backbone (:mod:`multimood.models.trainable`):
            ``full`` (every backbone weight; needs ``lora_r=0``), ``lora`` (paper stage A: the base
            frozen, LoRA adapters of rank ``lora_r`` train) or ``frozen`` (stages C/D). A ``frozen``
            backbone with ``lora_r > 0`` keeps (frozen) adapters, so the weights of a stage A run
            with adapters load into it; with ``lora_r=0`` it has none.
        projector_trainable: P_H and the learned ``<MEM>`` vector together: ``full`` (stage A) or
            ``frozen`` (stages C/D: "keeping [...] ConvCom frozen", paper B.2).
        lora_r: rank of the LoRA adapters on the backbone; 0 means no adapters. Required (> 0) by
            ``backbone_trainable="lora"``, refused by ``full``. Paper B.2: 64.
        lora_alpha: LoRA alpha. Paper B.2: 128.
        lora_dropout: LoRA dropout (not given in the paper).
        lora_target_modules: mixer linear layers that get adapters; ``None`` means ``in_proj`` and
            ``x_proj``, the ones the mixer calls as modules on every path (``dt_proj``,
            ``out_proj``, ``conv1d`` are refused, see ``_LORA_FORBIDDEN``).
        load_in_4bit: load the backbone's linear layers in NF4 with double quantisation
            (bitsandbytes; paper B.2); ``dt_proj`` stays in full precision. Needs
            ``backbone_trainable`` ``lora`` or ``frozen``: 4-bit weights cannot be trained directly.
        dtype: dtype of every unquantised compressor weight: ``float32``, ``bfloat16`` or
            ``float16``. The backbone (its 4-bit layers compute in it), LoRA adapters, P_H and the
            ``<MEM>`` vector share it, and memory embeddings come out in it. 4-bit weights stay
            packed in uint8 (a 370M backbone needs no FSDP sharding, and uint8 packing survives
            module-wide dtype casts). Training P_H, ``<MEM>`` or adapters in bf16 needs float32
            master weights in the optimizer (docs/design/precision.md); float32 weights under bf16
            autocast are the simple safe setting for stage A.
        use_mambapy: use mambapy's parallel scan when the CUDA kernels are absent; ``None`` (auto)
            turns it on exactly when the ``mamba_ssm``/``causal_conv1d`` kernels are unavailable.
        gradient_checkpointing: recompute each Mamba block in backward (non-reentrant).
        max_tokens: token budget of one history, ``<MEM>`` ids included (used by
            :attr:`history_tokenizer`); oldest whole turns are dropped beyond it.
    """

    def __init__(
        self,
        llm_hidden_size: int = 3584,
        backbone: str = PAPER_BACKBONE,
        tokenizer: str | None = None,
        projector: ProjectorType = "linear",
        backbone_trainable: Trainable = "full",
        projector_trainable: Trainable = "full",
        lora_r: int = 0,
        lora_alpha: int = 128,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        load_in_4bit: bool = False,
        dtype: str = "float32",
        use_mambapy: bool | None = None,
        gradient_checkpointing: bool = False,
        max_tokens: int = 4096,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if dtype != "float32" and _resolve_use_mambapy(use_mambapy):
            # transformers 5.23's reference scan (modeling_mamba.selective_scan, mambapy branch)
            # multiplies the float32 scan states by C in the weights' dtype and raises a dtype error.
            raise ValueError(
                f"dtype={dtype} cannot run with mambapy's scan (transformers' mambapy path multiplies float32 "
                "states by low-precision weights and fails): use dtype=float32 (bf16 autocast still applies), "
                "or the mamba_ssm/causal_conv1d CUDA kernels, or use_mambapy=False for the slow sequential scan"
            )
        self._check_trainable(backbone_trainable, projector_trainable, lora_r)
        if load_in_4bit and backbone_trainable == "full":
            raise ValueError(
                "MambaHistoryCompressor: load_in_4bit=True cannot take backbone_trainable='full': 4-bit "
                "weights cannot be trained; use backbone_trainable='lora' (with lora_r > 0) or 'frozen'"
            )
        targets = list(DEFAULT_LORA_TARGETS if lora_target_modules is None else lora_target_modules)
        if lora_r > 0:
            bad = {t: _LORA_FORBIDDEN[t] for t in targets if t in _LORA_FORBIDDEN}
            if bad:
                raise ValueError(f"lora_target_modules {sorted(bad)} cannot take LoRA on Mamba: {bad}")
            if not targets:
                raise ValueError("lora_target_modules is empty while lora_r > 0")

        self.history_tokenizer = HistoryTokenizer(tokenizer or backbone, max_tokens=max_tokens)
        model = self._load_backbone(
            backbone, dtype=_DTYPES[dtype], load_in_4bit=load_in_4bit, use_mambapy=use_mambapy
        )
        self._assemble(
            model,
            llm_hidden_size=llm_hidden_size,
            projector=projector,
            mem_token_id=self.history_tokenizer.mem_token_id,
        )
        if lora_r > 0:
            self._add_lora(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=targets)
            # peft creates adapters in float32 whatever the base dtype: one dtype for the module.
            for name, param in self.backbone.named_parameters():
                if "lora_" in name:
                    param.data = param.data.to(_DTYPES[dtype])
        if gradient_checkpointing:
            base = self.base_backbone
            # transformers >= 5.2x renamed gradient checkpointing to activation checkpointing.
            if hasattr(base, "activation_checkpointing_enable"):
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._set_trainable(backbone_trainable, projector_trainable)

    # ---- construction --------------------------------------------------------------------------

    @staticmethod
    def _load_backbone(name: str, dtype: torch.dtype, load_in_4bit: bool, use_mambapy: bool | None):
        from transformers import MambaModel

        from multimood.hub import resolve

        kwargs: dict[str, Any] = {"dtype": dtype, "use_mambapy": _resolve_use_mambapy(use_mambapy)}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
                llm_int8_skip_modules=list(_NOT_QUANTIZED),
            )
        # A state-spaces/mamba-*-hf checkpoint is a MambaForCausalLM; MambaModel loads its
        # ``backbone.*`` weights and leaves the LM head out.
        return MambaModel.from_pretrained(resolve(name), **kwargs)

    def _assemble(self, model: nn.Module, llm_hidden_size: int, projector: str, mem_token_id: int) -> None:
        """Attach the backbone, the learned ``<MEM>`` vector and P_H (shared by __init__ and meta builds)."""
        if llm_hidden_size < 1:
            raise ValueError(f"llm_hidden_size must be >= 1, got {llm_hidden_size}")
        self.backbone: nn.Module = model
        self.mem_token_id = mem_token_id
        hidden = model.config.hidden_size
        table = model.get_input_embeddings().weight
        # The embedding table is never quantised: its dtype is the backbone's ``dtype``, which the
        # <MEM> vector and P_H share.
        device, dtype = table.device, table.dtype
        # New-token embeddings start at the mean of the pretrained rows: a point the backbone has
        # seen inputs around, rather than a random direction of arbitrary scale.
        init = torch.zeros(hidden) if device.type == "meta" else table.detach().float().mean(dim=0)
        self.mem_embedding = nn.Parameter(init.to(device=device, dtype=dtype))
        self.projector = _make_projector(projector, hidden, llm_hidden_size).to(device=device, dtype=dtype)
        self.llm_hidden_size = llm_hidden_size
        # LoRA or 4-bit weights must not reach the fused CUDA training kernel (mamba_inner_fn),
        # which reads x_proj/out_proj weights directly: it would skip adapters and misread 4-bit
        # storage. See train().
        self._avoid_fused_kernel = bool(getattr(model, "is_loaded_in_4bit", False))

    def _add_lora(self, r: int, alpha: int, dropout: float, targets: list[str]) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers method that transformers 5.2x renamed; nothing for us to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.backbone = get_peft_model(self.backbone, config)
        self._avoid_fused_kernel = True

    @staticmethod
    def _check_trainable(backbone_trainable: str, projector_trainable: str, lora_r: int) -> None:
        name = "MambaHistoryCompressor"
        check_trainable(name, backbone_trainable, option="backbone_trainable")
        check_trainable(
            name,
            projector_trainable,
            allowed=PROJECTOR_MODES,
            option="projector_trainable",
            why=PROJECTOR_NO_LORA,
        )
        if lora_r < 0:
            raise ValueError(f"{name}: lora_r must be >= 0 (0 means no adapters), got {lora_r}")
        if backbone_trainable == "lora" and lora_r == 0:
            raise ValueError(f"{name}: backbone_trainable='lora' needs lora_r > 0 (paper B.2: 64)")
        if backbone_trainable == "full" and lora_r > 0:
            raise ValueError(
                f"{name}: backbone_trainable='full' trains the backbone weights themselves, but lora_r={lora_r} "
                "adds adapters; use backbone_trainable='lora' to train adapters, or lora_r=0"
            )

    def _set_trainable(self, backbone_trainable: Trainable, projector_trainable: Trainable) -> None:
        """Apply the modes; peft has already frozen the base under adapters."""
        self.backbone_trainable = backbone_trainable
        self.projector_trainable = projector_trainable
        if backbone_trainable == "frozen":
            set_requires_grad(self.backbone, "frozen")
        elif backbone_trainable == "full":
            set_requires_grad(self.backbone, "full")
        # The <MEM> vector is an input embedding the projector's training learns with (it stands in
        # for a new vocabulary row), so it follows P_H, whatever the backbone does.
        set_requires_grad(self.projector, projector_trainable)
        self.mem_embedding.requires_grad_(projector_trainable == "full")

    @property
    def base_backbone(self) -> nn.Module:
        """The ``MambaModel`` itself (under the peft wrapper when LoRA is on)."""
        get_base = getattr(self.backbone, "get_base_model", None)
        return get_base() if callable(get_base) else self.backbone

    @property
    def backbone_hidden_size(self) -> int:
        return int(self.base_backbone.config.hidden_size)

    @classmethod
    def paper_config_on_meta(
        cls,
        llm_hidden_size: int = 3584,
        projector: ProjectorType = "linear",
        lora_r: int = 0,
        backbone_config: Any = None,
        backbone_trainable: Trainable = "full",
        projector_trainable: Trainable = "full",
    ) -> MambaHistoryCompressor:
        """The paper's compressor (Mamba-370M + P_H) on the ``meta`` device: shapes, no weights, no download.

        For parameter counts and memory planning (:meth:`parameter_counts`). ``lora_r > 0`` adds the
        paper's adapters (alpha 2r) on the default targets. ``backbone_config`` (a ``MambaConfig``)
        replaces Mamba-370M's, e.g. one read from a local folder. The training modes mean what they
        mean in the constructor, and are checked the same way. Not runnable; no tokenizer is attached.
        """
        cls._check_trainable(backbone_trainable, projector_trainable, lora_r)
        from transformers import MambaModel

        config = backbone_config if backbone_config is not None else paper_backbone_config()
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj.history_tokenizer = None
        with torch.device("meta"):
            model = MambaModel(config)
        # The id <MEM> would get as the first token added to the tokenizer (50,277 for GPT-NeoX);
        # on the meta device it only has to lie outside the vocabulary.
        mem_token_id = 50277 if backbone_config is None else config.vocab_size
        obj._assemble(model, llm_hidden_size=llm_hidden_size, projector=projector, mem_token_id=mem_token_id)
        if lora_r > 0:
            obj._add_lora(r=lora_r, alpha=2 * lora_r, dropout=0.0, targets=list(DEFAULT_LORA_TARGETS))
        obj._set_trainable(backbone_trainable, projector_trainable)
        return obj

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: ``backbone`` (pretrained weights; a 4-bit weight counts as its logical
        size), ``lora``, ``projector``, ``mem_embedding``, ``trainable`` and ``total``."""
        lora = _count(p for n, p in self.backbone.named_parameters() if "lora_" in n)
        backbone = 0
        for name, p in self.backbone.named_parameters():
            if "lora_" in name:
                continue
            shape = getattr(getattr(p, "quant_state", None), "shape", None)
            backbone += math.prod(shape) if shape is not None else p.numel()
        projector = _count(self.projector.parameters())
        counts = {
            "backbone": backbone,
            "lora": lora,
            "projector": projector,
            "mem_embedding": self.mem_embedding.numel(),
            "trainable": _count(p for p in self.parameters() if p.requires_grad),
        }
        counts["total"] = backbone + lora + projector + counts["mem_embedding"]
        return counts

    # ---- running -------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> MambaHistoryCompressor:
        """Train mode, except for frozen parts (:func:`~multimood.models.modes.eval_frozen_parts`).

        A backbone frozen after stage A keeps its LoRA adapters; in train mode their dropout would
        make two passes over the same history differ. Frozen parts therefore run in eval mode.
        """
        super().train(mode)
        if mode:
            eval_frozen_parts(self)
        if mode and self.training and self._avoid_fused_kernel:
            # The mixer takes the fused kernel only when ``self.training`` and no cache; its other
            # path (still CUDA kernels for conv and scan, when installed) calls x_proj/out_proj as
            # modules. Only the mixers' own flag changes: LoRA dropout inside them stays in train mode.
            from transformers.models.mamba.modeling_mamba import MambaMixer

            for module in self.base_backbone.modules():
                if isinstance(module, MambaMixer):
                    module.training = False
        return self

    def tokenize(self, turns: Sequence[str]) -> HistoryIds:
        """``U_1<MEM>...U_k<MEM>`` ids for formatted turns (oldest first), within ``max_tokens``."""
        if self.history_tokenizer is None:
            raise RuntimeError("this compressor was built without a tokenizer (meta-device build)")
        return self.history_tokenizer(turns)

    def check_history_tokenizer(self, tokenizer: Any) -> None:
        """Raise ``ValueError`` unless ``tokenizer`` (the data side's
        :class:`~multimood.data.history.HistoryTokenizer`) gives ids this compressor reads right.

        A different ``<MEM>`` id would make every history read as zero turns; a different vocabulary
        (another tokenizer) would feed Mamba ids it was not trained on.
        """
        theirs = getattr(tokenizer, "mem_token_id", None)
        name = getattr(tokenizer, "name", type(tokenizer).__name__)
        if theirs != self.mem_token_id:
            raise ValueError(
                f"history tokenizer {name!r} uses <MEM> id {theirs}, this compressor expects "
                f"{self.mem_token_id}: build the data module's history tokenizer from the compressor's "
                "tokenizer (the backbone's by default)"
            )
        ours = self.history_tokenizer
        if ours is None:
            return
        mine, other = ours.tokenizer, getattr(tokenizer, "tokenizer", None)
        if other is not None and (len(other) != len(mine) or other.get_vocab() != mine.get_vocab()):
            raise ValueError(
                f"history tokenizer {name!r} has another vocabulary ({len(other)} ids) than this "
                f"compressor's {ours.name!r} ({len(mine)} ids)"
            )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory embeddings E'_H, one per ``<MEM>`` (= per kept turn), in turn order.

        input_ids, attention_mask: (B, L), right-padded (:func:`pad_history_batch`).
        Returns ``memory`` (B, T_max, llm_hidden_size), zero at padded slots, and ``memory_mask``
        (B, T_max) bool, True for real turns; T_max is the largest number of ``<MEM>`` in a row.

        Every non-empty row must end with this compressor's ``<MEM>`` id (each turn is closed by
        one); a row that does not was made by another history tokenizer and is refused.

        When no row has a turn and gradients are on, the trainable parts still run, on a lone
        ``<MEM>``, and the (empty) memory is an empty slice of that result: the values are the same,
        but under DDP every trainable parameter takes part in the step.
        """
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        valid = attention_mask.bool()
        if valid.shape[1] and (valid[:, 1:] & ~valid[:, :-1]).any():
            raise ValueError(
                "attention_mask must be right-padded (1s then 0s in every row); see pad_history_batch"
            )
        self._check_rows_end_with_mem(input_ids, valid)
        batch = input_ids.shape[0]
        mem_mask = (input_ids == self.mem_token_id) & valid  # (B, L)
        counts = mem_mask.sum(dim=1)  # (B,)
        t_max = int(counts.max()) if batch else 0
        memory_mask = torch.arange(t_max, device=input_ids.device)[None, :] < counts[:, None]  # (B, T_max)
        proj_weight = next(self.projector.parameters())
        memory = proj_weight.new_zeros(batch, t_max, self.llm_hidden_size)
        if t_max == 0:  # no turn anywhere in the batch
            if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
                return memory, memory_mask
            lone = torch.full((1, 1), self.mem_token_id, dtype=input_ids.dtype, device=input_ids.device)
            states = self._states_at_mem(lone, torch.ones_like(lone), lone == self.mem_token_id)  # (1, H)
            empty = self.projector(states.to(proj_weight.dtype))[:0]  # (0, llm_hidden), in the graph
            return empty[None].expand(batch, 0, self.llm_hidden_size), memory_mask

        states = self._states_at_mem(input_ids, attention_mask, mem_mask).to(
            proj_weight.dtype
        )  # (sum counts, H)
        memory[memory_mask] = self.projector(states)
        return memory, memory_mask

    def _check_rows_end_with_mem(self, input_ids: torch.Tensor, valid: torch.Tensor) -> None:
        lengths = valid.sum(dim=1)  # (B,)
        rows = lengths > 0
        if not rows.any():
            return
        last = input_ids[rows].gather(1, (lengths[rows] - 1)[:, None]).squeeze(1)  # (rows,)
        wrong = last != self.mem_token_id
        if wrong.any():
            row = int(rows.nonzero().flatten()[wrong.nonzero()[0]])
            raise ValueError(
                f"history row {row} ends with id {int(last[wrong][0])}, not this compressor's <MEM> id "
                f"{self.mem_token_id}: every turn is closed by <MEM>, so the ids come from another "
                "history tokenizer; give the data module the compressor's (see check_history_tokenizer)"
            )

    def _states_at_mem(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mem_mask: torch.Tensor
    ) -> torch.Tensor:
        """Backbone hidden states at the ``<MEM>`` positions, row after row: (sum of counts, H)."""
        base = self.base_backbone
        embed = base.get_input_embeddings()
        valid = attention_mask.bool()
        # <MEM> and pad positions are looked up as id 0 (always in range) and then replaced or ignored.
        safe_ids = input_ids.masked_fill(mem_mask | ~valid, 0)
        embeds = embed(safe_ids)  # (B, L, H)
        embeds = torch.where(mem_mask[..., None], self.mem_embedding.to(embeds.dtype), embeds)
        hidden = self.backbone(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (B, L, H)
        # hidden[mem_mask] lists each row's <MEM> states in order, rows one after another: exactly
        # the order in which memory[memory_mask] fills each row's first counts[b] slots.
        return hidden[mem_mask]
