"""Test-wide guarantees: no network, no hub, a private model cache, and the real-data location.

Every test runs with the Hugging Face offline switches set and with sockets blocked (only
AF_UNIX, which multiprocessing uses, stays open): a test that reaches for the network fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before anything imports transformers / huggingface_hub, which read them at import time.
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    TOKENIZERS_PARALLELISM="false",
)


class NetworkBlocked(RuntimeError):
    """Raised when a test opens a network connection."""


def _blocked(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted in a test: {args!r}")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address, *args, **kwargs):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address, *args, **kwargs)
        raise NetworkBlocked(f"network access attempted in a test: connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", _blocked)
    monkeypatch.setattr(socket, "getaddrinfo", _blocked)


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models are built from scratch in a fresh cache, as on a new machine. Set
    # MULTIMOOD_TEST_CACHE to a folder to keep them between runs while developing.
    cache = os.environ.get("MULTIMOOD_TEST_CACHE")
    if not cache:
        cache = tempfile.mkdtemp(prefix="multimood-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    os.environ["MULTIMOOD_CACHE"] = cache


def mesc_data_dir() -> Path:
    """Where the real MESC annotations are: $MULTIMOOD_MESC_DIR, else ../shared/data/mesc."""
    return Path(os.environ.get("MULTIMOOD_MESC_DIR", REPO_ROOT.parent / "shared" / "data" / "mesc"))


@pytest.fixture(scope="session")
def real_mesc_dir() -> Path:
    """The real MESC annotation folder; tests using it are skipped, with the reason, when it is absent."""
    path = mesc_data_dir()
    missing = [name for name in ("MESC.csv", "val.json", "test.json") if not (path / name).is_file()]
    if missing:
        pytest.skip(
            f"real MESC annotations not found in {path} (missing {', '.join(missing)}); set MULTIMOOD_MESC_DIR"
        )
    return path
