"""Helpers the stage modules share: what trains, what a checkpoint holds, ``init_from``, schedules,
and writing evaluation results. Functions, not a base class: each stage reads top to bottom.

Checkpoints hold only what trains (plus the buffers of modules that train): a frozen 7B base, a
frozen tower or a frozen compressor is rebuilt from the run's config (``config.yaml`` beside the
checkpoints, written by LightningCLI), including its ``init_from`` sources. Resuming
(``--ckpt_path``) therefore loads non-strictly, after checking that every trainable tensor is in
the file and nothing else is.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from multimood.models.trainable import trainable_table

log = logging.getLogger(__name__)

LRSchedule = Literal["cosine", "linear", "constant"]
CHECKPOINT_FORMAT = "multimood-trainable-v1"


# ----------------------------------------------------------------------------------- what trains
def trainable_keys(module: nn.Module, prefix: str = "") -> list[str]:
    """State-dict keys that a checkpoint keeps: trainable parameters, and the buffers of every
    submodule that has a trainable parameter of its own (e.g. a trained norm's running stats)."""
    keys: list[str] = []
    for name, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        trains = any(p.requires_grad for _, p in own)
        base = f"{prefix}{name}." if name else prefix
        keys += [base + n for n, p in own if p.requires_grad]
        if trains:
            keys += [base + n for n, b in sub.named_buffers(recurse=False) if b is not None]
    return keys


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer receives (frozen ones never enter it)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__}: nothing trains (every parameter is frozen)")
    return params


def components_that_train(model: nn.Module) -> set[str]:
    """Top-level parts of ``model`` with at least one trainable parameter (from its trainable table)."""
    return {name for name, row in trainable_table(model).items() if row["trainable_params"]}


def check_stage_trains(
    stage: str, model: nn.Module, allowed: Iterable[str], required: Iterable[str] = ()
) -> None:
    """Refuse a model whose trainable components contradict the stage (paper appendix B.2).

    ``allowed``: components that may train; ``required``: components that must. The error names
    the component and the constructor option to change.
    """
    training = components_that_train(model)
    extra = sorted(training - set(allowed))
    if extra:
        raise ValueError(
            f"{stage}: {extra} would train, but this stage trains only {sorted(allowed)}; set their "
            "`trainable` option to 'frozen' in the model config"
        )
    missing = sorted(set(required) - training)
    if missing:
        raise ValueError(
            f"{stage}: {missing} must train in this stage but nothing in them does (check their "
            "`trainable` option and that the component is in the model config)"
        )


# ----------------------------------------------------------------------------------- checkpoints
def keep_trainable_in_checkpoint(checkpoint: dict[str, Any], module: nn.Module) -> None:
    """``on_save_checkpoint``: drop every tensor that does not train (frozen bases and towers)."""
    keep = set(trainable_keys(module))
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k in keep}
    checkpoint["multimood"] = {"format": CHECKPOINT_FORMAT, "trainable_keys": sorted(keep)}


def check_resumable(checkpoint: Mapping[str, Any], module: nn.Module, path: str | None = None) -> None:
    """``on_load_checkpoint``: the file must hold exactly this run's trainable tensors."""
    where = path or "the checkpoint"
    keep = set(trainable_keys(module))
    have = set(checkpoint.get("state_dict", {}))
    missing, unexpected = sorted(keep - have), sorted(have - keep)
    if missing or unexpected:
        raise RuntimeError(
            f"{where} does not match this run's trainable parameters: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)}). Resume with the config "
            "the run was started with; to start a new stage from its weights use init_from"
        )


def load_stage_weights(module: nn.Module, ckpt_path: str | Path) -> None:
    """The weights ``--run validate|test`` evaluates, without a Trainer: the module's ``init_from``
    (frozen parts of earlier stages; once per module, as ``setup`` does), then the checkpoint's
    trainable tensors, refused unless they are exactly this run's (:func:`check_resumable`)."""
    apply_init_from(module)
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise ValueError(f"{path} has no 'state_dict' (not a Lightning checkpoint)")
    check_resumable(checkpoint, module, path=str(path))
    # Non-strict: the file holds only what trains; check_resumable has checked that it holds all of it.
    module.load_state_dict(checkpoint["state_dict"], strict=False)


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    """Random states in the checkpoint, so that a resumed run draws the same dropout masks (and
    anything else random) as an uninterrupted one. Lightning does not save them itself."""
    import random

    import numpy as np

    checkpoint["rng_states"] = {
        "torch": torch.get_rng_state(),
        # Plain types and tensors only: checkpoints stay loadable with torch.load(weights_only=True).
        "numpy": _numpy_state(np.random.get_state()),  # noqa: NPY002 (third-party code draws from it)
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _numpy_state(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return (str(kind), torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(cached))


def restore_rng_states(checkpoint: Mapping[str, Any]) -> None:
    """Undo :func:`save_rng_states` (nothing happens for a checkpoint without them)."""
    import random

    import numpy as np

    states = checkpoint.get("rng_states")
    if not states:
        return
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class InitFrom:
    """Weights of an earlier stage to start from (not a resume: optimizer and step start fresh).

    Args:
        path: A checkpoint written by a MultiMood stage (``.ckpt``), or a VideoLLaMA2.1-AV folder
            (``format: videollama2_av``).
        components: Top-level parts of the fused model to take (``history_compressor``,
            ``video_connector``, ``audio_projector``, ``llm``, ...); None takes every part the
            checkpoint holds. Not used for ``videollama2_av``.
        format: ``multimood`` (a stage checkpoint) or ``videollama2_av``: the aligned STC
            connector, BEATs and audio projector of VideoLLaMA2.1-AV, which the paper starts from
            (:func:`multimood.models.checkpoints.load_videollama2_av`).
    """

    path: str
    components: list[str] | None = None
    format: Literal["multimood", "videollama2_av"] = "multimood"


def init_from_list(sources: Sequence[InitFrom | Mapping[str, Any]] | None) -> list[InitFrom]:
    """``init_from`` as :class:`InitFrom` entries (from YAML they already are; dicts are accepted)."""
    return [s if isinstance(s, InitFrom) else InitFrom(**s) for s in (sources or [])]


def init_from_hparams(sources: Sequence[InitFrom]) -> list[dict[str, Any]]:
    """Plain dicts for the checkpoint's hyperparameters (loadable with ``weights_only=True``)."""
    return [dict(path=s.path, components=s.components, format=s.format) for s in sources]


def load_init_from(model: nn.Module, sources: Sequence[InitFrom], prefix: str = "model.") -> dict[str, int]:
    """Copy tensors of earlier stages into ``model`` (by value); returns tensors loaded per part.

    Every tensor of a named component in the file must exist in ``model`` with the same shape, and
    a named component the file lacks is an error: a silent partial load would train from random
    weights.
    """
    own = model.state_dict(keep_vars=True)
    loaded: dict[str, int] = {}
    for source in sources:
        if source.format == "videollama2_av":
            from multimood.models.checkpoints import load_videollama2_av

            report = load_videollama2_av(model, source.path)
            for part, count in report.loaded.items():
                loaded[part] = loaded.get(part, 0) + count
            continue
        path = Path(source.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"init_from: checkpoint {path} not found")
        state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict")
        if state is None:
            raise ValueError(f"init_from: {path} has no 'state_dict' (not a Lightning checkpoint)")
        by_part: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                by_part.setdefault(name.split(".", 1)[0], {})[name] = value
        wanted = source.components if source.components is not None else sorted(by_part)
        absent = [c for c in wanted if c not in by_part]
        if absent:
            raise ValueError(f"init_from: {path} holds no tensors of {absent}; it has {sorted(by_part)}")
        for part in wanted:
            for name, value in by_part[part].items():
                target = own.get(name)
                if target is None:
                    raise ValueError(
                        f"init_from: {path} has {name!r}, which this model lacks (is {part} built "
                        "the same way, e.g. the same LoRA settings?)"
                    )
                if tuple(target.shape) != tuple(value.shape):
                    raise ValueError(
                        f"init_from: {name!r} is {tuple(value.shape)} in {path} but "
                        f"{tuple(target.shape)} in this model"
                    )
                with torch.no_grad():
                    target.copy_(value.to(dtype=target.dtype, device=target.device))
            loaded[part] = loaded.get(part, 0) + len(by_part[part])
            log.info("init_from %s: %d tensors of %s", path, len(by_part[part]), part)
    return loaded


# ----------------------------------------------------------------------------------- stage hooks
def setup_stage(module: Any) -> None:
    """``setup`` of every stage: the data's history tokenizer must be the compressor's (a wrong
    ``<MEM>`` id would read every history as empty), and ``init_from`` is applied once per module
    for every entry point (fit, validate, test): frozen parts from earlier stages are not in this
    stage's checkpoints, and a test after fit must keep what the fit trained."""
    datamodule = getattr(module.trainer, "datamodule", None)
    history_tokenizer = getattr(datamodule, "history_tokenizer", None)
    if history_tokenizer is not None:
        module.model.check_history_tokenizer(history_tokenizer)
    apply_init_from(module)


def store_init_from(module: Any, init_from: Sequence[InitFrom | Mapping[str, Any]] | None) -> None:
    """Constructor of every stage: keep ``init_from`` as :class:`InitFrom` entries on the module and
    as plain dicts in its hyperparameters (list ``init_from`` in ``save_hyperparameters(ignore=...)``);
    applied later by :func:`apply_init_from`."""
    module.init_from = init_from_list(init_from)
    module.hparams["init_from"] = init_from_hparams(module.init_from)
    module._initialized_from = False


def apply_init_from(module: Any) -> None:
    """Load the module's ``init_from`` into ``module.model``, once per module instance."""
    if module.init_from and not module._initialized_from:
        load_init_from(module.model, module.init_from)
        module._initialized_from = True


def save_stage_checkpoint(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """``on_save_checkpoint``: only what trains, plus the random states (see the module docstring)."""
    keep_trainable_in_checkpoint(checkpoint, module)
    save_rng_states(checkpoint)


def load_stage_checkpoint(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """``on_load_checkpoint``: the file must hold exactly the trainable tensors; random states back."""
    check_resumable(checkpoint, module)
    restore_rng_states(checkpoint)


def warmup_optimizers(
    module: Any, extra_parameters: Iterable[nn.Parameter] = (), updates_per_batch: int = 1
) -> dict[str, Any]:
    """``configure_optimizers`` with the module's optimizer factory over what trains (plus
    ``extra_parameters``: a head outside the model), stepped by a warmup-then-decay schedule over the
    whole run (``warmup_ratio``, ``lr_schedule`` hparams); ``updates_per_batch`` optimizer steps per
    training batch (manual optimisation with several updates per generation batch)."""
    optimizer = module.optimizer_factory(trainable_parameters(module.model) + list(extra_parameters))
    schedule = warmup_schedule(
        optimizer,
        module.trainer.estimated_stepping_batches * updates_per_batch,
        module.hparams.warmup_ratio,
        module.hparams.lr_schedule,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ----------------------------------------------------------------------------------- schedules
def warmup_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, kind: LRSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``ceil(warmup_ratio * total_steps)`` steps (step ``i`` at
    ``(i + 1) / (warmup + 1)`` of the lr, so the first step already moves), then ``kind`` decay to 0
    (cosine, as VideoLLaMA2's scripts)."""
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if kind not in ("cosine", "linear", "constant"):
        raise ValueError(f"lr_schedule must be cosine, linear or constant, got {kind!r}")
    total = max(1, int(total_steps))
    warmup = math.ceil(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------- evaluation
def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows on every rank (one collective; call it at epoch end on all ranks)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    gathered: list[list[dict[str, Any]] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, rows)
    return [row for part in gathered for row in (part or [])]


def write_results(
    out_dir: str | Path, split: str, rows: list[dict[str, Any]], metrics: Mapping[str, float]
) -> tuple[Path, Path]:
    """``<out_dir>/<split>/predictions.jsonl`` (the authors' ``label``/``predict`` lines plus
    ``sample_id``, sorted by it) and ``<out_dir>/<split>/metrics.json``."""
    folder = Path(out_dir) / split
    folder.mkdir(parents=True, exist_ok=True)
    predictions = folder / "predictions.jsonl"
    with predictions.open("w") as f:
        for row in sorted(rows, key=lambda r: str(r["sample_id"])):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    metrics_path = folder / "metrics.json"
    metrics_path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    return predictions, metrics_path


def run_folder(trainer: Any) -> Path:
    """Where a run writes its results: the logger's version folder, else ``default_root_dir``.
    Call it on every rank: ``trainer.log_dir`` broadcasts rank 0's folder."""
    log_dir = getattr(trainer, "log_dir", None)
    return Path(log_dir or trainer.default_root_dir)
