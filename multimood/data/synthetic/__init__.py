"""Synthetic MESC and DFEW datasets in the real file formats, with labels that can be learned.

Nothing here reads the real data: layouts, column orders and value formats are those the readers
(:mod:`multimood.data.mesc`, :mod:`multimood.data.dfew`) accept, and the tests compare them with the
real annotation files column for column and key for key.

The package, one job per module:

:mod:`~multimood.data.synthetic.mp4`
    :func:`write_clip`, a real mp4 (H.264 video, AAC audio) written with PyAV, which ships its own
    FFmpeg; output-folder helpers.
:mod:`~multimood.data.synthetic.signals`
    How a label shows in pictures and sound (colour, motion, pitch) and the clip renderer.
:mod:`~multimood.data.synthetic.text`
    How a label shows in words (cue words, templates, descriptions); the tiny tokenizer's corpus
    reads its vocabulary from here.
:mod:`~multimood.data.synthetic.mesc`
    :func:`make_mesc`: ``MESC.csv``, ``train.json``/``val.json``/``test.json``, one clip per
    utterance in ``clips/`` and optionally the episodes the clips would be cut from.
:mod:`~multimood.data.synthetic.dfew`
    :func:`make_dfew`: ``Clip/original/*.mp4``, face-aligned frame folders and the 5-fold split files.
:mod:`~multimood.data.synthetic.cuts`
    Episodes whose frames carry their own index as a visible code, and clips cut from them with
    the ffmpeg binary of ``imageio-ffmpeg`` (stream copy or re-encoding): tests and benchmarks
    check decoded frames against the marks.
:mod:`~multimood.data.synthetic.cli`
    ``multimood synth {mesc,dfew} --out DIR [options]`` (or ``python -m multimood.data.synthetic``).

Determinism and sizes
---------------------
Everything is a function of ``seed``: the same seed gives byte-identical CSV/JSON files and clips
with identical decoded content (with PyAV 18.1 the mp4 files are byte-identical too: x264 runs
single-threaded). Dialogue ``d`` draws from its own random stream, so growing ``num_dialogues``
keeps the earlier dialogues' text and labels. Defaults are small but realistic: 24 dialogues of
8-16 utterances of 1-3 s (about 300 clips, 17 MB), 160x120 px H.264 at 10 fps, 44.1 kHz stereo
AAC (so readers exercise down-mixing and resampling); DFEW: 35 clips of 1-3 s plus 224 px face
frames; episodes double the media written. Timings: docs/design/synthetic.md.

Names are imported lazily from their modules, so ``from multimood.data.synthetic.text import ...``
does not load the media writers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "write_clip": "mp4",
    "MediaConfig": "signals",
    "EMOTION_COLOURS": "signals",
    "EMOTION_TONES_HZ": "signals",
    "EMOTION_MOTION_HZ": "signals",
    "TEXT_CUES": "text",
    "DESCRIPTION_CUES": "text",
    "VOICE_CUES": "text",
    "PROBLEM_TYPES": "text",
    "RESPONSE_TEMPLATES": "text",
    "synthetic_vocabulary": "text",
    "EPISODE_PATTERN": "mesc",
    "MESC_COLUMNS": "mesc",
    "STRATEGY_RULES": "mesc",
    "THERAPIST_EMOTION": "mesc",
    "MescSummary": "mesc",
    "make_mesc": "mesc",
    "DfewSummary": "dfew",
    "make_dfew": "dfew",
    "main": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
