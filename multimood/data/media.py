"""Decoding the clips of one sample into model inputs: 16 video frames for SigLIP, a BEATs fbank.

Video (SPEC section 2, as in VideoLLaMA2): ``num_frames`` frames at the midpoints of equal
segments of the clip, decoded with decord (only those frames), padded to a square with the
normalisation mean as colour, resized to ``image_size`` (bicubic, antialiased) and normalised.
Audio: the clip's audio track decoded with PyAV, averaged to mono, resampled to 16 kHz, turned
into the BEATs fbank (:func:`multimood.data.fbank.beats_fbank`) and cropped to a maximum length.

Several clips of one sample (a client turn spanning consecutive utterance clips) form one
timeline: frames are sampled over the concatenated clips, waveforms are concatenated.

Bad media policy: every way a file can fail (missing, empty, truncated, undecodable, no video
stream for video, no audio stream for audio) raises :class:`MediaError`, which names the file and
carries a short, stable ``reason`` (one of :data:`MEDIA_ERROR_REASONS`) for counting. The caller
(the datamodule) turns it into a missing modality for that sample (SPEC section 5).

What the native decoders do on bad files (measured with tests/integration/test_media_fuzz.py's
corpus, ~7,000 damaged variants of real clips through both loaders): neither decord 0.6.0 nor
PyAV 18.1 crashed or hung. decord raises ``DECORDError`` or ``RuntimeError``; PyAV raises
``av.error.FFmpegError`` subclasses, ``UnicodeDecodeError`` on garbled metadata (avoided with
``metadata_errors="ignore"``), and gives a stream without a codec context when the codec tag is
damaged (checked here). Both conceal damaged H.264 payload: a file with flipped bytes inside the
frame data may decode to plausible but damaged frames, which no decoder can tell from good ones.
PyAV's AAC decoder, by contrast, fails on the first damaged packet (we keep that strictness: a
damaged audio track is a missing modality, not a silently shortened one). decord's AudioReader
and PyAV both return the decodable prefix of a truncated file whose index is at the front, so
audio length is checked against the declared duration here. Every file is opened with PyAV first
(with a timeout, refusing non-regular files such as FIFOs, which would block) and handed to decord
only when it has a video stream of known codec and sane size. decord readers hold several MB each
until they are deleted (ENVIRONMENT.md), so every reader is released before the loader returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from multimood.data.fbank import (
    BEATS_FRAME_LENGTH_MS,
    BEATS_FRAME_SHIFT_MS,
    BEATS_SAMPLE_RATE,
    beats_fbank,
    fbank_num_frames,
)

# SigLIP's image processor normalises with mean = std = 0.5 per channel (SigLIP-So400M-Patch14-384).
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SIGLIP_IMAGE_SIZE = 384
NUM_FRAMES = 16  # SPEC section 2: 16 frames per clip -> 8x13x13 tokens after the STC connector
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Paper section 3 / SPEC: "BEATs on 30 s gives ~1,496" tokens; longer audio is cropped.
DEFAULT_MAX_AUDIO_SECONDS = 30.0
# BEATs embeds 16x16 fbank patches, so fewer than 16 frames give it no patch at all.
BEATS_PATCH_FRAMES = 16

# Stable reasons (for counting); the free-form decoder message goes to MediaError.detail.
MISSING = "missing file"
NOT_A_FILE = "not a regular file"
EMPTY = "empty file"
UNREADABLE = "unreadable container"
NO_VIDEO = "no video stream"
NO_AUDIO = "no audio stream"
BAD_DIMENSIONS = "bad video dimensions"
UNKNOWN_CODEC = "unknown codec"
NO_FRAMES = "no frames"
VIDEO_DECODE = "video decode failed"
IMAGE_DECODE = "image decode failed"
AUDIO_DECODE = "audio decode failed"
TRUNCATED_AUDIO = "truncated audio"
AUDIO_TOO_SHORT = "audio too short"
MEDIA_ERROR_REASONS = (
    MISSING,
    NOT_A_FILE,
    EMPTY,
    UNREADABLE,
    NO_VIDEO,
    NO_AUDIO,
    BAD_DIMENSIONS,
    UNKNOWN_CODEC,
    NO_FRAMES,
    VIDEO_DECODE,
    IMAGE_DECODE,
    AUDIO_DECODE,
    TRUNCATED_AUDIO,
    AUDIO_TOO_SHORT,
)

# A corrupted header can claim any size; refuse absurd ones before a decoder allocates for them.
MAX_VIDEO_SIDE = 8192
# PyAV aborts opening/reading after this many seconds without progress (FFmpeg interrupt callback).
OPEN_TIMEOUT_S = 20.0
# Decoded audio may fall short of the declared duration by this much before it counts as truncated
# (AAC frames are 1024 samples, so a few tens of ms of slack are normal).
TRUNCATION_SLACK_S = 0.1
TRUNCATION_SLACK_FRACTION = 0.05


class MediaError(Exception):
    """A media file that cannot be used: names the file, a stable short ``reason`` and a ``detail``.

    ``reason`` is one of :data:`MEDIA_ERROR_REASONS` (count by it); ``detail`` is the decoder's own
    message, shortened (log it once per file).
    """

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[type[MediaError], tuple[str, str, str]]:
        # Survives pickling (DataLoader workers, subprocess guards) with all three fields.
        return (MediaError, (self.path, self.reason, self.detail))


def _short(error: BaseException, limit: int = 200) -> str:
    """One line of a decoder's message: decord prefixes '[hh:mm:ss] /src/file.cc:123: ' and traces."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = re.sub(r"^(\[[\d:]+\]\s*\S+:\d+:\s*)+", "", text)
    return f"{type(error).__name__}: {text}"[:limit]


def _check_file(path: Path) -> None:
    try:
        if not path.exists():
            raise MediaError(path, MISSING)
        if not path.is_file():  # directories, FIFOs and devices: opening a FIFO would block forever
            raise MediaError(path, NOT_A_FILE)
        if path.stat().st_size == 0:
            raise MediaError(path, EMPTY)
    except OSError as error:  # permissions, broken mounts, over-long names
        raise MediaError(path, UNREADABLE, _short(error)) from error


@contextmanager
def _open_container(path: Path) -> Iterator[Any]:
    """Open a media file with PyAV, turning every failure into a MediaError (UNREADABLE)."""
    import av

    _check_file(path)
    try:
        # metadata_errors="ignore": garbled tags (UnicodeDecodeError) must not reject good streams.
        container = av.open(str(path), metadata_errors="ignore", timeout=OPEN_TIMEOUT_S)
    except (av.error.FFmpegError, ValueError, OSError, EOFError, NotImplementedError) as error:
        raise MediaError(path, UNREADABLE, _short(error)) from error
    try:
        yield container
    finally:
        container.close()


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or a sequence of paths (the consecutive clips of one sample) -> a non-empty list."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise ValueError("no media paths given")
    return [Path(item) for item in items]


# ----------------------------------------------------------------------------------------- video


def segment_midpoints(num_available: int, num_samples: int) -> np.ndarray:
    """Indices of ``num_samples`` frames at the midpoints of equal segments of ``num_available``.

    The span [0, num_available - 1] is cut into ``num_samples`` equal segments and the middle of
    each is rounded to a frame, as VideoLLaMA2's uniform ``frame_sample`` does (its "v1", which
    MultiMood inherits with VideoLLaMA2's weights). A clip with fewer frames than ``num_samples`` repeats its
    nearest frames, so the STC connector always gets a full, evenly spaced sequence and no mask is
    needed (VideoLLaMA2 behaves the same way). Returns int64 (num_samples,), non-decreasing.
    """
    if num_available < 1:
        raise ValueError(f"need at least one frame to sample from, got {num_available}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    segment = (num_available - 1) / num_samples
    midpoints = segment * (np.arange(num_samples) + 0.5)
    # + 1e-6: exact halves round up, as in VideoLLaMA2 (np.round alone rounds halves to even).
    return np.round(midpoints + 1e-6).astype(np.int64)


def _natural_key(name: str) -> list[int | str]:
    # "frame10" after "frame9"; identical to plain sorting for zero-padded names such as DFEW's.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


_quiet_pid: int | None = None


def quiet_decoder_logs() -> None:
    """Silence the FFmpeg inside decord (once per process; DataLoader workers call it themselves).

    On a damaged stream it prints a line per broken macroblock to stderr ("error while decoding
    MB ..."), hundreds per file; a MediaError already names the file and the reason. PyAV's FFmpeg
    logs nothing by default.
    """
    global _quiet_pid
    if _quiet_pid != os.getpid():
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        _quiet_pid = os.getpid()


class _VideoFile:
    """One video file opened with decord after a PyAV probe; ``close`` releases the reader."""

    def __init__(self, path: Path) -> None:
        import decord

        quiet_decoder_logs()
        self.path = path
        with _open_container(path) as container:
            if not container.streams.video:
                raise MediaError(path, NO_VIDEO)
            stream = container.streams.video[0]
            if stream.codec_context is None:  # PyAV knows no decoder for the stream's codec id
                raise MediaError(path, UNKNOWN_CODEC)
            width, height = stream.codec_context.width, stream.codec_context.height
            if not (0 < width <= MAX_VIDEO_SIDE and 0 < height <= MAX_VIDEO_SIDE):
                raise MediaError(path, BAD_DIMENSIONS, f"{width}x{height}")
        try:
            # num_threads=1: parallelism comes from DataLoader workers; decord's own threads can
            # deadlock under multiprocessing (noted in VideoLLaMA2's loader).
            self._reader: Any = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._reader)
        except (decord.DECORDError, RuntimeError) as error:
            self._reader = None
            raise MediaError(path, VIDEO_DECODE, _short(error)) from error
        if self.num_frames < 1:
            self.close()
            raise MediaError(path, NO_FRAMES)

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        """uint8 (H, W, 3) RGB frames at ``indices`` (decoded once each, in one batch)."""
        import decord

        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            batch = self._reader.get_batch(unique.tolist())
            # The native bridge gives a decord NDArray; another module may have set the torch bridge.
            array = batch.asnumpy() if hasattr(batch, "asnumpy") else batch.numpy()
            del batch
        except (decord.DECORDError, RuntimeError, IndexError) as error:
            raise MediaError(self.path, VIDEO_DECODE, _short(error)) from error
        if array.ndim != 4 or array.shape[0] != len(unique) or array.shape[-1] != 3:
            raise MediaError(self.path, VIDEO_DECODE, f"decoder returned shape {array.shape}")
        return [array[i] for i in inverse]

    def close(self) -> None:
        # decord frees a reader's buffers only when the object dies; drop our only reference.
        self._reader = None


class _FrameFolder:
    """A folder of frame images (DFEW ``clip_224x224/XXXXX/*.jpg``), in natural name order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.files = sorted(
                (f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                key=lambda f: _natural_key(f.name),
            )
        except OSError as error:
            raise MediaError(path, UNREADABLE, _short(error)) from error
        self.num_frames = len(self.files)
        if self.num_frames == 0:
            raise MediaError(path, NO_FRAMES, f"no {'/'.join(IMAGE_SUFFIXES)} files")

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        from PIL import Image

        decoded: dict[int, np.ndarray] = {}
        for index in np.unique(indices).tolist():
            file = self.files[index]
            try:
                with Image.open(file) as image:
                    decoded[index] = np.asarray(image.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                raise MediaError(file, IMAGE_DECODE, _short(error)) from error
        return [decoded[i] for i in indices.tolist()]

    def close(self) -> None:
        pass


def _open_video_source(path: Path) -> _VideoFile | _FrameFolder:
    if path.is_dir():
        return _FrameFolder(path)
    return _VideoFile(path)


def _fit(frames: torch.Tensor, image_size: int) -> torch.Tensor:  # (T, 3, H, W) uint8 -> (T, 3, h, w)
    """Resize so that the longer side is ``image_size`` (bicubic with antialiasing, like PIL's)."""
    _, _, height, width = frames.shape
    scale = image_size / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return frames
    # uint8 in, uint8 out (rounded and clamped), as PIL resizes; torch's uint8 bicubic with
    # antialias matches PIL's to within one grey level.
    return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)


def preprocess_frames(
    frames: Sequence[np.ndarray],
    image_size: int = SIGLIP_IMAGE_SIZE,
    mean: Sequence[float] = SIGLIP_MEAN,
    std: Sequence[float] = SIGLIP_STD,
) -> torch.Tensor:
    """uint8 RGB frames (each (H, W, 3), sizes may differ) -> normalised float (T, 3, S, S).

    Each frame is padded to a square of colour ``int(255 * mean)`` with the content centred
    (VideoLLaMA2's ``expand2square`` with the image processor's mean, offset (long - short) // 2),
    brought to ``image_size`` with bicubic resampling, scaled to [0, 1] and normalised with
    ``(x - mean) / std``. The resize happens before the padding here, on ~44% fewer pixels for
    16:9 frames; the two orders give the same picture at the same scale except in the one or two
    pixel rows where the bicubic kernel meets the border.
    """
    if not frames:
        raise ValueError("no frames to preprocess")
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std_t)  # uint8 -> (x / 255 - mean) / std in one multiply-subtract
    shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t
    fill = torch.tensor([int(255 * m) for m in mean], dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((len(frames), 3, image_size, image_size), dtype=torch.float32)
    out[:] = fill * scale - shift
    start = 0
    # Consecutive frames of the same size (always the case within one clip) go through one resize.
    while start < len(frames):
        end = start + 1
        while end < len(frames) and frames[end].shape == frames[start].shape:
            end += 1
        batch = torch.from_numpy(np.stack(frames[start:end])).permute(0, 3, 1, 2)  # (t, 3, H, W)
        resized = _fit(batch, image_size)  # (t, 3, h, w), h or w = image_size
        h, w = resized.shape[-2:]
        top, left = (image_size - h) // 2, (image_size - w) // 2
        region = out[start:end, :, top : top + h, left : left + w]
        region.copy_(resized)
        region.mul_(scale).sub_(shift)
        start = end
    return out


def load_video(
    paths: str | Path | Sequence[str | Path],
    num_frames: int = NUM_FRAMES,
    image_size: int = SIGLIP_IMAGE_SIZE,
    mean: Sequence[float] = SIGLIP_MEAN,
    std: Sequence[float] = SIGLIP_STD,
) -> torch.Tensor:
    """Decode ``num_frames`` frames, sampled over one or more clips, into a (T, 3, S, S) float tensor.

    paths: a video file, a folder of frame images, or a sequence of them forming one timeline
    (frames are sampled at segment midpoints over the summed frame counts, so a clip gets frames
    in proportion to its length). Only the sampled frames are decoded. Raises MediaError for any
    unusable file (the first bad clip of the sequence).
    """
    sources: list[_VideoFile | _FrameFolder] = []
    with ExitStack() as stack:
        for path in _as_paths(paths):
            source = _open_video_source(path)
            stack.callback(source.close)
            sources.append(source)
        counts = np.array([source.num_frames for source in sources])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        indices = segment_midpoints(int(offsets[-1]), num_frames)  # over the concatenated timeline
        clip_of = np.searchsorted(offsets, indices, side="right") - 1
        frames: list[np.ndarray] = []
        for k, source in enumerate(sources):
            local = indices[clip_of == k] - offsets[k]
            if local.size:
                frames.extend(source.frames(local))
    return preprocess_frames(frames, image_size, mean, std)


# ----------------------------------------------------------------------------------------- audio


def decode_audio(
    path: str | Path, sample_rate: int = BEATS_SAMPLE_RATE, max_samples: int | None = None
) -> torch.Tensor:
    """The first audio stream of one file as a mono float32 waveform at ``sample_rate``: (samples,).

    Channels are averaged (the usual downmix for BEATs; FFmpeg's own stereo->mono would add 3 dB),
    and the result is resampled with FFmpeg's resampler. Samples past the declared stream duration
    (AAC pads its last frame) are dropped; decoded audio well short of the declared duration raises
    MediaError(TRUNCATED_AUDIO). With ``max_samples``, decoding stops once that many samples are
    in (a long file is not decoded to the end only to be cropped) and at most that many return.
    """
    import av

    path = Path(path)
    with _open_container(path) as container:
        if not container.streams.audio:
            raise MediaError(path, NO_AUDIO)
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise MediaError(path, UNKNOWN_CODEC)
        declared_s = (
            float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        )
        chunks: list[np.ndarray] = []
        try:
            # Keep the channels (planar float) so that they can be averaged exactly afterwards.
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            collected, stopped_early = 0, False
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())  # (channels, samples)
                        collected += out.samples
                if max_samples is not None and collected >= max_samples:
                    stopped_early = True
                    break
            if not stopped_early:
                chunks.extend(out.to_ndarray() for out in resampler.resample(None))  # flush the tail
            # (C, N) -> (N,); a channel count that changes mid-stream fails here
            waveform = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32) if chunks else None
        except (av.error.FFmpegError, ValueError, EOFError, NotImplementedError, RuntimeError) as error:
            raise MediaError(path, AUDIO_DECODE, _short(error)) from error
    if waveform is None or waveform.size == 0:
        raise MediaError(path, AUDIO_DECODE, "no audio frames decoded")
    if stopped_early:
        waveform = waveform[:max_samples]
    elif declared_s is not None:
        declared = round(declared_s * sample_rate)
        slack = max(TRUNCATION_SLACK_S * sample_rate, TRUNCATION_SLACK_FRACTION * declared)
        if waveform.size < declared - slack:
            raise MediaError(
                path, TRUNCATED_AUDIO, f"decoded {waveform.size / sample_rate:.2f} s of {declared_s:.2f} s"
            )
        waveform = waveform[:declared]
    if max_samples is not None:
        waveform = waveform[:max_samples]
    if not np.isfinite(waveform).all():
        raise MediaError(path, AUDIO_DECODE, "non-finite samples")
    return torch.from_numpy(np.ascontiguousarray(waveform))


def load_waveform(
    paths: str | Path | Sequence[str | Path],
    sample_rate: int = BEATS_SAMPLE_RATE,
    max_samples: int | None = None,
) -> torch.Tensor:
    """Mono waveforms of one or more files (clips of one timeline), concatenated: (samples,).

    With ``max_samples``, files past that budget are not decoded (nor checked).
    """
    pieces = []
    remaining = max_samples
    for path in _as_paths(paths):
        if remaining is not None and remaining <= 0:
            break
        piece = decode_audio(path, sample_rate, remaining)
        pieces.append(piece)
        if remaining is not None:
            remaining -= piece.numel()
    return torch.cat(pieces)


def seconds_to_fbank_frames(seconds: float) -> int:
    """Fbank frames of ``seconds`` of 16 kHz audio (30 s -> 2998)."""
    return fbank_num_frames(round(seconds * BEATS_SAMPLE_RATE))


def _samples_for_frames(num_frames: int) -> int:
    """Fewest 16 kHz samples that yield ``num_frames`` fbank frames (the inverse of fbank_num_frames)."""
    window = int(BEATS_SAMPLE_RATE * BEATS_FRAME_LENGTH_MS / 1000)
    shift = int(BEATS_SAMPLE_RATE * BEATS_FRAME_SHIFT_MS / 1000)
    return window + (num_frames - 1) * shift


def crop_or_pad(
    fbank: torch.Tensor, max_frames: int | None = None, min_frames: int = 0, pad_to_max: bool = False
) -> tuple[torch.Tensor, int]:
    """Crop an fbank (F, 128) to its first ``max_frames`` and pad it with zeros.

    Padding goes up to ``min_frames`` (or to ``max_frames`` when ``pad_to_max``). Returns the
    fbank and the number of valid frames (rows past it are padding; see :func:`frame_mask`).
    """
    if max_frames is not None:
        if max_frames < max(1, min_frames):
            raise ValueError(f"max_frames={max_frames} must be >= max(1, min_frames={min_frames})")
        fbank = fbank[:max_frames]
    num_valid = fbank.shape[0]
    target = max_frames if (pad_to_max and max_frames is not None) else max(num_valid, min_frames)
    if target > num_valid:
        fbank = F.pad(fbank, (0, 0, 0, target - num_valid))  # (target, 128); zero = padding
    return fbank, num_valid


def frame_mask(num_valid: int | torch.Tensor, length: int) -> torch.Tensor:
    """True for valid frames: (length,) for an int, (B, length) for a (B,) tensor of counts."""
    counts = torch.as_tensor(num_valid)
    return torch.arange(length) < counts.unsqueeze(-1)


def pad_fbanks(fbanks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate fbanks of different lengths: (B, F_max, 128) zero-padded and a (B, F_max) valid mask."""
    lengths = torch.tensor([f.shape[0] for f in fbanks])
    batch = torch.nn.utils.rnn.pad_sequence(list(fbanks), batch_first=True)
    return batch, frame_mask(lengths, batch.shape[1])


def load_audio(
    paths: str | Path | Sequence[str | Path],
    max_frames: int | None = seconds_to_fbank_frames(DEFAULT_MAX_AUDIO_SECONDS),
    min_frames: int = BEATS_PATCH_FRAMES,
    pad_to_max: bool = False,
) -> tuple[torch.Tensor, int]:
    """BEATs fbank of one or more clips' audio (concatenated): ((F, 128), number of valid frames).

    Only the samples the first ``max_frames`` frames need are decoded and turned into an fbank
    (the same frames as cropping the full fbank, less work for long files). Padding: see :func:`crop_or_pad`;
    the default ``min_frames`` = 16 guarantees one BEATs patch. Raises MediaError for unusable
    files and for audio shorter than one 25 ms window.
    """
    path_list = _as_paths(paths)
    waveform = load_waveform(
        path_list, max_samples=None if max_frames is None else _samples_for_frames(max_frames)
    )
    if fbank_num_frames(waveform.numel()) == 0:
        raise MediaError(
            path_list[0], AUDIO_TOO_SHORT, f"{waveform.numel()} samples, one fbank window needs 400"
        )
    fbank = beats_fbank(waveform)  # (F, 128)
    return crop_or_pad(fbank, max_frames, min_frames, pad_to_max)


# ------------------------------------------------------------------------ configurable callables


class VideoLoader:
    """Callable video decoder for a dataset: ``loader(paths) -> (num_frames, 3, S, S)`` or MediaError.

    Args:
        num_frames: frames sampled at segment midpoints over the clip(s) (16 in the paper).
        image_size: side of the square frames (384 for SigLIP-So400M-Patch14-384).
        mean: per-channel normalisation mean; also the padding colour (SigLIP: 0.5).
        std: per-channel normalisation std (SigLIP: 0.5).
    """

    def __init__(
        self,
        num_frames: int = NUM_FRAMES,
        image_size: int = SIGLIP_IMAGE_SIZE,
        mean: tuple[float, float, float] = SIGLIP_MEAN,
        std: tuple[float, float, float] = SIGLIP_STD,
    ) -> None:
        if num_frames < 1 or image_size < 1:
            raise ValueError(f"num_frames and image_size must be positive, got {num_frames}, {image_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 channels and std > 0, got {mean}, {std}")
        self.num_frames = num_frames
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, paths: str | Path | Sequence[str | Path]) -> torch.Tensor:
        return load_video(paths, self.num_frames, self.image_size, self.mean, self.std)


class AudioLoader:
    """Callable audio decoder for a dataset: ``loader(paths) -> (fbank (F, 128), valid frames)``.

    Args:
        max_seconds: crop the audio to this many seconds (30 s -> 2998 fbank frames); None: no
            limit. Give either this or ``max_frames``.
        max_frames: crop to this many fbank frames instead (overrides ``max_seconds``).
        min_frames: pad shorter fbanks with zero rows to this length (16: one BEATs patch).
        pad_to_max: always pad to the maximum length (fixed-size batches) instead of letting the
            collate function pad to the longest sample (:func:`pad_fbanks`).
    """

    def __init__(
        self,
        max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
        max_frames: int | None = None,
        min_frames: int = BEATS_PATCH_FRAMES,
        pad_to_max: bool = False,
    ) -> None:
        if max_frames is None and max_seconds is not None:
            max_frames = seconds_to_fbank_frames(max_seconds)
        if max_frames is not None and max_frames < max(1, min_frames):
            raise ValueError(f"max length ({max_frames} frames) must be >= max(1, min_frames={min_frames})")
        if pad_to_max and max_frames is None:
            raise ValueError("pad_to_max needs max_seconds or max_frames")
        self.max_frames = max_frames
        self.min_frames = min_frames
        self.pad_to_max = pad_to_max

    def __call__(self, paths: str | Path | Sequence[str | Path]) -> tuple[torch.Tensor, int]:
        return load_audio(paths, self.max_frames, self.min_frames, self.pad_to_max)


__all__ = [
    "MEDIA_ERROR_REASONS",
    "SIGLIP_IMAGE_SIZE",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "AudioLoader",
    "MediaError",
    "VideoLoader",
    "crop_or_pad",
    "decode_audio",
    "frame_mask",
    "load_audio",
    "load_video",
    "load_waveform",
    "pad_fbanks",
    "preprocess_frames",
    "quiet_decoder_logs",
    "seconds_to_fbank_frames",
    "segment_midpoints",
]
