"""Reading checkpoint folders written by other codebases into the fused model.

VideoLLaMA2.1-AV (``DAMO-NLP-SG/VideoLLaMA2.1-7B-AV``), the model MultiMood starts from, stores one
transformers-style folder (``config.json`` + safetensors shards or ``pytorch_model*.bin``):

| key prefix in the folder | our module |
| --- | --- |
| ``model.embed_tokens.``, ``model.layers.``, ``model.norm.``, ``lm_head.`` | the LLM (Qwen2) |
| ``model.mm_projector.`` | ``video_connector`` (STC connector, same key names) |
| ``model.audio_tower.`` | ``audio_tower.encoder`` (BEATs, official key names) |
| ``model.mm_projector_a.`` | ``audio_projector.proj`` (VideoLLaMA2.1-AV uses ``mlp2x_gelu``) |
| ``model.vision_tower.`` | not read: the frozen SigLIP tower is loaded from its own name |

The LLM is read by transformers itself: give ``LanguageModel(name_or_path=<folder>,
model_class="transformers.Qwen2ForCausalLM")`` (the folder's config names VideoLLaMA2's own
architecture). :func:`load_videollama2_av` then fills the other parts, strictly.

The release stores bf16 tensors. They are copied into the parameters the model was built with, so
each part keeps its own dtype and device (choose them with the components' ``dtype`` options, and
move the model as usual): loading never leaves one part bf16 on the checkpoint's device while the
next one expects float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from multimood.hub import resolve

# (prefix in the VideoLLaMA2 folder, attribute path in MultiMoodModel); order matters: the audio
# projector's prefix would otherwise also match the video connector's.
VIDEOLLAMA2_AV_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("model.mm_projector_a.", "audio_projector.proj"),
    ("model.mm_projector.", "video_connector"),
    ("model.audio_tower.", "audio_tower.encoder"),
)
VIDEOLLAMA2_LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
VIDEOLLAMA2_SKIPPED_PREFIXES = ("model.vision_tower.",)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys do not fit the model; the message lists them."""


@dataclass
class LoadReport:
    """What :func:`load_videollama2_av` did: tensors loaded per component, keys left to others."""

    loaded: dict[str, int] = field(default_factory=dict)
    llm_keys: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The weight files of a transformers-style folder (sharded or not, safetensors or torch)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} names shards that are missing: {missing}")
            return [folder / s for s in shards]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin (or their index) in {folder}")


def scan_checkpoint(
    folder: str | Path, prefixes: tuple[str, ...]
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Every key of a checkpoint folder, and the tensors of the keys starting with ``prefixes``.

    One pass over the shards: safetensors shards list their keys without reading tensors and
    hand over only the matching ones; a torch ``.bin`` shard is loaded once.
    """
    from safetensors import safe_open

    keys: list[str] = []
    tensors: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    keys.append(key)
                    if key.startswith(prefixes):
                        tensors[key] = f.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            keys.extend(state)
            tensors.update((k, v) for k, v in state.items() if k.startswith(prefixes))
    return keys, tensors


def _load_component(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    if hasattr(module, "load_official_state_dict"):
        # BEATs: official key names (either weight-norm naming), shared-table check. A fine-tuned
        # tower's AudioSet head is not used for features; drop it when the model has none.
        if not any(k.startswith("predictor.") for k in module.state_dict()):
            state = {k: v for k, v in state.items() if not k.startswith("predictor.")}
        try:
            module.load_official_state_dict(state, source=source)
        except ValueError as error:
            raise CheckpointMismatchError(str(error)) from error
        return
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointMismatchError(f"{source}: missing {missing[:20]}, unexpected {unexpected[:20]}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointMismatchError(f"{source}: {error}") from error


def load_videollama2_av(model: nn.Module, folder: str, strict: bool = True) -> LoadReport:
    """Load the STC connector, BEATs and the audio projector of a VideoLLaMA2.1-AV folder.

    Values are copied into the existing parameters (each keeps its dtype and device). Each
    component present in ``model`` is loaded with ``strict=True``: a missing or unexpected key
    raises :class:`CheckpointMismatchError` listing them (e.g. an audio projector built as
    ``linear`` against the checkpoint's ``mlp2x_gelu``). With ``strict``, a key that belongs to no
    known part (neither a component, nor the LLM, nor the skipped vision tower) is an error too.
    Components absent from ``model`` (say, no audio tower) are skipped and reported.
    """
    path = resolve(folder)
    report = LoadReport()
    component_prefixes = tuple(p for p, _ in VIDEOLLAMA2_AV_COMPONENTS)
    keys, tensors = scan_checkpoint(path, component_prefixes)
    known = component_prefixes + VIDEOLLAMA2_LLM_PREFIXES + VIDEOLLAMA2_SKIPPED_PREFIXES
    unknown = [k for k in keys if not k.startswith(known)]
    if strict and unknown:
        raise CheckpointMismatchError(f"{path}: keys that belong to no known part: {unknown[:20]}")
    report.llm_keys = sum(k.startswith(VIDEOLLAMA2_LLM_PREFIXES) for k in keys)
    for prefix in VIDEOLLAMA2_SKIPPED_PREFIXES:
        report.skipped[prefix] = sum(k.startswith(prefix) for k in keys)

    claimed: set[str] = set()
    for prefix, target in VIDEOLLAMA2_AV_COMPONENTS:
        own = [k for k in keys if k.startswith(prefix) and k not in claimed]
        claimed.update(own)
        try:
            module = model.get_submodule(target)
        except AttributeError:
            module = None
        if module is None:
            report.skipped[prefix] = len(own)
            continue
        if not own:
            raise CheckpointMismatchError(f"{path}: no {prefix}* keys for the model's {target}")
        state = {k[len(prefix) :]: tensors[k] for k in own}
        _load_component(
            module, state, f"{path}: {prefix}* into the model's {target} ({type(module).__name__})"
        )
        report.loaded[target] = len(state)
    return report
