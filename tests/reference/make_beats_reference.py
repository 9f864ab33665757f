"""Recompute the microsoft/unilm BEATs numbers that ``tests/unit/test_beats.py`` checks ours against.

``test_matches_numbers_from_the_official_implementation`` compares our ``BEATsEncoder`` with
``OFFICIAL_SLICES`` and ``OFFICIAL_ABS_MEAN``. This script produces those constants from the
official implementation, so that anyone can check where they come from. It is not a test (pytest
does not collect it) and the official code is not a dependency: it needs a checkout of the
``beats/`` folder of https://github.com/microsoft/unilm (the numbers in the test came from commit
768a3c8)::

    git clone https://github.com/microsoft/unilm && git -C unilm checkout 768a3c8
    python -m tests.reference.make_beats_reference --beats-dir unilm/beats

What it does, step by step:

1. imports the official ``BEATs``/``BEATsConfig`` from ``--beats-dir`` (their ``BEATs.py``
   imports ``backbone`` as a top-level module, so the folder goes on ``sys.path``);
2. builds the official model from the tiny cfg of the test (``TINY_BEATS_CFG`` with the
   layer-wise gradient decay off), in eval mode;
3. overwrites every parameter with ``formula_weights`` (a function of the parameter's name and
   index, no random numbers), the same function the test applies to our encoder;
4. replaces the official fbank step (``preprocess``) by one that returns ``formula_fbank`` as
   is, so that both implementations see identical, already normalised fbanks, and passes the
   frame-level padding mask (clip 1 padded from frame 144, a multiple of 16, where the
   official and our exact padding rules agree);
5. prints ``features[b, ::12, :3]`` per clip and the mean of ``|features|`` over the valid
   tokens, as Python literals to paste into the test. With ``--check`` it also runs our encoder
   on the same inputs and reports the largest difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from multimood.tiny.beats import TINY_BEATS_CFG
from tests.unit.test_beats import (
    OFFICIAL_ABS_MEAN,
    OFFICIAL_SLICES,
    formula_fbank,
    formula_weights,
)

CFG = TINY_BEATS_CFG | {"layer_wise_gradient_decay_ratio": 1.0}


def official_features(beats_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (2, N, D) and padding mask (2, N) from the official implementation."""
    sys.path.insert(0, str(beats_dir.resolve()))
    try:
        from BEATs import BEATs, BEATsConfig  # the official module, not ours
    finally:
        sys.path.pop(0)
    model = BEATs(BEATsConfig(dict(CFG))).eval()
    formula_weights(model)
    fbank, padding = formula_fbank()
    # The official extract_features computes the fbank from ``source``; hand it ours instead.
    model.preprocess = lambda source, fbank_mean=0.0, fbank_std=0.5: fbank
    with torch.no_grad():
        features, mask = model.extract_features(torch.zeros(2, 1), padding_mask=padding)
    return features, mask


def summarise(features: torch.Tensor, mask: torch.Tensor) -> tuple[list, list]:
    """The two constants of the test: ``features[b, ::12, :3]`` and the valid-token mean of |features|."""
    slices = features[:, ::12, :3].tolist()
    means = [features[b][~mask[b]].abs().mean().item() for b in range(features.shape[0])]
    return slices, means


def _literal(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return f"{value:.7g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beats-dir", type=Path, required=True, help="microsoft/unilm's beats/ folder")
    parser.add_argument(
        "--check", action="store_true", help="also compare with our BEATsEncoder and the test"
    )
    args = parser.parse_args(argv)
    if not (args.beats_dir / "BEATs.py").is_file():
        parser.error(f"{args.beats_dir} has no BEATs.py: give the beats/ folder of microsoft/unilm")

    features, mask = official_features(args.beats_dir)
    slices, means = summarise(features, mask)
    print(f"padding tokens per clip: {mask.sum(1).tolist()}")
    print("OFFICIAL_SLICES =", _literal(slices))
    print("OFFICIAL_ABS_MEAN =", _literal(means))
    if args.check:
        from multimood.models.beats import BEATsEncoder

        ours = BEATsEncoder(CFG).eval()
        formula_weights(ours)
        fbank, padding = formula_fbank()
        with torch.no_grad():
            own, own_mask = ours.forward_fbank(fbank, padding)
        valid = ~mask
        print(f"masks equal: {torch.equal(own_mask, mask)}")
        print(f"max |ours - official| over valid tokens: {(own - features)[valid].abs().max().item():.3g}")
        in_test = torch.tensor(OFFICIAL_SLICES)
        print(
            f"max |test constant - official slice|: {(in_test - torch.tensor(slices)).abs().max().item():.3g}"
        )
        print(
            "max |test constant - official mean|: "
            f"{(torch.tensor(OFFICIAL_ABS_MEAN) - torch.tensor(means)).abs().max().item():.3g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
