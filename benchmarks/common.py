"""Shared by the benchmarks: machine facts and appending one JSON result row."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """Where a number was measured; machines are shared, so the load average is part of it."""
    import contextlib

    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):  # not Linux: keep platform's answer
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
    }


def write_row(name: str, row: dict[str, Any], out: str | Path | None = None) -> Path:
    """Append ``row`` (plus timestamp and machine facts) to ``results/<name>.jsonl`` or ``out``."""
    path = Path(out) if out else RESULTS / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {
        "benchmark": name,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **row,
    }
    with path.open("a") as f:
        f.write(json.dumps(full) + "\n")
    return path


def spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """Min, median and max of repeated measurements (a shared machine: report the spread)."""
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }
