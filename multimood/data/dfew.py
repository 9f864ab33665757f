"""DFEW (Jiang et al. 2020) split files and clips: 5-fold cross-validation, three list formats.

The official layout (the DFEW release)::

    Clip/original/00001.mp4                      or   Clip/clip_224x224/00001/*.jpg
    EmoLabel_DataSplit/train(single-labeled)/set_1.csv ... set_5.csv     columns video_name,label
    EmoLabel_DataSplit/test(single-labeled)/set_1.csv  ... set_5.csv

Clip names may be zero-padded (``00001.mp4``, as released) or not (``1.mp4``): both are found.

Per-fold annotation lists that public DFER code ships are read too, without converting
(``split_files`` names them with a ``{fold}``/``{split}`` pattern; the format is detected per file):

* ``official``: CSV with the header ``video_name,label``;
* ``dfer_clip``: ``<path> <num_frames> <label>`` per line, space-separated, no header (DFER-CLIP);
* ``mae_dfer``: ``<path> <label>`` per line, space-separated, no header (MAE-DFER).

A list's ``<path>`` is used as it is when it exists (absolute, or relative to the data folder);
otherwise its last component (without ``.mp4``) is taken as the clip name and looked up in the
data folder as above, so lists written on another machine work unchanged.

The official split files label the classes 1..7 (1 Happy, 2 Sad, 3 Neutral, 4 Angry, 5 Surprise,
6 Disgust, 7 Fear); some public copies, and the DFER-CLIP and MAE-DFER lists, use 0..6.
``label_base="auto"`` reads the fold's files and decides from the labels present: a 0 means
0-indexed, a 7 means 1-indexed; files holding neither (or both) are refused with a request to set
``label_base`` explicitly, never guessed. An explicit convention that the files contradict is an
error naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from multimood.data.labels import DFEW_LABELS

LabelBase = Literal["auto", 0, 1]
Source = Literal["original", "frames"]
SplitFormat = Literal["auto", "official", "dfer_clip", "mae_dfer"]
SPLIT_FORMATS: tuple[str, ...] = ("official", "dfer_clip", "mae_dfer")
SPLIT_DIRS = {"train": "train(single-labeled)", "test": "test(single-labeled)"}
FOLDS = (1, 2, 3, 4, 5)


class DFEWFormatError(ValueError):
    """A DFEW split file or clip layout problem; the message names the file (and line)."""


@dataclass(frozen=True)
class DFEWSample:
    """One DFEW clip with its 0-based class index into ``labels.DFEW_LABELS``."""

    name: str  # 5-digit clip name, e.g. "00001"
    label: int
    source: Path  # the mp4, or the folder of face-aligned frames (it may not exist: counted at load)


def split_file(root: str | Path, fold: int, split: str, pattern: str | None = None) -> Path:
    """The annotation file of one fold and split: the official layout, or ``pattern`` with ``{fold}``
    and ``{split}`` (``train``/``test``) filled in, relative to ``root`` unless absolute."""
    if fold not in FOLDS:
        raise ValueError(f"DFEW fold must be one of {FOLDS}, got {fold!r}")
    if split not in SPLIT_DIRS:
        raise ValueError(f"DFEW split must be train or test, got {split!r}")
    if pattern is None:
        return Path(root) / "EmoLabel_DataSplit" / SPLIT_DIRS[split] / f"set_{fold}.csv"
    if "{fold}" not in pattern or "{split}" not in pattern:
        raise ValueError(f"split_files {pattern!r} must contain {{fold}} and {{split}}")
    path = Path(pattern.format(fold=fold, split=split)).expanduser()
    return path if path.is_absolute() else Path(root) / path


@dataclass(frozen=True)
class _Row:
    line: int
    name: str  # clip name, zero-padded to 5 digits when numeric
    label: int  # as written in the file
    path: str | None = None  # the list's own path for the clip (list formats only)


def _clip_name(raw: str) -> str:
    return f"{int(raw):05d}" if raw.isdigit() else raw


def detect_split_format(path: Path, first_line: str) -> str:
    """``official``, ``dfer_clip`` or ``mae_dfer`` from a file's first line (see the module docstring)."""
    if [cell.strip() for cell in first_line.split(",")] == ["video_name", "label"]:
        return "official"
    fields = first_line.split()
    if len(fields) == 3:
        return "dfer_clip"
    if len(fields) == 2:
        return "mae_dfer"
    raise DFEWFormatError(
        f"{path}:1: cannot tell the format: expected the header 'video_name,label' (official), "
        f"'<path> <num_frames> <label>' (dfer_clip) or '<path> <label>' (mae_dfer), got {first_line!r}"
    )


def _label(raw: str, path: Path, line: int) -> int:
    try:
        label = int(raw)
    except ValueError:
        raise DFEWFormatError(f"{path}:{line}: label {raw!r} is not an integer") from None
    if not 0 <= label <= len(DFEW_LABELS):
        raise DFEWFormatError(f"{path}:{line}: label {label} is outside 0..{len(DFEW_LABELS)}")
    return label


def _read_rows(path: Path, split_format: SplitFormat = "auto") -> list[_Row]:
    """Every row of one annotation file, in any of the three formats."""
    if not path.is_file():
        raise DFEWFormatError(f"{path}: DFEW split file not found")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    first = next((line for line in lines if line.strip()), "")
    found = detect_split_format(path, first.strip())
    if split_format != "auto" and split_format != found:
        raise DFEWFormatError(f"{path}: split_format is {split_format!r} but the file reads as {found!r}")
    rows: list[_Row] = []
    if found == "official":
        reader = csv.reader(lines)
        next(reader)  # the header, checked above
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DFEWFormatError(f"{path}:{line}: expected 2 columns, got {len(row)}")
            rows.append(_Row(line, _clip_name(row[0].strip()), _label(row[1].strip(), path, line)))
        return rows
    width = 3 if found == "dfer_clip" else 2
    for line, text in enumerate(lines, start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != width:
            raise DFEWFormatError(
                f"{path}:{line}: expected {width} space-separated fields ({found}), got {len(fields)}"
            )
        listed = fields[0].rstrip("/")
        name = _clip_name(Path(listed).name.removesuffix(".mp4"))
        rows.append(_Row(line, name, _label(fields[-1], path, line), listed))
    return rows


def detect_label_base(files: dict[Path, list[_Row]]) -> int:
    """0 or 1 from the labels present; DFEWFormatError when the files cannot tell or disagree."""
    values = {row.label for rows in files.values() for row in rows}
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


def _check_base(files: dict[Path, list[_Row]], base: int) -> None:
    for path, rows in files.items():
        for line, label in ((row.line, row.label) for row in rows):
            if not base <= label < base + len(DFEW_LABELS):
                hint = (
                    "0-indexed files need label_base: 0"
                    if label == 0
                    else "1-indexed files need label_base: 1"
                )
                raise DFEWFormatError(f"{path}:{line}: label {label} does not fit label_base={base} ({hint})")


def clip_source(root: str | Path, name: str, source: Source) -> Path:
    """Where clip ``name`` is: ``Clip/original/<name>.mp4`` or ``Clip/clip_224x224/<name>/``, with the
    name zero-padded to 5 digits (as released) or not (``1.mp4``), whichever exists; the padded
    path when neither does (the loader then counts the clip as missing)."""
    if source not in ("original", "frames"):
        raise ValueError(f"DFEW source must be 'original' or 'frames', got {source!r}")
    folder = Path(root) / "Clip" / ("original" if source == "original" else "clip_224x224")
    suffix = ".mp4" if source == "original" else ""
    names = [name] + ([str(int(name))] if name.isdigit() and str(int(name)) != name else [])
    candidates = [folder / f"{n}{suffix}" for n in names]
    return next((c for c in candidates if c.exists()), candidates[0])


def _listed_source(root: Path, row: _Row, source: Source) -> Path:
    if row.path is not None:
        listed = Path(row.path).expanduser()
        for candidate in (listed, root / listed):
            if candidate.exists():
                return candidate
    return clip_source(root, row.name, source)


def load_dfew_fold(
    root: str | Path,
    fold: int,
    source: Source = "original",
    label_base: LabelBase = "auto",
    split_files: str | None = None,
    split_format: SplitFormat = "auto",
) -> tuple[dict[str, list[DFEWSample]], int]:
    """Train and test samples of one fold, and the label convention used (0 or 1).

    split_files: pattern of the annotation files (``{fold}``, ``{split}``); None: the official layout.
    split_format: ``auto`` (detected per file) or one of :data:`SPLIT_FORMATS` (checked).

    Clips are located (padded or unpadded names) but not opened here: a missing clip is a missing
    modality at load time, counted then.
    """
    root = Path(root)
    files = {
        split_file(root, fold, split, split_files): _read_rows(
            split_file(root, fold, split, split_files), split_format
        )
        for split in SPLIT_DIRS
    }
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
        for row in rows:
            if row.name in seen:
                raise DFEWFormatError(
                    f"{path}:{row.line}: clip {row.name} is listed twice (first on line {seen[row.name]})"
                )
            seen[row.name] = row.line
            samples.append(DFEWSample(row.name, row.label - base, _listed_source(root, row, source)))
        out[split] = samples
    overlap = {s.name for s in out["train"]} & {s.name for s in out["test"]}
    if overlap:
        raise DFEWFormatError(
            f"fold {fold}: {len(overlap)} clips are in both train and test, e.g. {sorted(overlap)[:5]}"
        )
    return out, base


def validation_split(
    samples: list[DFEWSample], fraction: float, seed: int
) -> tuple[list[DFEWSample], list[DFEWSample]]:
    """``(train, val)``: a seeded, class-stratified ``fraction`` of a fold's training list held out
    for model selection, so that the fold's test split is touched only to report.

    Each class gives ``round(fraction * its count)`` clips (at least one when ``fraction > 0`` and
    the class has two or more); the order of both parts is the list's order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return list(samples), []
    import numpy as np

    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in sorted({s.label for s in samples}):
        members = [i for i, s in enumerate(samples) if s.label == label]
        count = round(fraction * len(members))
        if count == 0 and len(members) > 1:
            count = 1
        held.update(rng.choice(members, size=min(count, len(members) - 1), replace=False).tolist())
    return (
        [s for i, s in enumerate(samples) if i not in held],
        [s for i, s in enumerate(samples) if i in held],
    )
