"""``fit.py --run export``: a stage checkpoint to folders that need neither Lightning nor this repo's
training code (:mod:`multimood.models.export`; why each folder looks as it does: docs/design/export.md).

    <export_dir>/adapter/   the LLM's LoRA adapters (PEFT) and tokenizer   (when the LLM has adapters)
    <export_dir>/merged/    the LLM with adapters merged, plain transformers  (when asked)
    <export_dir>/parts/     connector, projectors, compressor: safetensors + manifest.json
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lit_modules.common import load_stage_weights
from multimood.models.export import (
    check_mergeable,
    export_adapter,
    export_merged,
    export_parts,
    parts_to_export,
)
from multimood.models.multimood import MultiMoodModel

log = logging.getLogger(__name__)


def export_stage(
    module: nn.Module,
    ckpt_path: str | Path,
    export_dir: str | Path,
    merged: bool = False,
    dequantize_4bit: bool = False,
    model_config: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Load a stage's weights (``init_from``, then ``ckpt_path``) into ``module`` and export them.

    Args:
        module: A stage LightningModule built from the run's config, with the fused model as ``model``.
        ckpt_path: The stage checkpoint (only trainable tensors, as the stages save them).
        export_dir: Folder that receives ``adapter/``, ``merged/`` and ``parts/``.
        merged: Also write ``merged/``. Required when the LLM trained whole (no adapters to carry it).
        dequantize_4bit: Allow ``merged/`` from a 4-bit base (see :func:`export_merged`).
        model_config: The fused model's config, recorded in ``parts/manifest.json``.

    Returns:
        The folders written, by name.
    """
    model = getattr(module, "model", None)
    if not isinstance(model, MultiMoodModel):
        raise ValueError(f"export: {type(module).__name__}.model is not a MultiMoodModel; nothing to export")
    llm = model.llm
    if llm.trainable == "full" and not merged:
        raise ValueError(
            "export: the LLM trained whole (trainable='full') and has no adapters; write it with "
            "--export_merged true"
        )
    if merged:
        check_mergeable(llm, dequantize_4bit)  # before any weight loads
    load_stage_weights(module, ckpt_path)
    out = Path(export_dir)
    written: dict[str, Path] = {}
    if llm.has_lora:
        written["adapter"] = export_adapter(llm, out / "adapter")
    else:
        log.info("export: the LLM has no LoRA adapters (trainable=%r); no adapter/ folder", llm.trainable)
    if merged:
        written["merged"] = export_merged(llm, out / "merged", dequantize_4bit=dequantize_4bit)
    if parts_to_export(model):
        export_parts(model, out / "parts", config=model_config)
        written["parts"] = out / "parts"
    for name, path in written.items():
        log.info("export: %s written to %s", name, path)
    return written
