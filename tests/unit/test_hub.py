"""Name resolution: pass-through of hub ids and paths, built-in schemes, caching, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimood import hub


def test_hub_ids_and_paths_pass_through_unchanged(tmp_path: Path) -> None:
    assert hub.resolve("Qwen/Qwen2-7B-Instruct") == "Qwen/Qwen2-7B-Instruct"
    assert hub.resolve(str(tmp_path)) == str(tmp_path)
    assert hub.resolve("hf-hub:timm/ViT-SO400M-14-SigLIP-384") == "hf-hub:timm/ViT-SO400M-14-SigLIP-384"


def test_parse_builtin_reads_json_values() -> None:
    scheme, kind, overrides = hub.parse_builtin(
        "tiny:qwen2?hidden_size=128&tokenizer=qwen2&tie_word_embeddings=false"
    )
    assert (scheme, kind) == ("tiny", "qwen2")
    assert overrides == {"hidden_size": 128, "tokenizer": "qwen2", "tie_word_embeddings": False}


@pytest.mark.parametrize("name", ["tiny:nope", "packaged:nope"])
def test_unknown_kind_names_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match="known:"):
        hub.resolve(name)


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        hub.resolve("tiny:qwen2?hiden_size=3")


@pytest.mark.parametrize("bad", ["", None])
def test_empty_name_is_an_error(bad) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        hub.resolve(bad)


def test_build_is_cached_and_keyed_by_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTIMOOD_CACHE", str(tmp_path))
    first = hub.resolve("tiny:tokenizer")
    assert Path(first).parent.parent == tmp_path
    assert (Path(first) / ".complete").is_file()
    mtime = (Path(first) / "tokenizer.json").stat().st_mtime_ns
    assert hub.resolve("tiny:tokenizer") == first
    assert (Path(first) / "tokenizer.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert hub.resolve("tiny:tokenizer?vocab_size=512") != first


def test_failed_build_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTIMOOD_CACHE", str(tmp_path))

    def broken(out_dir: Path, overrides: dict) -> None:
        (out_dir / "half-written").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setitem(hub._builders()["tiny"], "broken", broken)
    with pytest.raises(RuntimeError, match="boom"):
        hub.resolve("tiny:broken")
    assert list((tmp_path / "tiny").iterdir()) == []
