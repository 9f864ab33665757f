"""The language model: any transformers causal LM, optionally 4-bit NF4 (QLoRA) with LoRA adapters.

Paper B.2: QLoRA with rank 128 and alpha 256 on all linear layers of the LLM, NF4 4-bit base with
double quantisation, gradient checkpointing, bf16 on GPU. 4-bit NF4 + LoRA also trains on CPU with
bitsandbytes >= 0.50, so the same path is tested here.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import torch
from torch import nn

from multimood.constants import PLACEHOLDER_TOKENS
from multimood.hub import resolve
from multimood.models.modes import evaluating
from multimood.tokenization import load_llm_tokenizer

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(
            f"model_class must be an import path like 'transformers.Qwen2ForCausalLM', got {path!r}"
        )
    return getattr(importlib.import_module(module), name)


class LanguageModel(nn.Module):
    """A causal LM with its tokenizer, ready to take spliced multimodal embeddings.

    Args:
        name_or_path: Hub id, local folder or built-in name (``tiny:qwen2``) of the LM.
        tokenizer: Tokenizer name or path; defaults to ``name_or_path``. The placeholders
            ``<video>``, ``<audio>``, ``<history>`` are added as special tokens when missing
            (embedding rows are added only when the table is too small; their values never reach
            the LM because the fused model replaces those positions).
        model_class: Import path of the model class, e.g. ``transformers.Qwen2ForCausalLM`` to read
            the LM out of a VideoLLaMA2 checkpoint folder whose config names a custom
            architecture. Default: ``transformers.AutoModelForCausalLM``.
        dtype: Weight dtype of the non-quantised parts; ``auto`` takes the checkpoint's.
        load_in_4bit: Load the base weights as 4-bit (bitsandbytes), the QLoRA base.
        bnb_4bit_quant_type: ``nf4`` (paper) or ``fp4``.
        bnb_4bit_use_double_quant: Quantise the quantisation constants too (paper: on).
        bnb_4bit_compute_dtype: Dtype of the 4-bit matmuls; defaults to ``dtype`` (float32 when
            ``dtype`` is ``auto``). Use bfloat16 on GPUs.
        lora: Add LoRA adapters (peft). With ``freeze_base`` only they train.
        lora_r: LoRA rank (paper: 128).
        lora_alpha: LoRA alpha (paper: 256).
        lora_dropout: Dropout on the LoRA path.
        lora_target_modules: Module names to adapt, or ``all-linear`` (every linear layer except the
            output head, as in the paper).
        freeze_base: Freeze the base weights (the usual QLoRA setting). Without LoRA and with
            ``freeze_base=False`` the whole LM trains.
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
        bnb_4bit_compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None,
        lora: bool = False,
        lora_r: int = 128,
        lora_alpha: int = 256,
        lora_dropout: float = 0.05,
        lora_target_modules: str | list[str] = "all-linear",
        freeze_base: bool = True,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        from transformers import BitsAndBytesConfig

        self.name_or_path = name_or_path
        path = resolve(name_or_path)
        self.tokenizer = load_llm_tokenizer(tokenizer or name_or_path, trust_remote_code=trust_remote_code)
        self.placeholder_ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}

        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if dtype != "auto":
            kwargs["dtype"] = _dtype(dtype)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if load_in_4bit:
            compute = bnb_4bit_compute_dtype or (dtype if dtype != "auto" else "float32")
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=bnb_4bit_quant_type,
                bnb_4bit_use_double_quant=bnb_4bit_use_double_quant,
                bnb_4bit_compute_dtype=_dtype(compute),
            )
        cls = _import(model_class) if model_class else _import("transformers.AutoModelForCausalLM")
        model = cls.from_pretrained(path, **kwargs)

        if len(self.tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)

        if freeze_base:
            model.requires_grad_(False)
        if load_in_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if lora:
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
            )
        self.model = model
        self.is_quantized = load_in_4bit
        self.has_lora = lora

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
