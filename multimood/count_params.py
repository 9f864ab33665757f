"""Parameter counts of a model configuration, built on the ``meta`` device (no weights, no download).

``multimood count-params --model configs/model/paper.yaml`` reads the same YAML training uses,
validates it with jsonargparse (a bad config fails here, before anything loads), then builds every
component's architecture on the meta device and counts parameters, total and trainable under the
configuration's training modes (``trainable``: frozen / lora / full, see
:mod:`multimood.models.trainable`); the defaults are the constructors' own.

Architectures come from a local folder when the name resolves to one (``tiny:`` names, local
checkpoints: only their config files are read), otherwise from the table below of architectures we
know by hub id. The numbers in that table are the published configurations of those checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimood.hub import register_folder_architectures, resolve

# Qwen2-7B (the LLM of VideoLLaMA2.1-7B-AV and Qwen2-7B-Instruct), from their config.json.
QWEN2_7B: dict[str, Any] = {
    "model_type": "qwen2",
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
KNOWN_LLMS: dict[str, dict[str, Any]] = {
    "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV": QWEN2_7B,
    "DAMO-NLP-SG/VideoLLaMA2.1-7B-16F": QWEN2_7B,
    "Qwen/Qwen2-7B-Instruct": QWEN2_7B,
    "Qwen/Qwen2-7B": QWEN2_7B,
}

# BEATs_iter3_plus_AS2M (paper: "BEATs (iter3+ AS2M)"): the architecture keys of its cfg. The
# regularisation values do not change the parameter count; training reads the real cfg from the file.
BEATS_ITER3_PLUS_AS2M: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "layer_wise_gradient_decay_ratio": 1.0,
    "finetuned_model": False,
}


@dataclass
class ComponentCount:
    """One row of the report."""

    component: str
    class_path: str
    total: int
    trainable: int
    source: str  # where the architecture came from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _local(name: str) -> Path | None:
    path = Path(resolve(name))
    return path if path.exists() else None


def _llm_count(args: dict[str, Any]) -> tuple[int, int, int, str]:
    """(total, trainable, hidden size, source) of a LanguageModel configuration."""
    from transformers import AutoConfig, AutoModelForCausalLM

    name = args.get("name_or_path", "Qwen/Qwen2-7B-Instruct")
    local = _local(name)
    if local is not None:
        raw = json.loads((local / "config.json").read_text())
        source = f"{local}/config.json"
    elif name in KNOWN_LLMS:
        raw, source = dict(KNOWN_LLMS[name]), f"known architecture of {name}"
    else:
        raise ValueError(f"no local folder and no known architecture for LLM {name!r}; give a local path")
    model_type = raw.pop("model_type", "qwen2")
    if "qwen2" in model_type:  # VideoLLaMA2 folders name their own type (videollama2_qwen2)
        model_type = "qwen2"
    config = AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "architectures"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = _count(model.parameters())
    mode = args.get("trainable", "lora")
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        with torch.device("meta"):
            peft_model = get_peft_model(
                model,
                LoraConfig(
                    r=args.get("lora_r", 128),
                    lora_alpha=args.get("lora_alpha", 256),
                    target_modules=args.get("lora_target_modules", "all-linear"),
                    task_type="CAUSAL_LM",
                ),
            )
        lora = _count(p for n, p in peft_model.named_parameters() if "lora_" in n)
        return total + lora, lora, config.hidden_size, source
    return total, total if mode == "full" else 0, config.hidden_size, source


def _vision_count(args: dict[str, Any]) -> tuple[int, int, int, tuple[int, int], str]:
    """(total, trainable, hidden size, patch grid, source); only blocks up to ``select_layer`` count."""
    import open_clip
    import timm

    name = args.get("model_name", "hf-hub:timm/ViT-SO400M-14-SigLIP-384")
    if args.get("backend", "open_clip") != "open_clip":
        raise ValueError("count-params knows open_clip vision towers only")
    local = None if name.startswith("hf-hub:") else _local(name)
    if local is not None:
        model_cfg = json.loads((local / "open_clip_config.json").read_text())["model_cfg"]
        source = f"{local}/open_clip_config.json"
        register_folder_architectures(local)
    else:
        builtin = name.split("/")[-1] if name.startswith("hf-hub:") else name
        model_cfg = open_clip.get_model_config(builtin)
        if model_cfg is None:
            raise ValueError(f"no open_clip architecture named {builtin!r} (from {name!r})")
        source = f"open_clip config {builtin}"
    vision_cfg = model_cfg["vision_cfg"]
    if "timm_model_name" not in vision_cfg:
        raise ValueError(f"count-params knows timm-trunk open_clip towers only, not {name!r}")
    with torch.device("meta"):
        trunk = timm.create_model(vision_cfg["timm_model_name"], pretrained=False, num_classes=0)
    depth = len(trunk.blocks)
    select = args.get("select_layer", -2)
    used_blocks = depth + select + 1 if select < 0 else select
    embed = _count(
        p
        for n, p in trunk.named_parameters()
        if not n.startswith(("blocks.", "norm.", "fc_norm.", "attn_pool.", "head"))
    )
    total = embed + _count(trunk.blocks[:used_blocks].parameters())
    size = vision_cfg.get("image_size", 224)
    patch = trunk.patch_embed.patch_size[0]
    grid = (size // patch, size // patch)
    trainable = total if args.get("trainable", "frozen") == "full" else 0
    return total, trainable, trunk.embed_dim, grid, source


def _beats_count(args: dict[str, Any]) -> tuple[int, int, int, str]:
    from multimood.models.beats import BEATsEncoder

    checkpoint = args.get("checkpoint")
    local = _local(checkpoint) if checkpoint else None
    if local is not None:
        file = (
            local
            if local.is_file()
            else next(p for p in sorted(local.iterdir()) if p.suffix in (".pt", ".pth"))
        )
        cfg = torch.load(file, map_location="meta", weights_only=True, mmap=True)["cfg"]
        source = str(file)
    else:
        cfg, source = BEATS_ITER3_PLUS_AS2M, "known architecture of BEATs_iter3_plus_AS2M"
    with torch.device("meta"):
        encoder = BEATsEncoder({**cfg, "finetuned_model": False})
    total = _count(encoder.parameters())
    trainable = total if args.get("trainable", "frozen") == "full" else 0
    return total, trainable, encoder.output_dim, source


def count_parameters(model_config: dict[str, Any]) -> list[ComponentCount]:
    """Rows for each component of a ``MultiMoodModel`` configuration (``class_path`` + ``init_args``)."""
    from multimood.models.compressor import MambaHistoryCompressor
    from multimood.models.projectors import AudioProjector
    from multimood.models.stc import STCConnector

    init = model_config.get("init_args", {})
    rows: list[ComponentCount] = []

    def args_of(key: str) -> dict[str, Any] | None:
        part = init.get(key)
        return None if part is None else dict(part.get("init_args") or {})

    llm_args = args_of("llm") or {}
    total, trainable, d, source = _llm_count(llm_args)
    rows.append(ComponentCount("llm", "multimood.models.LanguageModel", total, trainable, source))

    vision_args = args_of("vision_tower")
    if vision_args is not None:
        total, trainable, c, grid, source = _vision_count(vision_args)
        rows.append(ComponentCount("vision_tower", "multimood.models.VisionTower", total, trainable, source))
        with torch.device("meta"):
            stc = STCConnector(c, d, **(args_of("video_connector") or {}))
        tokens = stc.num_tokens(16, grid)
        rows.append(
            ComponentCount(
                "video_connector",
                "multimood.models.STCConnector",
                _count(stc.parameters()),
                _count(p for p in stc.parameters() if p.requires_grad),
                f"{tokens} tokens for 16 frames",
            )
        )

    audio_args = args_of("audio_tower")
    if audio_args is not None:
        total, trainable, c, source = _beats_count(audio_args)
        rows.append(ComponentCount("audio_tower", "multimood.models.AudioTower", total, trainable, source))
        with torch.device("meta"):
            proj = AudioProjector(c, d, **(args_of("audio_projector") or {}))
        rows.append(
            ComponentCount(
                "audio_projector",
                "multimood.models.AudioProjector",
                _count(proj.parameters()),
                _count(p for p in proj.parameters() if p.requires_grad),
                proj.kind,
            )
        )

    history_args = args_of("history_compressor")
    if history_args is not None:
        backbone = history_args.get("backbone", "state-spaces/mamba-370m-hf")
        projector = history_args.get("projector", "linear")
        lora_r = history_args.get("lora_r", 0)
        local = _local(backbone)
        backbone_config = None
        source = "known architecture of state-spaces/mamba-370m-hf"
        if local is not None:
            from transformers import MambaConfig

            backbone_config = MambaConfig.from_pretrained(local)
            source = f"{local}/config.json"
        counts = MambaHistoryCompressor.paper_config_on_meta(
            d,
            projector=projector,
            lora_r=lora_r,
            backbone_config=backbone_config,
            backbone_trainable=history_args.get("backbone_trainable", "full"),
            projector_trainable=history_args.get("projector_trainable", "full"),
        ).parameter_counts()
        rows.append(
            ComponentCount(
                "history_compressor",
                "multimood.models.MambaHistoryCompressor",
                counts["total"],
                counts["trainable"],
                source,
            )
        )
    return rows


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(rows: list[ComponentCount]) -> str:
    lines = [f"{'component':<20} {'total':>15} {'':>8} {'trainable':>15} {'':>8}  architecture from"]
    for r in rows:
        lines.append(
            f"{r.component:<20} {r.total:>15,} {_human(r.total):>8} {r.trainable:>15,} {_human(r.trainable):>8}  {r.source}"
        )
    total = sum(r.total for r in rows)
    trainable = sum(r.trainable for r in rows)
    lines.append(f"{'all':<20} {total:>15,} {_human(total):>8} {trainable:>15,} {_human(trainable):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``multimood count-params --model configs/model/paper.yaml [--json out.json]``."""
    from jsonargparse import ArgumentParser

    from multimood.models.multimood import MultiMoodModel

    parser = ArgumentParser(
        prog="multimood count-params",
        description="Build a MultiMoodModel configuration on the meta device and count its parameters.",
    )
    parser.add_subclass_arguments(
        MultiMoodModel, "model", required=True, help="model YAML (class_path + init_args)"
    )
    parser.add_argument("--json", type=str | None, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv if argv is not None else None)
    config = parser.dump(args, format="json")
    model_config = json.loads(config)["model"]
    rows = count_parameters(model_config)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    return 0
