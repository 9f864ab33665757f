"""Test-wide guarantees: no network, no hub, private caches, the real-data location, shared data.

Every test runs with the Hugging Face offline switches set and with sockets blocked (only
AF_UNIX, which multiprocessing uses, stays open): a test that reaches for the network fails.
``HF_HOME`` points at an empty temporary folder, so a machine with a real hub cache behaves like CI.

Real MESC annotations: tests that read them take the ``real_mesc_dir`` fixture and carry the
``real_data`` marker (collection fails otherwise). Without the files they are skipped with the
reason, unless ``MULTIMOOD_REQUIRE_REAL_DATA=1`` (set by ``.ci/run``), which makes the absence a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before anything imports transformers / huggingface_hub, which read them at import time.
for _variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE"):
    os.environ.pop(_variable, None)  # they would override HF_HOME below
_HF_HOME = tempfile.mkdtemp(prefix="multimood-test-hf-home-")
os.environ.update(
    HF_HOME=_HF_HOME,
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


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The real functions, taken before any test patches them.
_REAL_CONNECT = socket.socket.connect
_REAL_GETADDRINFO = socket.getaddrinfo
_REAL_CREATE_CONNECTION = socket.create_connection


@pytest.fixture
def loopback_network(_no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt-in: allow connections to this machine's loopback address only (a server the test starts).

    Connections to 127.0.0.1 / ::1 / localhost and name look-ups of those go through; everything
    else stays blocked as in ``_no_network`` (which this fixture runs after).
    """

    def loopback(host: object) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        return isinstance(host, str) and host in LOOPBACK_HOSTS

    def guarded_connect(sock: socket.socket, address, *args, **kwargs):
        if sock.family == socket.AF_UNIX or (isinstance(address, tuple) and loopback(address[0])):
            return _REAL_CONNECT(sock, address, *args, **kwargs)
        raise NetworkBlocked(
            f"network access attempted in a test: connect to {address!r} (only loopback is open)"
        )

    def guarded_getaddrinfo(host, *args, **kwargs):
        if loopback(host):
            return _REAL_GETADDRINFO(host, *args, **kwargs)
        raise NetworkBlocked(
            f"network access attempted in a test: name look-up of {host!r} (only loopback is open)"
        )

    def guarded_create_connection(address, *args, **kwargs):
        if loopback(address[0]):
            return _REAL_CREATE_CONNECTION(address, *args, **kwargs)
        raise NetworkBlocked(
            f"network access attempted in a test: connect to {address!r} (only loopback is open)"
        )

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models are built from scratch in a fresh cache, as on a new machine. Set
    # MULTIMOOD_TEST_CACHE to a folder to keep them between runs while developing.
    cache = os.environ.get("MULTIMOOD_TEST_CACHE")
    if not cache:
        cache = tempfile.mkdtemp(prefix="multimood-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    os.environ["MULTIMOOD_CACHE"] = cache
    config.add_cleanup(lambda: shutil.rmtree(_HF_HOME, ignore_errors=True))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if "real_mesc_dir" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("real_data") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that read the real MESC annotations must be marked @pytest.mark.real_data: "
            + ", ".join(unmarked)
        )


def mesc_data_dir() -> Path:
    """Where the real MESC annotations are: $MULTIMOOD_MESC_DIR, else ../shared/data/mesc."""
    return Path(os.environ.get("MULTIMOOD_MESC_DIR", REPO_ROOT.parent / "shared" / "data" / "mesc"))


@pytest.fixture(scope="session")
def real_mesc_dir() -> Path:
    """The real MESC annotation folder. When it is absent, tests using it are skipped with the reason,
    or fail when ``MULTIMOOD_REQUIRE_REAL_DATA=1`` (CI)."""
    path = mesc_data_dir()
    missing = [name for name in ("MESC.csv", "val.json", "test.json") if not (path / name).is_file()]
    if missing:
        message = f"real MESC annotations not found in {path} (missing {', '.join(missing)}); set MULTIMOOD_MESC_DIR"
        if os.environ.get("MULTIMOOD_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message + " (MULTIMOOD_REQUIRE_REAL_DATA=1: they are required here)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests (``pytestmark = usefixtures("one_thread")``).

    Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the hand-offs
    dominate: one training loop took 55 s with two threads and 11 s with one, a compressor forward
    0.5 s instead of 0.03 s.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_mesc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small synthetic MESC for the whole session (clips 64x48 at 10 fps, 16 kHz mono audio).

    Shared: treat it as read-only; a test that damages or edits files copies it first
    (``shutil.copytree``).
    """
    from multimood.data.synthetic import make_mesc

    root = tmp_path_factory.mktemp("synthetic-mesc")
    make_mesc(
        root,
        num_dialogues=8,
        seed=1,
        width=64,
        height=48,
        sample_rate=16_000,
        channels=1,
        clip_seconds=(0.6, 1.2),
    )
    return root
