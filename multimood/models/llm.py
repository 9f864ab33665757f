"""The language model: any transformers causal LM, optionally 4-bit NF4 (QLoRA) with LoRA adapters.

Paper B.2: "We apply QLoRA (Dettmers et al. 2023) with a rank of 128 and an alpha of 256 [...]
we used Zero3 (Rajbhandari et al. 2020) for multi-gpu training". The paper names no quantisation
details; we follow VideoLLaMA2's QLoRA recipe (``scripts/custom/finetune_qlora.sh``: ``--bits 4``,
``--lora_r 128 --lora_alpha 256``, ``--bf16 True``, DeepSpeed; ``train.py`` defaults to NF4 with
double quantisation), which is QLoRA's own setting. 4-bit NF4 + LoRA also trains on CPU with
bitsandbytes >= 0.50, so the same path is tested here.

Precision (docs/design/precision.md): every parameter that is not 4-bit is kept in one dtype,
``dtype`` (LoRA adapters in ``lora_dtype``, which defaults to it). peft's
``prepare_model_for_kbit_training`` is not called: besides freezing the base, which we do, it casts
every non-4-bit parameter to float32 (embeddings, ``lm_head``, norms: about 2.2 GB more at 7B, and a
float32 residual stream), which VideoLLaMA2's training script then casts back. The 4-bit weights are
packed into ``bnb_4bit_quant_storage`` (default: the compute dtype, as VideoLLaMA2), so that under
FSDP a layer holds one dtype and can be flattened and sharded.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from multimood.constants import PLACEHOLDER_TOKENS
from multimood.hub import resolve
from multimood.models.modes import evaluating
from multimood.models.trainable import Trainable, check_trainable, set_requires_grad
from multimood.tokenization import load_llm_tokenizer

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
FloatDType = Literal["float32", "bfloat16", "float16"]
QuantStorage = Literal["uint8", "float32", "bfloat16", "float16"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str, option: str = "dtype") -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown {option} {name!r}; use float32, bfloat16 or float16") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(
            f"model_class must be an import path like 'transformers.Qwen2ForCausalLM', got {path!r}"
        )
    return getattr(importlib.import_module(module), name)


def checkpoint_dtype(path: str, trust_remote_code: bool = False) -> torch.dtype:
    """The weight dtype a checkpoint's config names (``dtype``, or ``torch_dtype`` in older files).

    What ``dtype="auto"`` means, read before any weight loads (the 4-bit compute dtype follows it).
    float32 when the config names none, which is also what transformers loads without a dtype.
    """
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(path, trust_remote_code=trust_remote_code)
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    if name not in _DTYPES:
        raise ValueError(
            f"{path}: config.json names dtype {name!r}; pass dtype= float32, bfloat16 or float16"
        )
    return _DTYPES[name]


def _is_quantized(param: torch.Tensor) -> bool:
    """A bitsandbytes 4-bit weight (packed into its quant storage dtype, never cast)."""
    return type(param).__name__ == "Params4bit"


class LanguageModel(nn.Module):
    """A causal LM with its tokenizer, ready to take spliced multimodal embeddings.

    Which settings are refused (``ValueError`` before any weight loads):

    - ``load_in_4bit`` with ``trainable="full"``: 4-bit weights cannot be trained, and the base
      would silently stay frozen. A ``frozen`` 4-bit base (no adapters) is allowed: projector
      alignment (stage B) and inference train nothing in the LLM, yet need its gradients to flow.
    - ``trainable="lora"`` with ``lora_r < 1``.
    - ``load_in_4bit`` with ``bnb_4bit_compute_dtype`` different from ``dtype`` (e.g. float32
      compute with bfloat16 weights): the 4-bit layers would return float32 into a bfloat16 model,
      a float32 residual stream at twice the activation memory. Leave it unset to follow ``dtype``.

    4-bit options given without ``load_in_4bit``, and ``lora_dtype`` without ``trainable="lora"``,
    have no effect and give a warning.

    Args:
        name_or_path: Hub id, local folder or built-in name (``tiny:qwen2``) of the LM.
        tokenizer: Tokenizer name or path; defaults to ``name_or_path``. The placeholders
            ``<video>``, ``<audio>``, ``<history>`` are added as special tokens when missing
            (embedding rows are added only when the table is too small; their values never reach
            the LM because the fused model replaces those positions).
        model_class: Import path of the model class, e.g. ``transformers.Qwen2ForCausalLM`` to read
            the LM out of a VideoLLaMA2 checkpoint folder whose config names a custom
            architecture. Default: ``transformers.AutoModelForCausalLM``.
        dtype: Dtype of every parameter that is not 4-bit (embeddings, ``lm_head``, norms, and the
            whole model without ``load_in_4bit``). ``auto`` takes the dtype the checkpoint's config
            names (float32 when it names none). Paper: bfloat16 on GPUs.
        load_in_4bit: Load the base weights as 4-bit (bitsandbytes), the QLoRA base. Needs
            ``trainable`` ``lora`` or ``frozen``.
        bnb_4bit_quant_type: ``nf4`` (paper) or ``fp4``.
        bnb_4bit_use_double_quant: Quantise the quantisation constants too (paper: on).
        bnb_4bit_compute_dtype: Dtype of the 4-bit matmuls; must equal ``dtype`` (default: it).
        bnb_4bit_quant_storage: Dtype the packed 4-bit weights are stored in (default: the compute
            dtype, as VideoLLaMA2). FSDP needs it equal to ``dtype`` to shard the 4-bit base;
            ``uint8`` is bitsandbytes' own default. The stored bits, hence the outputs, are the same.
        trainable: What trains (:mod:`multimood.models.trainable`). ``lora`` (paper stage C,
            QLoRA): the base weights are frozen and LoRA adapters (peft), configured by the
            ``lora_*`` options, train. ``full``: every weight trains, no adapters (not with
            ``load_in_4bit``). ``frozen``: nothing trains and no adapters are added (projector
            alignment, stage B); gradients still flow through the LM to the parts before it.
        lora_r: LoRA rank (paper: 128).
        lora_alpha: LoRA alpha (paper: 256).
        lora_dropout: Dropout on the LoRA path.
        lora_target_modules: Module names to adapt, or ``all-linear`` (every linear layer except the
            output head, as in the paper).
        lora_dtype: Dtype of the LoRA weights; default ``dtype`` (VideoLLaMA2 casts its LoRA layers
            to bf16). ``float32`` keeps full-precision adapters inside a bf16 model (peft casts
            their input and output), for optimizers without float32 master weights: see
            docs/design/precision.md.
        gradient_checkpointing: Recompute activations in the backward pass (non-reentrant, so
            LoRA layers receive gradients even when the inputs do not require them).
        attn_implementation: Passed to transformers (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Passed to transformers; off unless you trust the checkpoint.
    """

    def __init__(
        self,
        name_or_path: str = "Qwen/Qwen2-7B-Instruct",
        tokenizer: str | None = None,
        model_class: str | None = None,
        dtype: DTypeName = "auto",
        load_in_4bit: bool = False,
        bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4",
        bnb_4bit_use_double_quant: bool = True,
        bnb_4bit_compute_dtype: FloatDType | None = None,
        bnb_4bit_quant_storage: QuantStorage | None = None,
        trainable: Trainable = "lora",
        lora_r: int = 128,
        lora_alpha: int = 256,
        lora_dropout: float = 0.05,
        lora_target_modules: str | list[str] = "all-linear",
        lora_dtype: FloatDType | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        from transformers import BitsAndBytesConfig

        # ---- settings checked before anything loads --------------------------------------------
        if dtype != "auto":
            _dtype(dtype)
        for option, value in (("bnb_4bit_compute_dtype", bnb_4bit_compute_dtype), ("lora_dtype", lora_dtype)):
            if value is not None:
                _dtype(value, option)
        if bnb_4bit_quant_storage is not None and bnb_4bit_quant_storage not in ("uint8", *_DTYPES):
            raise ValueError(
                f"unknown bnb_4bit_quant_storage {bnb_4bit_quant_storage!r}; use uint8, float32, bfloat16 or float16"
            )
        check_trainable("LanguageModel", trainable)
        if load_in_4bit and trainable == "full":
            raise ValueError(
                "LanguageModel: load_in_4bit=True cannot take trainable='full': 4-bit weights cannot be trained "
                "(the base would silently stay frozen); use trainable='lora' (QLoRA) to train the LLM, or load "
                "it unquantised to train it whole"
            )
        if trainable == "lora" and lora_r < 1:
            raise ValueError(f"LanguageModel: trainable='lora' needs lora_r >= 1, got {lora_r}")
        if not load_in_4bit:
            unused = [
                name
                for name, value in (
                    ("bnb_4bit_compute_dtype", bnb_4bit_compute_dtype),
                    ("bnb_4bit_quant_storage", bnb_4bit_quant_storage),
                )
                if value is not None
            ]
            if unused:
                warnings.warn(f"{', '.join(unused)} ignored: load_in_4bit is off", UserWarning, stacklevel=2)
        if lora_dtype is not None and trainable != "lora":
            warnings.warn(
                f"lora_dtype ignored: trainable={trainable!r} adds no LoRA adapters",
                UserWarning,
                stacklevel=2,
            )

        self.name_or_path = name_or_path
        path = resolve(name_or_path)
        weights_dtype = _dtype(dtype) if dtype != "auto" else checkpoint_dtype(path, trust_remote_code)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": weights_dtype}
        if load_in_4bit:
            compute = _dtype(bnb_4bit_compute_dtype) if bnb_4bit_compute_dtype else weights_dtype
            if compute != weights_dtype:
                source = (
                    f"dtype=auto ({_dtype_name(weights_dtype)}, from the checkpoint's config)"
                    if dtype == "auto"
                    else f"dtype={dtype}"
                )
                raise ValueError(
                    f"bnb_4bit_compute_dtype={_dtype_name(compute)} with {source}: "
                    "the 4-bit layers would compute and return a different dtype than the rest of the model "
                    "(a mixed-dtype, typically float32, residual stream); leave bnb_4bit_compute_dtype unset "
                    "or set both the same"
                )
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=bnb_4bit_quant_type,
                bnb_4bit_use_double_quant=bnb_4bit_use_double_quant,
                bnb_4bit_compute_dtype=compute,
                bnb_4bit_quant_storage=bnb_4bit_quant_storage or _dtype_name(compute),
            )
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation

        # ---- loading ---------------------------------------------------------------------------
        self.tokenizer_name = tokenizer or name_or_path  # what a data module must tokenise with
        self.tokenizer = load_llm_tokenizer(self.tokenizer_name, trust_remote_code=trust_remote_code)
        self.placeholder_ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}
        cls = _import(model_class) if model_class else _import("transformers.AutoModelForCausalLM")
        model = cls.from_pretrained(path, **kwargs)

        if len(self.tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)

        # The base trains only in "full"; under "lora" peft adds trainable adapters below.
        set_requires_grad(model, "full" if trainable == "full" else "frozen")
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if trainable == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora_r,
                    lora_alpha=lora_alpha,
                    lora_dropout=lora_dropout,
                    target_modules=lora_target_modules,
                    task_type="CAUSAL_LM",
                ),
                # peft would otherwise upcast bf16/fp16 adapters to float32; lora_dtype decides.
                autocast_adapter_dtype=False,
            )
        self.model = model
        self.is_quantized = load_in_4bit
        self.trainable = trainable
        self.has_lora = trainable == "lora"
        self.weights_dtype = weights_dtype
        self.lora_dtype = _dtype(lora_dtype) if lora_dtype else weights_dtype
        self._cast_unquantized()

    def _cast_unquantized(self) -> None:
        """Every floating parameter that is not 4-bit in ``weights_dtype`` (LoRA in ``lora_dtype``).

        The same end state as VideoLLaMA2's casts after k-bit preparation (train.py: LoRA layers,
        ``embed_tokens`` and ``lm_head`` to bf16), except norms: it puts them in float32, which
        makes every norm's output, and so the residual stream, float32. Qwen2's RMSNorm already
        computes its statistics in float32 internally; see docs/design/precision.md.
        """
        for name, param in self.model.named_parameters():
            if _is_quantized(param) or not param.is_floating_point():
                continue
            target = self.lora_dtype if "lora_" in name else self.weights_dtype
            if param.dtype != target:
                param.data = param.data.to(target)

    def _apply(self, fn: Any, recurse: bool = True) -> LanguageModel:
        """Refuse module-wide dtype casts that would reinterpret packed 4-bit weights.

        ``.float()``, ``.half()``, ``.to(dtype)`` and precision plugins cast every floating
        parameter. Packed in a float ``bnb_4bit_quant_storage``, 4-bit codes are floating too, and a
        cast to another dtype converts them as numbers: the weights are destroyed (silently when the
        size matches, bf16 -> fp16). A cast to the storage dtype itself, and any cast with uint8
        storage, are harmless and go through.
        """
        for name, param in self.named_parameters():
            if _is_quantized(param):
                probe = fn(torch.empty(0, dtype=param.dtype, device=param.device))
                if probe.dtype != param.dtype:
                    raise TypeError(
                        f"cannot cast {name} from {_dtype_name(param.dtype)} to {_dtype_name(probe.dtype)}: it "
                        "holds 4-bit codes packed in bnb_4bit_quant_storage, which a cast would destroy; build the "
                        "LanguageModel with the dtype you want (dtype, bnb_4bit_quant_storage) instead"
                    )
                break  # every 4-bit weight shares the storage dtype
        return super()._apply(fn, recurse)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings, (B, L) -> (B, L, hidden)."""
        return self.input_embeddings()(input_ids)

    def forward(self, **kwargs: Any) -> Any:
        """The wrapped model's forward (``inputs_embeds``, ``attention_mask``, ``labels``, ...)."""
        return self.model(**kwargs)

    def forward_with_head_input(self, **kwargs: Any) -> tuple[Any, torch.Tensor]:
        """:meth:`forward`, and the LM head's input: the final (normed) hidden states of the
        positions whose logits are computed (all, or those ``logits_to_keep`` keeps), (B, S', H).

        Read with a hook on the output embeddings rather than through ``output_hidden_states``:
        that returns every layer's states, and transformers' capturing hooks do not survive a model
        pickled into spawned DDP workers (``hidden_states`` comes back None there).
        """
        captured: list[torch.Tensor] = []
        head = self.model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            out = self.model(**kwargs)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"{self.name_or_path}: the LM head was not called in the forward pass")
        return out, captured[-1]

    @property
    def has_adapter(self) -> bool:
        """Whether the LM carries LoRA adapters (``trainable="lora"``)."""
        return hasattr(self.model, "disable_adapter")

    @contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Run the block on the base weights alone (peft's ``disable_adapter``): the RL stages'
        reference model, without a second copy of the LM. Fails when there is no adapter."""
        if not self.has_adapter:
            raise ValueError(
                "the LM has no LoRA adapter to disable (trainable is not 'lora'): the RL reference "
                "model is the base with the adapter disabled"
            )
        with self.model.disable_adapter():
            yield

    @torch.no_grad()
    def generate(self, **kwargs: Any) -> Any:
        """The wrapped model's ``generate``; with ``inputs_embeds`` it returns only new tokens.

        Always in eval mode, with the KV cache (every submodule's mode is restored after). In train
        mode with gradient checkpointing, transformers turns the cache off while ``generate`` still
        feeds one new token per step, so each step after the first would see no context; and LoRA
        dropout would make rollouts differ from evaluation. RL rollouts are generated inside
        training steps, so this matters.
        """
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        kwargs.setdefault("use_cache", True)
        with evaluating(self):
            return self.model.generate(**kwargs)
