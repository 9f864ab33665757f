"""DFEW (Jiang et al. 2020) split files and clips: 5-fold cross-validation, two label conventions.

Layout (SPEC section 5)::

    Clip/original/00001.mp4                      or   Clip/clip_224x224/00001/*.jpg
    EmoLabel_DataSplit/train(single-labeled)/set_1.csv ... set_5.csv     columns video_name,label
    EmoLabel_DataSplit/test(single-labeled)/set_1.csv  ... set_5.csv

The official split files label the classes 1..7 (1 Happy, 2 Sad, 3 Neutral, 4 Angry, 5 Surprise,
6 Disgust, 7 Fear); some public copies use 0..6. ``label_base="auto"`` reads the fold's files and
decides from the labels present: a 0 means 0-indexed, a 7 means 1-indexed; files holding neither
(or both) are refused with a request to set ``label_base`` explicitly, never guessed. An explicit
convention that the files contradict is an error naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from multimood.data.labels import DFEW_LABELS

LabelBase = Literal["auto", 0, 1]
Source = Literal["original", "frames"]
SPLIT_DIRS = {"train": "train(single-labeled)", "test": "test(single-labeled)"}
FOLDS = (1, 2, 3, 4, 5)


class DFEWFormatError(ValueError):
    """A DFEW split file or clip layout problem; the message names the file (and line)."""


@dataclass(frozen=True)
class DFEWSample:
    """One DFEW clip with its 0-based class index into ``labels.DFEW_LABELS``."""

    name: str  # 5-digit clip name, e.g. "00001"
    label: int
    source: Path  # the mp4, or the folder of face-aligned frames


def split_file(root: str | Path, fold: int, split: str) -> Path:
    if fold not in FOLDS:
        raise ValueError(f"DFEW fold must be one of {FOLDS}, got {fold!r}")
    if split not in SPLIT_DIRS:
        raise ValueError(f"DFEW split must be train or test, got {split!r}")
    return Path(root) / "EmoLabel_DataSplit" / SPLIT_DIRS[split] / f"set_{fold}.csv"


def _read_rows(path: Path) -> list[tuple[int, str, int]]:
    """(line, clip name, raw label) for every row."""
    if not path.is_file():
        raise DFEWFormatError(f"{path}: DFEW split file not found")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["video_name", "label"]:
            raise DFEWFormatError(f"{path}:1: expected the header 'video_name,label', got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DFEWFormatError(f"{path}:{line}: expected 2 columns, got {len(row)}")
            name, raw = row[0].strip(), row[1].strip()
            try:
                label = int(raw)
            except ValueError:
                raise DFEWFormatError(f"{path}:{line}: label {raw!r} is not an integer") from None
            if not 0 <= label <= len(DFEW_LABELS):
                raise DFEWFormatError(f"{path}:{line}: label {label} is outside 0..{len(DFEW_LABELS)}")
            rows.append((line, f"{int(name):05d}" if name.isdigit() else name, label))
    return rows


def detect_label_base(files: dict[Path, list[tuple[int, str, int]]]) -> int:
    """0 or 1 from the labels present; DFEWFormatError when the files cannot tell or disagree."""
    values = {label for rows in files.values() for _, _, label in rows}
    names = ", ".join(str(p) for p in files)
    if 0 in values and len(DFEW_LABELS) in values:
        raise DFEWFormatError(
            f"{names}: labels run from 0 to {len(DFEW_LABELS)}, which fits neither convention"
        )
    if 0 in values:
        return 0
    if len(DFEW_LABELS) in values:
        return 1
    raise DFEWFormatError(
        f"{names}: labels {sorted(values)} do not show whether they are 0- or 1-indexed; set label_base to 0 or 1"
    )


def _check_base(files: dict[Path, list[tuple[int, str, int]]], base: int) -> None:
    for path, rows in files.items():
        for line, _, label in rows:
            if not base <= label < base + len(DFEW_LABELS):
                hint = (
                    "0-indexed files need label_base: 0"
                    if label == 0
                    else "1-indexed files need label_base: 1"
                )
                raise DFEWFormatError(f"{path}:{line}: label {label} does not fit label_base={base} ({hint})")


def clip_source(root: str | Path, name: str, source: Source) -> Path:
    root = Path(root) / "Clip"
    if source == "original":
        return root / "original" / f"{name}.mp4"
    if source == "frames":
        return root / "clip_224x224" / name
    raise ValueError(f"DFEW source must be 'original' or 'frames', got {source!r}")


def load_dfew_fold(
    root: str | Path, fold: int, source: Source = "original", label_base: LabelBase = "auto"
) -> tuple[dict[str, list[DFEWSample]], int]:
    """Train and test samples of one fold, and the label convention used (0 or 1).

    Clips are not opened here (a missing clip is a missing modality at load time, counted then).
    """
    files = {split_file(root, fold, split): _read_rows(split_file(root, fold, split)) for split in SPLIT_DIRS}
    if label_base == "auto":
        base = detect_label_base(files)
    elif label_base in (0, 1):
        base = int(label_base)
    else:
        raise ValueError(f"label_base must be 'auto', 0 or 1, got {label_base!r}")
    _check_base(files, base)
    out: dict[str, list[DFEWSample]] = {}
    for split, (path, rows) in zip(SPLIT_DIRS, files.items(), strict=True):
        seen: dict[str, int] = {}
        samples = []
        for line, name, label in rows:
            if name in seen:
                raise DFEWFormatError(
                    f"{path}:{line}: clip {name} is listed twice (first on line {seen[name]})"
                )
            seen[name] = line
            samples.append(DFEWSample(name, label - base, clip_source(root, name, source)))
        out[split] = samples
    overlap = {s.name for s in out["train"]} & {s.name for s in out["test"]}
    if overlap:
        raise DFEWFormatError(
            f"fold {fold}: {len(overlap)} clips are in both train and test, e.g. {sorted(overlap)[:5]}"
        )
    return out, base
