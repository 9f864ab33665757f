"""Export a trained model for use outside this project: PEFT adapters, a merged LLM, the other parts.

Three folders, each loadable without MultiMood's training code (docs/design/export.md):

- :func:`export_adapter`: the LLM's LoRA adapters in PEFT's format plus the tokenizer (which carries
  the ``<video>``/``<audio>``/``<history>`` placeholders), for ``PeftModel.from_pretrained(base, folder)``.
- :func:`export_merged`: a plain transformers folder with the adapters merged into the base weights,
  for ``AutoModelForCausalLM.from_pretrained(folder)`` with no peft.
- :func:`export_parts`: the connector, projectors and compressor as one safetensors file with a JSON
  manifest; :func:`load_parts` puts them back into a fused model built from the same config.

Nothing here changes the model it exports: merged weights are computed beside the live ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimood.models.llm import _DTYPES, LanguageModel, _dtype_name, _is_quantized
from multimood.models.multimood import MultiMoodModel

PARTS_FORMAT = "multimood-parts-v1"
PARTS_FILE = "parts.safetensors"
MANIFEST_FILE = "manifest.json"
# Parts whose weights no hub checkpoint holds: trained by stages A and B from scratch (or, for the
# compressor's backbone, possibly trained whole in stage A). Towers are added only when they train.
DEFAULT_PARTS = ("video_connector", "audio_projector", "history_compressor")
TOWERS = ("vision_tower", "audio_tower")


# ----------------------------------------------------------------------------------- adapters
def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _base_vocab_size(llm: LanguageModel) -> int | None:
    """The vocabulary size the base checkpoint's config names (None when it cannot be read)."""
    from transformers import PretrainedConfig

    from multimood.hub import resolve

    base = getattr(getattr(llm.model, "peft_config", {}).get("default"), "base_model_name_or_path", None)
    try:
        config, _ = PretrainedConfig.get_config_dict(base or resolve(llm.name_or_path))
    except OSError:
        return None
    text = config.get("text_config", config)
    return text.get("vocab_size")


def export_adapter(llm: LanguageModel, out_dir: str | Path) -> Path:
    """Write the LLM's LoRA adapters in PEFT format, and its tokenizer, to ``out_dir``.

    The folder holds ``adapter_config.json``, ``adapter_model.safetensors`` and the tokenizer files.
    Load it over the same base: ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
    out_dir)``. When :class:`LanguageModel` had to grow the embedding table for the placeholder
    tokens, the (resized) input and output embeddings are saved too, and the base must be resized
    to ``len(tokenizer)`` before loading.

    Args:
        llm: A language model built with ``trainable="lora"`` (any base: full precision or 4-bit).
        out_dir: Folder to write; created when missing.

    Raises:
        ValueError: the LLM has no LoRA adapters (``trainable`` ``frozen`` or ``full``).
    """
    if not getattr(llm, "has_lora", False) or not _lora_layers(llm.model):
        raise ValueError(
            f"export_adapter: the LLM has no LoRA adapters (trainable={getattr(llm, 'trainable', None)!r}); "
            "only a trainable='lora' LLM has adapters to export. A fully trained LLM is exported with "
            "export_merged (a plain transformers folder)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_vocab = _base_vocab_size(llm)
    rows = llm.model.get_input_embeddings().num_embeddings
    # peft's "auto" asks the hub whether the vocabulary changed (and assumes not when offline). The
    # table differs from the base's only if LanguageModel resized it for the placeholder tokens, and
    # then it has exactly one row per token: when the base config cannot be read, that is the sign.
    resized = rows != base_vocab if base_vocab is not None else rows == len(llm.tokenizer)
    llm.model.save_pretrained(out, save_embedding_layers=resized, safe_serialization=True)
    llm.tokenizer.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------- merged
def _as_dtype(dtype: torch.dtype | str | None, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"export_merged: dtype {dtype} is not float32, bfloat16 or float16")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"export_merged: unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return _DTYPES[dtype]


def _dequantized(param: torch.Tensor) -> torch.Tensor:
    import bitsandbytes as bnb

    return bnb.functional.dequantize_4bit(param.data, param.quant_state)


def _lora_delta(name: str, layer: nn.Module) -> torch.Tensor:
    """scaling * B @ A summed over the active adapters, in float32 (out, in) like ``nn.Linear.weight``."""
    delta = None
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        if getattr(layer, "use_dora", {}).get(adapter, False):
            raise ValueError(
                f"export_merged: {name} uses DoRA, whose merge is not a plain sum; not supported"
            )
        a, b = layer.lora_A[adapter], layer.lora_B[adapter]
        if not isinstance(a, nn.Linear) or b.bias is not None:
            raise ValueError(
                f"export_merged: {name} has a {type(a).__name__} LoRA adapter"
                f"{' with a bias' if b.bias is not None else ''}; only linear adapters without bias merge here"
            )
        term = (b.weight.float() @ a.weight.float()) * layer.scaling[adapter]
        if getattr(layer, "fan_in_fan_out", False):
            term = term.T
        delta = term if delta is None else delta + term
    if delta is None:
        raise ValueError(f"export_merged: {name} has no active LoRA adapter")
    return delta


def check_mergeable(llm: LanguageModel, dequantize_4bit: bool = False) -> None:
    """Refuse (``ValueError``) a 4-bit base unless ``dequantize_4bit``: see :func:`export_merged`."""
    if getattr(llm, "is_quantized", False) and not dequantize_4bit:
        raise ValueError(
            "export_merged: the LLM's base is 4-bit (load_in_4bit=True), and adapters cannot be merged into "
            "4-bit weights exactly. Pass dequantize_4bit=True (fit.py: --export_dequantize_4bit true) to write "
            "dequantised NF4 weights + adapters in `dtype` (the function that was trained, up to one rounding "
            "per weight), or use the adapter folder over the same 4-bit base instead (docs/design/export.md)"
        )


def merged_state_dict(
    llm: LanguageModel, dtype: torch.dtype | str | None = None, dequantize_4bit: bool = False
) -> dict[str, torch.Tensor]:
    """The base model's state dict with every LoRA adapter merged in, without touching ``llm``.

    Keys are those of a plain transformers checkpoint of the base (``model.layers.0.self_attn.q_proj.weight``).
    Merges are computed in float32 (W + scaling * B @ A) and rounded once to ``dtype``. Tensors that
    several keys share (tied input and output embeddings) stay shared.
    """
    target = _as_dtype(dtype, llm.weights_dtype)
    base = llm.model.get_base_model() if llm.has_lora else llm.model
    loras = _lora_layers(base)
    if any(getattr(layer, "merged", False) for layer in loras.values()):
        raise ValueError(
            "export_merged: the adapters are merged into the live weights (merge_adapter was called); "
            "unmerge them first, or the merge would count them twice"
        )
    check_mergeable(llm, dequantize_4bit)
    converted: dict[int, torch.Tensor] = {}  # id(source) -> converted, so tied weights stay tied

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        key = id(tensor)
        if key not in converted:
            value = _dequantized(tensor) if _is_quantized(tensor) else tensor.detach()
            converted[key] = value.to(target) if value.is_floating_point() else value.clone()
        return converted[key]

    state: dict[str, torch.Tensor] = {}
    inside_lora = tuple(f"{name}." for name in loras)
    for module_name, module in base.named_modules():
        if module_name.startswith(inside_lora):
            continue  # base_layer, lora_A, lora_B, dropout: folded into the LoRA layer's own keys
        prefix = f"{module_name}." if module_name else ""
        if module_name in loras:
            inner = module.get_base_layer()
            weight = _dequantized(inner.weight) if _is_quantized(inner.weight) else inner.weight.detach()
            state[prefix + "weight"] = (weight.float() + _lora_delta(module_name, module)).to(target)
            if inner.bias is not None:
                state[prefix + "bias"] = convert(inner.bias)
            continue
        for name, param in module.named_parameters(recurse=False):
            state[prefix + name] = convert(param)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                state[prefix + name] = convert(buffer)
    return state


def export_merged(
    llm: LanguageModel,
    out_dir: str | Path,
    dtype: torch.dtype | str | None = None,
    dequantize_4bit: bool = False,
) -> Path:
    """Write the LLM, adapters merged into the base, as a plain transformers folder.

    The folder (``config.json``, safetensors weights, ``generation_config.json``, tokenizer) loads
    with ``AutoModelForCausalLM.from_pretrained(out_dir)``; peft is not needed. An LLM without
    adapters (``trainable`` ``full`` or ``frozen``) is written as it is. ``llm`` is not modified:
    merged weights are new tensors, the live layers keep their adapters.

    Args:
        llm: The language model to export.
        out_dir: Folder to write; created when missing.
        dtype: Weight dtype of the folder (``float32``, ``bfloat16``, ``float16`` or a torch dtype);
            default: the LLM's ``dtype`` (the dtype of its weights that are not 4-bit).
        dequantize_4bit: Needed for a 4-bit (QLoRA) base, refused otherwise: its NF4 weights are
            dequantised and the adapters added, giving the function that was trained (the 4-bit
            base plus adapters) in ``dtype``, up to one rounding per weight. This is not the
            original full-precision base plus adapters: the base carries NF4's quantisation error,
            and the folder is the size of a full-precision model. With bfloat16 the rounding can
            swallow part of a small update; float32 keeps it.
    """
    state = merged_state_dict(llm, dtype=dtype, dequantize_4bit=dequantize_4bit)
    target = _as_dtype(dtype, llm.weights_dtype)
    base = llm.model.get_base_model() if llm.has_lora else llm.model
    config = copy.deepcopy(base.config)
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = target
    # A skeleton on the meta device takes the merged tensors by reference: no second copy of the
    # model, and transformers' own save_pretrained writes the folder (tied keys, shards, index).
    with torch.device("meta"):
        plain = type(base)._from_config(config, dtype=target)
    result = plain.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(plain, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"export_merged: merged weights do not fit {type(base).__name__}: missing {missing[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
    if base.generation_config is not None:
        plain.generation_config = copy.deepcopy(base.generation_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    llm.tokenizer.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------- parts
def _part_tensors(part: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(key -> tensor written, 4-bit keys left out) of one part: every parameter and persistent
    buffer, except bitsandbytes 4-bit weights, which cannot train and so are the hub checkpoint's."""
    kept: dict[str, torch.Tensor] = {}
    packed: list[str] = []
    for module_name, module in part.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module.named_parameters(recurse=False):
            if _is_quantized(param):
                packed.append(prefix + name)
            else:
                kept[prefix + name] = param
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                kept[prefix + name] = buffer
    return kept, packed


def parts_to_export(model: MultiMoodModel, components: Iterable[str] | None = None) -> list[str]:
    """Default: the connector, projectors and compressor present in ``model``, and a tower only
    when it has trainable parameters (a frozen tower is the hub checkpoint's)."""
    if components is not None:
        names = list(components)
        bad = [n for n in names if n == "llm" or getattr(model, n, None) is None]
        if bad:
            raise ValueError(
                f"export_parts: {bad} is not a non-LLM part of this model (the LLM has export_adapter and "
                f"export_merged); parts present: {[n for n, _ in model.named_children() if n != 'llm']}"
            )
        return names
    names = [n for n in DEFAULT_PARTS if getattr(model, n, None) is not None]
    names += [
        n
        for n in TOWERS
        if getattr(model, n, None) is not None
        and any(p.requires_grad for p in getattr(model, n).parameters())
    ]
    return names


def export_parts(
    model: MultiMoodModel,
    out_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    components: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write the fused model's non-LLM parts to ``out_dir/parts.safetensors`` + ``manifest.json``.

    Keys are the fused model's own (``video_connector.…``, ``history_compressor.projector.weight``),
    so a model built from ``config`` takes them with :func:`load_parts`. Every parameter and
    persistent buffer of each part is written, the compressor's backbone included: a stage-A run
    may have trained it whole, and a later stage's frozen copy cannot tell. bitsandbytes 4-bit
    weights are left out (they cannot train; they are the hub checkpoint's, quantised on load) and
    listed in the manifest.

    Args:
        model: The fused model.
        out_dir: Folder to write; created when missing.
        config: The fused model's config (``class_path``/``init_args``), stored in the manifest so that
            a user can rebuild the model the parts belong to.
        components: Parts to write; default :func:`parts_to_export`.

    Returns:
        The manifest: ``format``, ``file``, ``components`` (part -> class, tensors (key -> shape,
        dtype), ``not_exported``) and ``source_config``.
    """
    from safetensors.torch import save_file

    names = parts_to_export(model, components)
    if not names:
        raise ValueError("export_parts: this model has no non-LLM part to export (only an LLM)")
    tensors: dict[str, torch.Tensor] = {}
    manifest_parts: dict[str, Any] = {}
    for name in names:
        part = getattr(model, name)
        kept, packed = _part_tensors(part)
        entry: dict[str, Any] = {"class": f"{type(part).__module__}.{type(part).__qualname__}", "tensors": {}}
        for key, tensor in kept.items():
            value = tensor.detach().cpu()
            # safetensors refuses tensors sharing memory; a contiguous copy of each is small next to the LLM.
            tensors[f"{name}.{key}"] = value.contiguous().clone()
            entry["tensors"][f"{name}.{key}"] = {
                "shape": list(value.shape),
                "dtype": _dtype_name(value.dtype),
            }
        entry["not_exported"] = {
            f"{name}.{key}": "4-bit base weight (from the hub checkpoint)" for key in packed
        }
        manifest_parts[name] = entry
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / PARTS_FILE), metadata={"format": PARTS_FORMAT})
    manifest = {
        "format": PARTS_FORMAT,
        "file": PARTS_FILE,
        "components": manifest_parts,
        "source_config": json.loads(json.dumps(config, default=str)) if config is not None else None,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_parts(model: MultiMoodModel, folder: str | Path) -> dict[str, int]:
    """Copy the parts written by :func:`export_parts` into ``model`` (by value); tensors per part.

    ``model`` must be built the way the manifest's ``source_config`` says: every tensor in the file
    must exist in it with the same shape, and every tensor :func:`export_parts` would write for those
    parts must be in the file (a partial load would leave random weights). Values are cast to the
    model's dtypes.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"load_parts: {manifest_path} not found (not a folder written by export_parts)"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != PARTS_FORMAT:
        raise ValueError(
            f"load_parts: {manifest_path} has format {manifest.get('format')!r}, expected {PARTS_FORMAT!r}"
        )
    state = load_file(str(folder / manifest["file"]))
    loaded: dict[str, int] = {}
    for name in manifest["components"]:
        part = getattr(model, name, None)
        if part is None:
            raise ValueError(f"load_parts: {folder} holds {name!r}, which this model lacks")
        prefix = f"{name}."
        mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        expected, _ = _part_tensors(part)
        missing = sorted(set(expected) - set(mine))
        if missing:
            raise ValueError(
                f"load_parts: {folder / manifest['file']} lacks {len(missing)} tensors of {name}, e.g. "
                f"{[prefix + k for k in missing[:5]]}; was the model built from the manifest's source_config?"
            )
        with torch.no_grad():
            for key, value in mine.items():
                target = expected.get(key)
                if target is None:
                    raise ValueError(f"load_parts: {folder}: {prefix + key} is not in this model's {name}")
                if tuple(target.shape) != tuple(value.shape):
                    raise ValueError(
                        f"load_parts: {prefix + key} is {tuple(value.shape)} in {folder} but "
                        f"{tuple(target.shape)} in this model"
                    )
                target.copy_(value.to(device=target.device, dtype=target.dtype))
        loaded[name] = len(mine)
    return loaded
