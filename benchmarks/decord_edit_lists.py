"""What decord 0.6 (VideoLLaMA2's video reader) returns for stream-copied clips, against FFmpeg.

Cuts ``--cuts`` MESC-length spans (1.5-3.1 s) with ``ffmpeg -ss START -t DUR -i episode.mp4 -c copy``
from a 640x360 episode encoded with x264's defaults, whose every frame shows its index
(:mod:`multimood.data.synthetic.cuts`), and counts per clip whether decord over-counts frames,
returns repeated or out-of-order frames, frames outside the span FFmpeg presents, or the wrong 16
sampled frames, or hangs (no answer in 60 s; each clip is read in a child process). Our loader is
checked on the same clips. Needs the dev extra (decord, imageio-ffmpeg).

Appends one JSON row to ``benchmarks/results/decord_edit_lists.jsonl`` and prints it.

    python -m benchmarks.decord_edit_lists      # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_row
from multimood.data.media import load_video, segment_midpoints
from multimood.data.synthetic.cuts import (
    cut,
    marks_of_video,
    presented_marks,
    write_marked_episode,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60
_CHILD = """
import json, sys
import decord
from multimood.data.synthetic.cuts import read_mark
reader = decord.VideoReader(sys.argv[1], num_threads=1)
print(json.dumps([read_mark(reader[i].asnumpy()) for i in range(len(reader))]))
"""


def decord_marks(path: Path) -> list[int] | None:
    """Every frame decord returns, as marks; None if it hangs."""
    try:
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "decord_edit_lists.jsonl")
    args = parser.parse_args()

    import decord
    import imageio_ffmpeg

    started = time.perf_counter()
    counts = dict.fromkeys(
        ("over_counted", "repeated_or_out_of_order", "outside_span", "wrong_sampled", "hung", "ours_right"), 0
    )
    with tempfile.TemporaryDirectory(prefix="decord-edit-lists-") as tmp:
        episode = write_marked_episode(Path(tmp) / "episode.mp4", 60.0, width=640, height=360)
        rng = np.random.default_rng(args.seed)
        for k in range(args.cuts):
            start, seconds = float(rng.uniform(1, 55)), float(rng.uniform(1.5, 3.1))
            clip = cut(episode, Path(tmp) / f"cut{k}.mp4", start, seconds, copy=True)
            marks = presented_marks(clip)
            expected = [marks[i] for i in segment_midpoints(len(marks), 16)]
            counts["ours_right"] += marks_of_video(load_video(clip), 640, 360) == expected
            got = decord_marks(clip)
            if got is None:
                counts["hung"] += 1
                continue
            counts["over_counted"] += len(got) > len(marks)
            counts["repeated_or_out_of_order"] += any(b <= a for a, b in pairwise(got))
            counts["outside_span"] += any(m < marks[0] or m > marks[-1] for m in got)
            counts["wrong_sampled"] += [got[i] for i in segment_midpoints(len(got), 16)] != expected
    row = {
        "versions": {"decord": decord.__version__, "ffmpeg_cli": imageio_ffmpeg.get_ffmpeg_version()},
        "params": {"cuts": args.cuts, "seed": args.seed, "episode": "60 s 640x360 25 fps, x264 defaults"},
        "results": counts,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    path = write_row("decord_edit_lists", row, args.out)
    print(json.dumps(row, indent=2))
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
