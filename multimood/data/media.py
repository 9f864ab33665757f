"""Decoding the clips of one sample into model inputs: 16 video frames for SigLIP, a BEATs fbank.

Video: "A fixed set of 16 frames is uniformly sampled from each video" (paper, appendix B.2), at
the midpoints of equal segments of the clip as VideoLLaMA2's ``frame_sample`` places them, padded
to a square with the normalisation mean as colour, resized to ``image_size`` (bicubic,
antialiased) and normalised. The frames are the ones FFmpeg presents. A clip cut with
``ffmpeg -ss ... -c copy`` starts at the keyframe before the cut and carries an MP4 edit list that
hides this pre-roll. FFmpeg's demuxer honours it (and so PyAV); decord 0.6 does not and returns
pre-roll frames, duplicated and out of order. So decoding goes through PyAV: a demux pass lists the
presented frames in display order, then only what the sampled frames need is decoded (a later
keyframe is jumped to when one comes before the next sampled frame, unsampled non-reference frames
are skipped) and only sampled frames are converted to RGB. The decoder's output is checked against
that plan; where they disagree (damaged payload, a stream without timestamps) every frame is
decoded, which is what FFmpeg itself shows. Frame folders (DFEW) are read with PIL.

Audio: the first audio track, down-mixed to mono by averaging the channels, resampled to 16 kHz,
turned into the BEATs fbank (:func:`multimood.data.fbank.beats_fbank`). Two layouts
(:class:`AudioLoader` ``mode``): ``clip``, the audio once (cropped to 30 s, padded to one BEATs
patch, padding masked); ``videollama2``, VideoLLaMA2-AV's input, on which the audio projector
MultiMood inherits was trained: 8 windows of 2 s at evenly spaced starts, concatenated and
zero-padded to 30 s in the waveform, so always 2,998 fbank frames (1,496 BEATs tokens), the padding
fed as input like VideoLLaMA2 does.

Several clips of one sample (a client turn spanning consecutive utterance clips) form one
timeline: frames are sampled over the concatenated clips, waveforms are concatenated.

Bad media: every way a file can fail (missing, empty, truncated, undecodable, no video stream for
video, no audio stream for audio) raises :class:`MediaError`, which names the file and carries a
short, stable ``reason`` (one of :data:`MEDIA_ERROR_REASONS`) for counting. Given a ``problems``
list, the loaders leave a bad clip out of the timeline, append its error to the list and go on;
they raise only when no clip is usable. The data module counts every bad clip and makes the
modality missing only in that case. ``docs/design/media.md`` has the measurements behind these
choices.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

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
NUM_FRAMES = 16  # paper B.2: 16 frames per clip -> 8x13x13 tokens after the STC connector
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Longer audio is cropped to 30 s, VideoLLaMA2-AV's audio length (1,496 BEATs tokens).
DEFAULT_MAX_AUDIO_SECONDS = 30.0
# BEATs embeds 16x16 fbank patches, so fewer than 16 frames give it no patch at all.
BEATS_PATCH_FRAMES = 16

# VideoLLaMA2-AV's audio input (its mm_utils.process_audio_from_video, with pytorchvideo 0.1.5's
# ConstantClipsPerVideoSampler): 8 windows of 2 s, concatenated, zero-padded to 30 s.
AudioMode = Literal["clip", "videollama2"]
VIDEOLLAMA2_WINDOWS = 8
VIDEOLLAMA2_WINDOW_SECONDS = 2.0
VIDEOLLAMA2_TOTAL_SECONDS = 30.0

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
# FFmpeg decoders whose skip_frame="NONREF" is applied to the packet just sent (checked against
# full decodes in tests/integration/test_video_cuts.py); others get every packet decoded. (With
# libdav1d, for one, skipping mislabels later frames' timestamps.)
SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vp8", "vp9"})
# Compressed video kept in memory between the demux pass and decoding (a clip is a few MB); a
# larger file is demuxed again instead.
MAX_BUFFERED_BYTES = 64 * 2**20


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
    """One line of a decoder's message, without a native '[hh:mm:ss] /src/file.cc:123: ' prefix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = re.sub(r"^(\[[\d:]+\]\s*\S+:\d+:\s*)+", "", text)
    return f"{type(error).__name__}: {text}"[:limit]


def _decoder_errors() -> tuple[type[BaseException], ...]:
    """What PyAV raises on bad input (FFmpeg errors, and Python errors on garbled metadata)."""
    import av

    return (av.error.FFmpegError, ValueError, EOFError, OSError, RuntimeError, NotImplementedError)


def _record(error: MediaError, problems: list[MediaError] | None) -> None:
    """Strict (``problems`` is None): raise. Tolerant: note the bad clip and go on with the others."""
    if problems is None:
        raise error
    problems.append(error)


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


def _open(path: Path) -> Any:
    """Open a media file with PyAV, turning every failure into a MediaError (UNREADABLE)."""
    import av

    _check_file(path)
    try:
        # metadata_errors="ignore": garbled tags (UnicodeDecodeError) must not reject good streams.
        return av.open(str(path), metadata_errors="ignore", timeout=OPEN_TIMEOUT_S)
    except (av.error.FFmpegError, ValueError, OSError, EOFError, NotImplementedError) as error:
        raise MediaError(path, UNREADABLE, _short(error)) from error


@contextmanager
def _open_container(path: Path) -> Iterator[Any]:
    container = _open(path)
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


class _FrameCountChanged(Exception):
    """A clip turned out to present another number of frames than its demux pass said: plan again."""


class _ClipFailed(Exception):
    """A clip of the timeline failed while its frames were decoded."""

    def __init__(self, source: _VideoFile | _FrameFolder, error: MediaError) -> None:
        super().__init__(str(error))
        self.source = source
        self.error = error


class _VideoFile:
    """One video file decoded with PyAV (FFmpeg): presented frames only, sampled frames cheaply.

    The constructor demuxes the video stream once (no decoding): every packet's presentation
    timestamp and keyframe flag, and FFmpeg's discard flag, which marks the pre-roll an MP4 edit list hides. The
    presented frames are the packets not discarded, in timestamp order. :meth:`frames` then
    decodes from the last keyframe before each run of wanted frames and stops after the last one.
    Packets are kept in memory between the two passes unless the stream is larger than
    :data:`MAX_BUFFERED_BYTES`; then the second pass demuxes the file again. ``close`` releases
    it all.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: Any = None
        self._buffered: list[Any] | None = None
        try:
            self._open_stream()
            self._demux(MAX_BUFFERED_BYTES)
        except BaseException:
            self.close()
            raise

    # ---- opening and the demux pass

    def _open_stream(self) -> None:
        self.close()
        self._container = _open(self.path)
        if not self._container.streams.video:
            raise MediaError(self.path, NO_VIDEO)
        self._stream = self._container.streams.video[0]
        decoder = self._stream.codec_context
        if decoder is None:  # PyAV knows no decoder for the stream's codec id
            raise MediaError(self.path, UNKNOWN_CODEC)
        width, height = decoder.width, decoder.height
        if not (0 < width <= MAX_VIDEO_SIDE and 0 < height <= MAX_VIDEO_SIDE):
            raise MediaError(self.path, BAD_DIMENSIONS, f"{width}x{height}")
        # One thread: parallelism comes from DataLoader workers (VideoLLaMA2 runs decord likewise),
        # and skip_frame then applies to the packet being sent.
        decoder.thread_count = 1
        self._decoder = decoder
        self._skip_nonref = decoder.name in SKIP_NONREF_DECODERS

    def _demux(self, buffer_bytes: int) -> None:
        pts: list[int | None] = []
        keyframe: list[bool] = []
        discard: list[bool] = []
        packets: list[Any] | None = []
        buffered = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                pts.append(packet.pts)
                keyframe.append(packet.is_keyframe)
                discard.append(packet.is_discard)
                if packets is not None:
                    buffered += packet.size
                    if buffered > buffer_bytes:
                        packets = None  # too large to hold: the decode pass reads the file again
                    else:
                        packets.append(packet)
        except _decoder_errors() as error:
            raise MediaError(self.path, VIDEO_DECODE, _short(error)) from error
        self._buffered = packets
        self._pts = pts
        self._keyframes = [i for i, key in enumerate(keyframe) if key]  # decode positions
        # Keyframe flags are trusted for jumps only when some packet is not one: an mp4 without a
        # sync-sample table calls every packet a keyframe, whatever the codec really did.
        self._jumps = 0 < len(self._keyframes) < len(pts)
        presented = [p for p, hidden in zip(pts, discard, strict=True) if not hidden]
        self._planned = None not in presented and len(set(presented)) == len(presented)
        if self._planned:
            self._presented: list[int] = sorted(presented)  # type: ignore[arg-type]
            self.num_frames = len(self._presented)
        else:  # no timestamps to plan with: FFmpeg's own count
            self.num_frames = self._count_by_decoding()
        if self.num_frames < 1:
            raise MediaError(self.path, NO_FRAMES)

    # ---- packets for the decode pass

    def _packets(self) -> Iterator[Any]:
        """The packets again, in decode order, for one decode pass: from memory, or demuxed anew
        from the top (no seeks: some demuxers, MPEG-PS for one, split packets differently after
        a seek, and the timestamps would no longer name the same pictures)."""
        if self._buffered is not None:
            return iter(self._buffered)
        self._open_stream()
        return (packet for packet in self._container.demux(self._stream) if packet.size)

    # ---- decoding

    def _to_rgb(self, frame: Any) -> np.ndarray:
        return frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8

    def _keyframe_before(self, position: int, pts: int) -> int:
        """Position of the last keyframe at or before ``position`` in decode order and at or before
        ``pts`` in display order (open-GOP leading frames shown before their keyframe need an
        earlier one); 0 when keyframes are not trusted."""
        if not self._jumps:
            return 0
        at = bisect_right(self._keyframes, position) - 1
        while at >= 0:
            candidate = self._keyframes[at]
            candidate_pts = self._pts[candidate]
            if candidate_pts is not None and candidate_pts <= pts:
                return candidate
            at -= 1
        return 0

    def _decode_planned(self, wanted: set[int]) -> dict[int, np.ndarray] | None:
        """RGB frames for the wanted presentation timestamps, or None if the decoder's output
        disagrees with the demux pass (then decode everything instead)."""
        position = {p: i for i, p in enumerate(self._pts) if p in wanted}
        presented = set(self._presented)
        remaining = set(wanted)
        out: dict[int, np.ndarray] = {}
        packets = self._packets()
        decoder = self._decoder
        decoder.flush_buffers()
        next_position = 0  # of the next packet to send
        try:
            while remaining:
                first = min(position[p] for p in remaining)
                start = self._keyframe_before(first, min(remaining))
                if start > next_position:
                    # Every wanted frame not yet out comes at or after a keyframe still ahead:
                    # skip the packets before it undecoded (and drop what the decoder holds).
                    for _ in itertools.islice(packets, start - next_position):
                        pass
                    decoder.flush_buffers()
                    next_position = start
                packet = next(packets, None)
                if packet is None:
                    decoder.skip_frame = "DEFAULT"
                    frames = decoder.decode(None)  # drain the frames held for reordering
                else:
                    # A frame nobody samples need not be decoded unless others reference it.
                    sampled = packet.pts in remaining or not self._skip_nonref
                    decoder.skip_frame = "DEFAULT" if sampled else "NONREF"
                    frames = decoder.decode(packet)
                    next_position += 1
                for frame in frames:
                    if frame.pts in remaining:
                        out[frame.pts] = self._to_rgb(frame)
                        remaining.discard(frame.pts)
                    elif frame.pts not in presented:
                        return None
                if packet is None:
                    break
        except _decoder_errors() as error:
            raise MediaError(self.path, VIDEO_DECODE, _short(error)) from error
        finally:
            decoder.skip_frame = "DEFAULT"
        return None if remaining else out

    def _decode_all(self) -> Iterator[Any]:
        """Every frame, as FFmpeg presents it (the reference the plan is checked against)."""
        packets = self._packets()
        decoder = self._decoder
        decoder.flush_buffers()
        decoder.skip_frame = "DEFAULT"
        try:
            for packet in packets:
                yield from decoder.decode(packet)
            yield from decoder.decode(None)
        except _decoder_errors() as error:
            raise MediaError(self.path, VIDEO_DECODE, _short(error)) from error

    def _count_by_decoding(self) -> int:
        return sum(1 for _ in self._decode_all())

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        """uint8 (H, W, 3) RGB frames at presentation ``indices`` (each decoded once).

        Raises _FrameCountChanged when decoding shows another frame count than planned (the
        caller plans the timeline again; the count is right from then on).
        """
        if self._planned:
            wanted = {self._presented[i] for i in np.unique(indices).tolist()}
            decoded = self._decode_planned(wanted)
            if decoded is not None:
                return [decoded[self._presented[i]] for i in indices.tolist()]
            self._planned = False
            count = self._count_by_decoding()
            if count < 1:
                raise MediaError(self.path, NO_FRAMES, "the demux pass found frames, decoding none")
            if count != self.num_frames:
                self.num_frames = count
                raise _FrameCountChanged(str(self.path))
        wanted_index = set(indices.tolist())
        out: dict[int, np.ndarray] = {}
        for index, frame in enumerate(self._decode_all()):
            if index in wanted_index:
                out[index] = self._to_rgb(frame)
        if len(out) < len(wanted_index):
            raise MediaError(self.path, VIDEO_DECODE, f"decoding gave fewer than {self.num_frames} frames")
        return [out[i] for i in indices.tolist()]

    def close(self) -> None:
        self._buffered = None
        if self._container is not None:
            self._container.close()
            self._container = None


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


def _sample_timeline(sources: Sequence[_VideoFile | _FrameFolder], num_frames: int) -> list[np.ndarray]:
    """``num_frames`` frames at segment midpoints of the clips' concatenated frames, in order."""
    counts = np.array([source.num_frames for source in sources])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    indices = segment_midpoints(int(offsets[-1]), num_frames)  # over the concatenated timeline
    clip_of = np.searchsorted(offsets, indices, side="right") - 1
    frames: list[np.ndarray] = []
    for k, source in enumerate(sources):
        local = indices[clip_of == k] - offsets[k]
        if local.size:
            try:
                frames.extend(source.frames(local))
            except MediaError as error:
                raise _ClipFailed(source, error) from error
    return frames


def load_video(
    paths: str | Path | Sequence[str | Path],
    num_frames: int = NUM_FRAMES,
    image_size: int = SIGLIP_IMAGE_SIZE,
    mean: Sequence[float] = SIGLIP_MEAN,
    std: Sequence[float] = SIGLIP_STD,
    problems: list[MediaError] | None = None,
) -> torch.Tensor:
    """Decode ``num_frames`` frames, sampled over one or more clips, into a (T, 3, S, S) float tensor.

    paths: a video file, a folder of frame images, or a sequence of them forming one timeline
    (frames are sampled at segment midpoints over the summed frame counts, so a clip gets frames
    in proportion to its length). Only what the sampled frames need is decoded.
    problems: None raises MediaError for the first unusable clip. A list makes a bad clip cost only
    itself: it is left out of the timeline and its MediaError appended; MediaError is raised only
    when no clip is usable (every clip's error is then in the list).
    """
    sources: list[_VideoFile | _FrameFolder] = []
    failure: MediaError | None = None
    with ExitStack() as stack:
        for path in _as_paths(paths):
            try:
                source = _open_video_source(path)
            except MediaError as error:
                _record(error, problems)
                failure = error
                continue
            stack.callback(source.close)
            sources.append(source)
        while True:  # ends: each retry drops a clip or settles one clip's frame count for good
            if not sources:
                assert failure is not None
                raise failure
            try:
                frames = _sample_timeline(sources, num_frames)
                break
            except _FrameCountChanged:
                continue
            except _ClipFailed as failed:
                _record(failed.error, problems)
                failure = failed.error
                sources.remove(failed.source)
    return preprocess_frames(frames, image_size, mean, std)


# ----------------------------------------------------------------------------------------- audio


def decode_audio(
    path: str | Path, sample_rate: int = BEATS_SAMPLE_RATE, max_samples: int | None = None
) -> torch.Tensor:
    """The first audio stream of one file as a mono float32 waveform at ``sample_rate``: (samples,).

    Channels are averaged. That is also FFmpeg's down-mix when it writes integer samples, as in
    VideoLLaMA2-AV's ``ffmpeg -ac 1`` to 16-bit PCM: its stereo->mono matrix gives each channel
    1/sqrt(2) and is rescaled to sum to 1 for integer formats, but not for float ones (two equal
    channels then come out 3 dB louder and can pass 1.0). The result is resampled with FFmpeg's
    resampler. Samples past the declared stream duration (AAC pads its last frame) are dropped;
    decoded audio well short of the declared duration raises MediaError(TRUNCATED_AUDIO). With
    ``max_samples``, decoding stops once that many samples are in (a long file is not decoded to
    the end only to be cropped) and at most that many return.
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
        except _decoder_errors() as error:
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


def _load_waveform(
    paths: Sequence[Path], sample_rate: int, max_samples: int | None, problems: list[MediaError] | None
) -> tuple[torch.Tensor, list[Path]]:
    """Concatenated mono waveform of the usable clips, and those clips' paths."""
    pieces: list[torch.Tensor] = []
    used: list[Path] = []
    failure: MediaError | None = None
    remaining = max_samples
    for path in paths:
        if remaining is not None and remaining <= 0:
            break
        try:
            piece = decode_audio(path, sample_rate, remaining)
        except MediaError as error:
            _record(error, problems)
            failure = error
            continue
        pieces.append(piece)
        used.append(path)
        if remaining is not None:
            remaining -= piece.numel()
    if not pieces:
        if failure is not None:
            raise failure
        return torch.zeros(0), used
    return torch.cat(pieces), used


def load_waveform(
    paths: str | Path | Sequence[str | Path],
    sample_rate: int = BEATS_SAMPLE_RATE,
    max_samples: int | None = None,
    problems: list[MediaError] | None = None,
) -> torch.Tensor:
    """Mono waveforms of one or more files (clips of one timeline), concatenated: (samples,).

    With ``max_samples``, files past that budget are not decoded (nor checked). ``problems``: as
    in :func:`load_video` (bad clips left out and listed; raises only if none is usable).
    """
    return _load_waveform(_as_paths(paths), sample_rate, max_samples, problems)[0]


def videollama2_windows(
    waveform: torch.Tensor,
    sample_rate: int = BEATS_SAMPLE_RATE,
    num_windows: int = VIDEOLLAMA2_WINDOWS,
    window_seconds: float = VIDEOLLAMA2_WINDOW_SECONDS,
    total_seconds: float = VIDEOLLAMA2_TOTAL_SECONDS,
) -> torch.Tensor:
    """VideoLLaMA2-AV's audio input: (samples,) -> (total_seconds x sample_rate,).

    ``num_windows`` windows of ``window_seconds`` start at k x (duration - window) / num_windows,
    k = 0..num_windows - 1 (pytorchvideo 0.1.5's ConstantClipsPerVideoSampler, which VideoLLaMA2
    installs unpinned: the last window ends before the clip does); audio shorter than a window is
    taken whole every time. The windows are concatenated and zero-padded at the end; sample
    positions are truncated to integers, in exact fractions, as there.
    """
    if num_windows * window_seconds > total_seconds:
        raise ValueError(f"{num_windows} windows of {window_seconds} s exceed {total_seconds} s")
    duration = waveform.numel() / sample_rate
    step = Fraction(max(duration - window_seconds, 0)) / num_windows
    window = Fraction(window_seconds)
    pieces = [
        waveform[int(step * k * sample_rate) : int((step * k + window) * sample_rate)]
        for k in range(num_windows)
    ]
    joined = torch.cat(pieces)
    return F.pad(joined, (0, round(total_seconds * sample_rate) - joined.numel()))  # zeros: padding


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
    problems: list[MediaError] | None = None,
) -> tuple[torch.Tensor, int]:
    """BEATs fbank of one or more clips' audio (concatenated): ((F, 128), number of valid frames).

    Only the samples the first ``max_frames`` frames need are decoded and turned into an fbank
    (the same frames as cropping the full fbank, less work for long files). Padding: see
    :func:`crop_or_pad`; the default ``min_frames`` = 16 guarantees one BEATs patch. Raises
    MediaError for unusable files and for audio shorter than one 25 ms window; ``problems``: as in
    :func:`load_video`.
    """
    path_list = _as_paths(paths)
    max_samples = None if max_frames is None else _samples_for_frames(max_frames)
    waveform, used = _load_waveform(path_list, BEATS_SAMPLE_RATE, max_samples, problems)
    if fbank_num_frames(waveform.numel()) == 0:
        error = MediaError(
            used[0] if used else path_list[0],
            AUDIO_TOO_SHORT,
            f"{waveform.numel()} samples in {len(used)} clip(s), one fbank window needs 400",
        )
        _record(error, problems)
        raise error
    fbank = beats_fbank(waveform)  # (F, 128)
    return crop_or_pad(fbank, max_frames, min_frames, pad_to_max)


def load_audio_videollama2(
    paths: str | Path | Sequence[str | Path], problems: list[MediaError] | None = None
) -> tuple[torch.Tensor, int]:
    """BEATs fbank of VideoLLaMA2-AV's 30 s input (:func:`videollama2_windows` over the clips'
    concatenated audio): ((2998, 128), 2998). Every frame counts as valid: VideoLLaMA2 passes no
    padding mask to BEATs, so its audio projector learnt on 1,496 tokens, padding included."""
    waveform, _ = _load_waveform(_as_paths(paths), BEATS_SAMPLE_RATE, None, problems)
    fbank = beats_fbank(videollama2_windows(waveform))  # (2998, 128)
    return fbank, fbank.shape[0]


# ------------------------------------------------------------------------ configurable callables


class VideoLoader:
    """Callable video decoder for a dataset: ``loader(paths[, problems]) -> (num_frames, 3, S, S)``.

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

    def __call__(
        self, paths: str | Path | Sequence[str | Path], problems: list[MediaError] | None = None
    ) -> torch.Tensor:
        return load_video(paths, self.num_frames, self.image_size, self.mean, self.std, problems)


class AudioLoader:
    """Callable audio decoder for a dataset: ``loader(paths[, problems]) -> (fbank (F, 128), valid frames)``.

    Args:
        mode: ``clip``: the clips' audio once, cropped and padded as below, padding masked.
            ``videollama2``: VideoLLaMA2-AV's input (8 windows of 2 s, concatenated, zero-padded
            to 30 s: 2,998 frames, 1,496 BEATs tokens), every frame valid; the length options
            below do not apply.
        max_seconds: crop the audio to this many seconds (30 s -> 2998 fbank frames); None: no
            limit. Give either this or ``max_frames``.
        max_frames: crop to this many fbank frames instead (overrides ``max_seconds``).
        min_frames: pad shorter fbanks with zero rows to this length (16: one BEATs patch).
        pad_to_max: always pad to the maximum length (fixed-size batches) instead of letting the
            collate function pad to the longest sample (:func:`pad_fbanks`).
    """

    def __init__(
        self,
        mode: AudioMode = "clip",
        max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
        max_frames: int | None = None,
        min_frames: int = BEATS_PATCH_FRAMES,
        pad_to_max: bool = False,
    ) -> None:
        if mode not in ("clip", "videollama2"):
            raise ValueError(f"audio mode must be 'clip' or 'videollama2', got {mode!r}")
        if max_frames is None and max_seconds is not None:
            max_frames = seconds_to_fbank_frames(max_seconds)
        if max_frames is not None and max_frames < max(1, min_frames):
            raise ValueError(f"max length ({max_frames} frames) must be >= max(1, min_frames={min_frames})")
        if pad_to_max and max_frames is None:
            raise ValueError("pad_to_max needs max_seconds or max_frames")
        self.mode = mode
        self.max_frames = max_frames
        self.min_frames = min_frames
        self.pad_to_max = pad_to_max

    def __call__(
        self, paths: str | Path | Sequence[str | Path], problems: list[MediaError] | None = None
    ) -> tuple[torch.Tensor, int]:
        if self.mode == "videollama2":
            return load_audio_videollama2(paths, problems)
        return load_audio(paths, self.max_frames, self.min_frames, self.pad_to_max, problems)


__all__ = [
    "MEDIA_ERROR_REASONS",
    "SIGLIP_IMAGE_SIZE",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "VIDEOLLAMA2_TOTAL_SECONDS",
    "VIDEOLLAMA2_WINDOWS",
    "VIDEOLLAMA2_WINDOW_SECONDS",
    "AudioLoader",
    "AudioMode",
    "MediaError",
    "VideoLoader",
    "crop_or_pad",
    "decode_audio",
    "frame_mask",
    "load_audio",
    "load_audio_videollama2",
    "load_video",
    "load_waveform",
    "pad_fbanks",
    "preprocess_frames",
    "seconds_to_fbank_frames",
    "segment_midpoints",
    "videollama2_windows",
]
