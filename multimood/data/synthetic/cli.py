"""``multimood synth {mesc,dfew} --out DIR [options]``: write a synthetic dataset from the command line."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from multimood.data.synthetic.dfew import make_dfew
from multimood.data.synthetic.mesc import make_mesc


def _pair(kind: type) -> Callable[[str], tuple]:
    """An argparse type for ``a,b`` (or ``AxB``)."""

    def parse(text: str) -> tuple:
        parts = text.replace("x", ",").split(",")
        if len(parts) != 2:
            raise ValueError(f"expected two values like 1,3 (or 160x120), got {text!r}")
        return tuple(kind(p) for p in parts)

    parse.__name__ = f"pair of {kind.__name__}"
    return parse


def main(argv: list[str] | None = None) -> int:
    """``multimood synth {mesc,dfew} --out DIR [options]``: write a synthetic dataset and print a summary."""
    import argparse

    from multimood.cli import make_parser

    mesc_defaults = {k: v.default for k, v in inspect.signature(make_mesc).parameters.items()}
    dfew_defaults = {k: v.default for k, v in inspect.signature(make_dfew).parameters.items()}

    def add(
        p: argparse.ArgumentParser,
        flag: str,
        defaults: dict,
        name: str,
        help: str,
        **kw: object,
    ) -> None:
        default = defaults[name]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument(flag, dest=name, default=default, help=f"{help} (default {shown})", **kw)

    parser = make_parser("synth", "Write a synthetic MESC or DFEW dataset in the real file formats.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    mesc = sub.add_parser("mesc", help="MESC.csv, split JSON files, one clip per utterance, episodes")
    dfew = sub.add_parser("dfew", help="Clip/original, Clip/clip_224x224 frames, 5-fold split files")
    for p, d in ((mesc, mesc_defaults), (dfew, dfew_defaults)):
        p.add_argument(
            "--out",
            required=True,
            type=Path,
            help="destination folder (empty or absent)",
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="write into a non-empty folder, replacing our files",
        )
        add(p, "--seed", d, "seed", "random seed", type=int)
        add(
            p,
            "--clip-seconds",
            d,
            "clip_seconds",
            "min,max seconds per clip",
            type=_pair(float),
        )
        add(p, "--fps", d, "fps", "video frame rate", type=float)
        size = (d["width"], d["height"])
        p.add_argument(
            "--size",
            type=_pair(int),
            default=size,
            help=f"video WIDTHxHEIGHT (default {size[0]}x{size[1]})",
        )
        add(p, "--sample-rate", d, "sample_rate", "audio sample rate", type=int)
        add(p, "--channels", d, "channels", "audio channels", type=int, choices=(1, 2))
        add(
            p,
            "--p-video",
            d,
            "p_video",
            "P(the picture shows the true emotion)",
            type=float,
        )
        add(
            p,
            "--p-audio",
            d,
            "p_audio",
            "P(the tone shows the true emotion)",
            type=float,
        )
    add(
        mesc,
        "--dialogues",
        mesc_defaults,
        "num_dialogues",
        "number of dialogues",
        type=int,
    )
    add(
        mesc,
        "--turns",
        mesc_defaults,
        "turns",
        "min,max utterances per dialogue",
        type=_pair(int),
    )
    add(
        mesc,
        "--p-text",
        mesc_defaults,
        "p_text",
        "P(the utterance's cue word is the true emotion)",
        type=float,
    )
    add(
        mesc,
        "--p-description",
        mesc_defaults,
        "p_description",
        "P(the description shows it)",
        type=float,
    )
    add(
        mesc,
        "--label-noise",
        mesc_defaults,
        "label_noise",
        "P(a therapist turn's labels are random)",
        type=float,
    )
    add(
        mesc,
        "--emotion-prior",
        mesc_defaults,
        "emotion_prior",
        "client emotion prior",
        choices=("uniform", "mesc"),
    )
    add(
        mesc,
        "--emotion-stay",
        mesc_defaults,
        "emotion_stay",
        "WITHIN,ACROSS: P(a client utterance keeps the previous client emotion) within a client "
        "turn and from one client turn to the next",
        type=_pair(float),
    )
    add(
        mesc,
        "--response-words",
        mesc_defaults,
        "response_words",
        "cut every therapist response to its first N words (None: the whole template)",
        type=int,
    )
    add(
        mesc,
        "--split-fraction",
        mesc_defaults,
        "split_fraction",
        "share of dialogues in val and in test",
        type=float,
    )
    add(
        mesc,
        "--dialogues-per-episode",
        mesc_defaults,
        "dialogues_per_episode",
        "dialogues per episode",
        type=int,
    )
    add(
        mesc,
        "--episodes-per-season",
        mesc_defaults,
        "episodes_per_season",
        "episodes per season",
        type=int,
    )
    mesc.add_argument(
        "--no-clips",
        dest="clips",
        action="store_false",
        help="write the annotations only",
    )
    mesc.add_argument(
        "--episodes",
        action="store_true",
        help="also write the episodes the clips come from",
    )
    add(dfew, "--clips", dfew_defaults, "num_clips", "number of clips", type=int)
    add(
        dfew,
        "--label-base",
        dfew_defaults,
        "label_base",
        "1: official labels, 0: zero-indexed",
        type=int,
        choices=(0, 1),
    )
    add(
        dfew,
        "--frame-size",
        dfew_defaults,
        "frame_size",
        "side of the square face frames",
        type=int,
    )
    dfew.add_argument(
        "--no-frames",
        dest="write_frames",
        action="store_false",
        help="skip the face frame folders",
    )

    args = vars(parser.parse_args(argv))
    dataset, out, overwrite = args.pop("dataset"), args.pop("out"), args.pop("force")
    args["width"], args["height"] = args.pop("size")
    try:
        make = make_mesc if dataset == "mesc" else make_dfew
        summary = make(out, overwrite=overwrite, **args)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        print(f"multimood synth: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0
