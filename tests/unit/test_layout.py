"""Dependencies point one way: the static imports of every module, checked against the layout rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


# (package folder, forbidden import prefixes, why)
RULES = [
    ("multimood", ("lightning", "lit_modules", "datamodules"), "plain torch never imports Lightning code"),
    ("multimood/data", ("multimood.models",), "data feeds models, never the reverse"),
    ("multimood/models", ("multimood.tiny",), "the tiny test kit stays off the production path"),
    ("multimood/models", ("multimood.count_params", "multimood.cli"), "tools sit above the models"),
]


@pytest.mark.parametrize(("folder", "forbidden", "why"), RULES, ids=[f"{r[0]}-{r[1][0]}" for r in RULES])
def test_package_does_not_import(folder: str, forbidden: tuple[str, ...], why: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.startswith(forbidden))
        for path in _files(folder)
    }
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"{why}: {offenders}"


def test_the_rules_see_real_imports() -> None:
    # The checker must find imports at all (a broken walker would pass every rule vacuously).
    assert "multimood.data.fbank" in _imports(ROOT / "multimood/models/beats.py")
    assert "multimood.hub" in _imports(ROOT / "multimood/models/vision.py")
