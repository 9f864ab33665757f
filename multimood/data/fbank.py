"""BEATs' input features: the kaldi fbank of 16 kHz mono audio, as the BEATs paper trained on.

Feature extraction lives apart from the encoder (:mod:`multimood.models.beats`) so that the data
pipeline computes fbanks in DataLoader workers, and caches them, without importing any model code.
Numbers from the official ``BEATs.preprocess`` (microsoft/unilm ``beats/BEATs.py``).
"""

from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi

# BEATs' input: 16 kHz mono, scaled to 16-bit integer range, kaldi fbank with 128 mel bins over
# 25 ms windows every 10 ms, normalised with the AudioSet statistics BEATs was trained with.
BEATS_SAMPLE_RATE = 16_000
BEATS_MEL_BINS = 128
BEATS_FRAME_LENGTH_MS = 25.0
BEATS_FRAME_SHIFT_MS = 10.0
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582


def fbank_num_frames(num_samples: int) -> int:
    """Frames kaldi's fbank yields for ``num_samples`` at 16 kHz (snip_edges: whole windows only)."""
    window = int(BEATS_SAMPLE_RATE * BEATS_FRAME_LENGTH_MS / 1000)
    shift = int(BEATS_SAMPLE_RATE * BEATS_FRAME_SHIFT_MS / 1000)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def beats_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """Normalised BEATs fbank of one mono 16 kHz waveform in [-1, 1].

    waveform: (num_samples,) -> (num_frames, 128). Raises ValueError for clips shorter than one
    25 ms window (kaldi cannot frame them).
    """
    if waveform.dim() != 1:
        raise ValueError(f"beats_fbank expects a 1-D mono waveform, got shape {tuple(waveform.shape)}")
    if fbank_num_frames(waveform.numel()) == 0:
        raise ValueError(f"audio too short for one fbank frame: {waveform.numel()} samples at 16 kHz")
    fbank = kaldi.fbank(
        waveform.float().unsqueeze(0) * 2**15,
        num_mel_bins=BEATS_MEL_BINS,
        sample_frequency=BEATS_SAMPLE_RATE,
        frame_length=BEATS_FRAME_LENGTH_MS,
        frame_shift=BEATS_FRAME_SHIFT_MS,
    )
    return (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
