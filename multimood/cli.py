"""``multimood <command> [options]``: the project's small tools in one place.

Each command lives in its own module as ``main(argv) -> int`` and is imported only when run, so
``multimood --help`` is instant. ``python -m <module>`` runs the same function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "resolve": (
        "multimood.hub",
        "build (if needed) and print the local folder of tiny:/packaged: model names",
    ),
    "count-params": (
        "multimood.count_params",
        "count a model YAML's parameters (total, trainable) on the meta device, without downloading",
    ),
    "cut-clips": (
        "multimood.data.clips",
        "cut one clip per MESC.csv row out of the episodes (resumable; PyAV, no system ffmpeg)",
    ),
    "mesc-report": (
        "multimood.data.mesc_report",
        "rebuild the MESC splits and samples; print counts, trivial baselines and prompt lengths",
    ),
    "score": (
        "multimood.metrics.score",
        "score a predictions JSONL ({label, predict} answers): paper table 4 metrics, unparsable counted wrong",
    ),
    "train-verifier": (
        "multimood.rewards.emotion_verifier",
        "train the rationale reward's emotion verifier on MESC client utterances; print val accuracy",
    ),
    "synth": (
        "multimood.data.synthetic.cli",
        "write a synthetic MESC or DFEW dataset in the real file formats",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in sorted(COMMANDS.items()))
    if not argv or argv[0] in {"-h", "--help"}:
        print(
            f"usage: multimood <command> [options]\n\ncommands:\n{listing}\n\n'multimood <command> --help' for options"
        )
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"multimood: unknown command {name!r}\n\ncommands:\n{listing}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser whose usage line shows the ``multimood <command>`` form."""
    return argparse.ArgumentParser(prog=f"multimood {prog}", description=description)


if __name__ == "__main__":
    raise SystemExit(main())
