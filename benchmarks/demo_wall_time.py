"""Wall time of the demo (``make demo``) on this machine, per stage, plus the scores it printed.

    python -m benchmarks.demo_wall_time [--out runs/bench/demo]

Runs ``demo.py`` in-process with its defaults into ``--out`` (fresh data), then writes one row
with ``demo_results.json``'s seconds per stage and total, and the test metrics of both stage-C
runs next to the majority-class baseline. The target for the whole demo is under 10 minutes on 2
cores, stage D included once it exists.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchmarks.common import write_row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench/demo")
    args = parser.parse_args()
    import demo

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    demo.main(["--out", str(out)])
    summary = json.loads((out / "demo_results.json").read_text())
    path = write_row("demo_wall_time", summary)
    print(f"demo total {summary['seconds']['total']:.0f} s -> {path}")


if __name__ == "__main__":
    main()
