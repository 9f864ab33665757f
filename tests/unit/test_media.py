"""Video frames and audio fbanks from real (synthetic) media files: sampling, padding, lengths, errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from multimood.data import media
from multimood.data.fbank import beats_fbank, fbank_num_frames
from multimood.data.media import (
    AudioLoader,
    MediaError,
    VideoLoader,
    crop_or_pad,
    frame_mask,
    load_audio,
    load_video,
    load_waveform,
    pad_fbanks,
    preprocess_frames,
    seconds_to_fbank_frames,
    segment_midpoints,
    videollama2_windows,
)
from multimood.data.synthetic import write_clip


def grey_frames(levels: list[int], height: int = 48, width: int = 64) -> np.ndarray:
    """Flat frames whose grey level encodes the frame (flat frames survive H.264 almost exactly)."""
    return np.stack([np.full((height, width, 3), level, dtype=np.uint8) for level in levels])


def to_uint8_level(video: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """Undo the normalisation and read each frame's centre pixel (channel 0) as a grey level."""
    size = video.shape[-1]
    return ((video[:, 0, size // 2, size // 2] * std + mean) * 255).numpy()


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    import soundfile

    stereo = np.stack([tone(440, 2.0, 44_100), tone(440, 2.0, 44_100)])
    out = {
        # 20 frames, grey level 20 + 10 * index; 44.1 kHz stereo audio of 2.0 s
        "indexed": write_clip(
            folder / "indexed.mp4",
            grey_frames([20 + 10 * t for t in range(20)]),
            fps=10,
            audio=stereo,
            sample_rate=44_100,
        ),
        "mono16k": write_clip(
            folder / "mono16k.mp4", grey_frames([90] * 10), fps=5, audio=tone(440, 2.0, 16_000)
        ),
        "silent": write_clip(folder / "silent.mp4", grey_frames([50] * 6), fps=10),
        "audio_only": write_clip(folder / "audio_only.mp4", None, audio=tone(440, 1.0, 16_000)),
    }
    soundfile.write(folder / "tone_1k.wav", tone(1000, 1.5, 16_000), 16_000)
    out["tone_1k"] = folder / "tone_1k.wav"
    soundfile.write(folder / "blip.wav", tone(1000, 0.01, 16_000), 16_000)  # 160 samples < one window
    out["blip"] = folder / "blip.wav"
    return out


# ------------------------------------------------------------------------------ frame sampling


def test_segment_midpoints_hand_computed() -> None:
    # 100 frames, 4 segments of (100 - 1) / 4 = 24.75: midpoints 12.375, 37.125, 61.875, 86.625
    assert segment_midpoints(100, 4).tolist() == [12, 37, 62, 87]
    # as many frames as samples: every frame once, in order
    assert segment_midpoints(16, 16).tolist() == list(range(16))
    # 58 frames (2.3 s at 25 fps), 16 samples: VideoLLaMA2's formula, segment (58 - 1) / 16
    expected = [math.floor(57 / 16 * (i + 0.5) + 0.5 + 1e-6) for i in range(16)]
    assert segment_midpoints(58, 16).tolist() == expected
    assert expected[0] == 2 and expected[-1] == 55


def test_segment_midpoints_short_clips_repeat_nearest_frames() -> None:
    indices = segment_midpoints(5, 16)
    assert indices.shape == (16,) and indices.dtype == np.int64
    assert (np.diff(indices) >= 0).all() and set(indices.tolist()) == {0, 1, 2, 3, 4}
    assert segment_midpoints(1, 16).tolist() == [0] * 16
    with pytest.raises(ValueError, match="at least one frame"):
        segment_midpoints(0, 16)


# -------------------------------------------------------------------------------------- video


def test_load_video_shape_and_range_at_siglip_size(clips: dict[str, Path]) -> None:
    video = load_video(clips["indexed"])
    assert video.shape == (16, 3, 384, 384) and video.dtype == torch.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    # the pad colour int(255 * 0.5) = 127 normalises to (127 / 255 - 0.5) / 0.5
    assert video[0, :, 0, 0].tolist() == pytest.approx([(127 / 255 - 0.5) / 0.5] * 3, abs=1e-6)


def test_load_video_custom_normalisation(clips: dict[str, Path]) -> None:
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's
    video = VideoLoader(num_frames=4, image_size=32, mean=mean, std=std)(clips["indexed"])
    assert video.shape == (4, 3, 32, 32)
    for c in range(3):
        low, high = (0 - mean[c]) / std[c], (1 - mean[c]) / std[c]
        assert low - 1e-5 <= video[:, c].min() and video[:, c].max() <= high + 1e-5
        assert video[0, c, 0, 0].item() == pytest.approx(
            (int(255 * mean[c]) / 255 - mean[c]) / std[c], abs=1e-5
        )


def test_decoded_frames_are_the_segment_midpoints(clips: dict[str, Path]) -> None:
    video = load_video(clips["indexed"], num_frames=8, image_size=32)
    expected = segment_midpoints(20, 8)  # [1, 4, 6, 8, 11, 13, 15, 18]
    levels = to_uint8_level(video)
    np.testing.assert_allclose(levels, 20 + 10 * expected, atol=3)


def test_padding_to_square_keeps_content_centred() -> None:
    # wide 80x40 frame, red block at rows 10-29, cols 30-49; S = 80: no resize, 20 rows of pad on top
    frame = np.full((40, 80, 3), 200, dtype=np.uint8)
    frame[10:30, 30:50] = (255, 0, 0)
    out = preprocess_frames([frame], image_size=80)[0]  # (3, 80, 80)
    pad = torch.tensor((127 / 255 - 0.5) / 0.5)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, rtol=0, atol=1e-6)

    assert close(out[:, :20], pad) and close(out[:, 60:], pad)
    assert close(out[:, 20:60, 0], torch.tensor((200 / 255 - 0.5) / 0.5))  # content starts at row 20
    red = (out[0] > 0.99) & (out[1] < -0.99)
    rows, cols = torch.nonzero(red, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (30, 49, 30, 49)
    # tall frame: the pad goes left and right
    tall = preprocess_frames([np.ascontiguousarray(frame.transpose(1, 0, 2))], image_size=80)[0]
    assert close(tall[:, :, :20], pad) and close(tall[:, :, 60:], pad)


def test_fit_and_pad_matches_videollama2_pad_then_pil_resize() -> None:
    """Same picture as expand2square + PIL bicubic resize, except the rows at the content border."""
    from PIL import Image

    yy, xx = np.mgrid[0:360, 0:640]
    frame = np.stack([xx * 255 // 640, yy * 255 // 360, (xx + yy) * 255 // 1000], -1).astype(np.uint8)
    square = Image.new("RGB", (640, 640), (127, 127, 127))  # expand2square with SigLIP's mean colour
    square.paste(Image.fromarray(frame), (0, (640 - 360) // 2))
    reference = np.asarray(square.resize((384, 384), Image.BICUBIC)).astype(np.float32)
    ours = ((preprocess_frames([frame], image_size=384)[0].permute(1, 2, 0) * 0.5 + 0.5) * 255).numpy()
    content = slice(84 + 3, 84 + 216 - 3)  # 360 * 0.6 = 216 rows from row (384 - 216) // 2 = 84
    assert np.abs(ours[content] - reference[content]).max() <= 1.01
    assert np.abs(ours[:80] - reference[:80]).max() <= 1.01  # the pad itself


def test_multi_clip_timeline(tmp_path: Path) -> None:
    # clip A has 10 frames, clip B 30; global frame g has grey level 20 + 5 g
    a = write_clip(tmp_path / "a.mp4", grey_frames([20 + 5 * g for g in range(10)]), fps=10)
    b = write_clip(tmp_path / "b.mp4", grey_frames([20 + 5 * g for g in range(10, 40)]), fps=10)
    video = load_video([a, b], num_frames=8, image_size=32)
    expected = segment_midpoints(40, 8)  # [2, 7, 12, 17, 22, 27, 32, 37]: 2 from A, 6 from B
    np.testing.assert_allclose(to_uint8_level(video), 20 + 5 * expected, atol=2)
    assert (expected < 10).sum() == 2


def test_a_bad_clip_costs_only_itself(tmp_path: Path, clips: dict[str, Path]) -> None:
    # global frame g has grey level 20 + 5 g; the middle clip is broken three ways
    a = write_clip(tmp_path / "a.mp4", grey_frames([20 + 5 * g for g in range(10)]), fps=10)
    b = write_clip(tmp_path / "b.mp4", grey_frames([20 + 5 * g for g in range(10, 40)]), fps=10)
    for bad, reason in (
        (tmp_path / "gone.mp4", media.MISSING),
        (clips["audio_only"], media.NO_VIDEO),
        (tmp_path / "garbage.mp4", media.UNREADABLE),
    ):
        if bad.name == "garbage.mp4":
            bad.write_bytes(b"not a video at all" * 40)
        problems: list[MediaError] = []
        video = load_video([a, bad, b], num_frames=8, image_size=32, problems=problems)
        # sampled over the 40 frames of the good clips only, as if the bad one were not listed
        np.testing.assert_allclose(to_uint8_level(video), 20 + 5 * segment_midpoints(40, 8), atol=2)
        assert [(Path(e.path), e.reason) for e in problems] == [(bad, reason)]
        with pytest.raises(MediaError) as caught:  # without a problems list the first bad clip raises
            load_video([a, bad, b], num_frames=8, image_size=32)
        assert caught.value.reason == reason
    # the modality is lost only when no clip decodes; then every clip is listed
    problems = []
    with pytest.raises(MediaError):
        load_video(
            [tmp_path / "gone.mp4", clips["audio_only"]], num_frames=4, image_size=16, problems=problems
        )
    assert [e.reason for e in problems] == [media.MISSING, media.NO_VIDEO]


def test_frame_folder_natural_order_and_sampling(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "00042"
    folder.mkdir()
    for i in range(12):  # unpadded names: natural order puts 10.jpg after 9.jpg
        Image.fromarray(np.full((48, 64, 3), 20 + 15 * i, dtype=np.uint8)).save(
            folder / f"{i}.jpg", quality=95
        )
    (folder / "notes.txt").write_text("not a frame")
    video = load_video(folder, num_frames=4, image_size=32)
    assert video.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(to_uint8_level(video), 20 + 15 * segment_midpoints(12, 4), atol=2)


def _open_media_files() -> set[str]:
    """Media files this process holds open (the kernel's view, independent of any decoder)."""
    names = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:  # closed while listing
            continue
        if target.suffix in (".mp4", ".wav"):
            names.add(str(target))
    return names


def test_video_files_are_closed(clips: dict[str, Path]) -> None:
    before = _open_media_files()
    load_video([clips["indexed"], clips["silent"]], num_frames=4, image_size=16)
    assert _open_media_files() == before
    # A failure after the first clip opened must close it too, even while the caller keeps the
    # exception (its traceback references the loader's frames, and so the opened clips).
    with pytest.raises(MediaError) as caught:
        load_video([clips["indexed"], clips["audio_only"]], num_frames=4, image_size=16)
    assert _open_media_files() == before and caught.value.reason == media.NO_VIDEO
    # The check sees open files at all.
    with open(clips["indexed"], "rb"):
        assert str(clips["indexed"]) in _open_media_files()


def test_video_memory_stays_bounded(tmp_path: Path) -> None:
    """A kept decoder of this clip holds a few MB; 30 loads must not grow memory by that."""
    frames = np.random.default_rng(0).integers(0, 255, (8, 240, 320, 3), dtype=np.uint8)
    clip = write_clip(tmp_path / "noisy.mp4", frames, fps=25)

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    for _ in range(5):
        load_video(clip, num_frames=4, image_size=16)
    start = rss_mb()
    for _ in range(30):
        load_video(clip, num_frames=4, image_size=16)
    assert rss_mb() - start < 20


def test_video_errors_name_the_file(clips: dict[str, Path], tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.mp4": media.MISSING,
        clips["audio_only"]: media.NO_VIDEO,
        tmp_path / "empty_folder": media.NO_FRAMES,
        tmp_path / "empty.mp4": media.EMPTY,
    }
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path, reason in cases.items():
        with pytest.raises(MediaError) as caught:
            load_video(path, num_frames=4, image_size=16)
        assert caught.value.reason == reason and str(path) in str(caught.value)
    with pytest.raises(ValueError, match="positive"):
        VideoLoader(num_frames=0)


# -------------------------------------------------------------------------------------- audio


def test_fbank_shape_for_known_duration(clips: dict[str, Path]) -> None:
    fbank, valid = load_audio(clips["tone_1k"], max_frames=None, min_frames=0)
    assert fbank.shape == (fbank_num_frames(24_000), 128) == (148, 128) and valid == 148


@pytest.mark.parametrize("name", ["indexed", "mono16k"])
def test_resampling_gives_the_expected_length(clips: dict[str, Path], name: str) -> None:
    # 2.0 s of 44.1 kHz stereo AAC, or 16 kHz mono AAC -> 32,000 samples at 16 kHz; AAC's padding
    # of its last 1024-sample frame is dropped by the declared duration.
    waveform = load_waveform(clips[name])
    assert waveform.dtype == torch.float32 and waveform.shape == (32_000,)
    # channels are averaged: two equal 0.3 sines stay 0.3 (FFmpeg's down-mix to float would give 0.42)
    assert waveform[4000:28_000].abs().max().item() == pytest.approx(0.3, rel=0.05)


def _kaldi_mel_bin(freq: float, bins: int = 128, low: float = 20.0, high: float = 8000.0) -> float:
    """Fractional index of the kaldi mel filter centred on ``freq`` (centres evenly spaced in mel)."""

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    delta = (mel(high) - mel(low)) / (bins + 1)
    return (mel(freq) - mel(low)) / delta - 1


@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_pure_tone_lands_in_its_mel_bin(tmp_path: Path, freq: float) -> None:
    path = write_clip(tmp_path / "tone.mp4", None, audio=tone(freq, 1.0, 44_100), sample_rate=44_100)
    fbank, valid = load_audio(path)
    assert abs(fbank[:valid].mean(0).argmax().item() - _kaldi_mel_bin(freq)) <= 1.0


def test_crop_or_pad_and_masks() -> None:
    fbank = torch.randn(50, 128)
    cropped, valid = crop_or_pad(fbank, max_frames=30)
    assert cropped.shape == (30, 128) and valid == 30 and torch.equal(cropped, fbank[:30])
    padded, valid = crop_or_pad(fbank, max_frames=100, min_frames=64)
    assert padded.shape == (64, 128) and valid == 50 and padded[50:].abs().sum() == 0
    full, valid = crop_or_pad(fbank, max_frames=100, pad_to_max=True)
    assert full.shape == (100, 128) and valid == 50
    assert frame_mask(3, 5).tolist() == [True, True, True, False, False]
    batch, mask = pad_fbanks([torch.ones(4, 128), torch.ones(2, 128)])
    assert batch.shape == (2, 4, 128) and mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch[1, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="max_frames"):
        crop_or_pad(fbank, max_frames=8, min_frames=16)


def test_load_audio_crop_equals_cropping_the_full_fbank(clips: dict[str, Path]) -> None:
    full = beats_fbank(load_waveform(clips["tone_1k"]))
    cropped, valid = load_audio(clips["tone_1k"], max_frames=40)
    assert valid == 40 and torch.allclose(cropped, full[:40], atol=1e-5)
    fixed, valid = AudioLoader(max_seconds=2.0, pad_to_max=True)(clips["tone_1k"])
    assert fixed.shape == (seconds_to_fbank_frames(2.0), 128) == (198, 128) and valid == 148
    assert AudioLoader(max_seconds=30.0).max_frames == 2998


def test_audio_of_several_clips_is_concatenated(clips: dict[str, Path]) -> None:
    waveform = load_waveform([clips["mono16k"], clips["tone_1k"]])
    assert waveform.shape == (32_000 + 24_000,)
    _, valid = load_audio([clips["mono16k"], clips["tone_1k"]], max_frames=None)
    assert valid == fbank_num_frames(56_000)


def test_audio_budget_stops_decoding_early(clips: dict[str, Path], tmp_path: Path) -> None:
    both = [clips["mono16k"], clips["tone_1k"]]
    full = load_waveform(both)
    assert torch.equal(load_waveform(both, max_samples=40_000), full[:40_000])  # spans both clips
    # past the budget, later clips are neither decoded nor checked
    assert load_waveform([clips["mono16k"], tmp_path / "missing.wav"], max_samples=1000).shape == (1000,)
    with pytest.raises(MediaError, match="missing"):
        load_waveform([clips["mono16k"], tmp_path / "missing.wav"], max_samples=40_000)


def test_audio_of_several_clips_keeps_the_good_ones(clips: dict[str, Path], tmp_path: Path) -> None:
    good = [clips["mono16k"], clips["tone_1k"]]  # 2.0 s and 1.5 s
    problems: list[MediaError] = []
    waveform = load_waveform([good[0], clips["silent"], tmp_path / "gone.wav", good[1]], problems=problems)
    assert torch.equal(waveform, load_waveform(good))
    assert [e.reason for e in problems] == [media.NO_AUDIO, media.MISSING]
    problems = []
    _, valid = AudioLoader()([clips["silent"], good[1]], problems)
    assert valid == fbank_num_frames(24_000) and [e.reason for e in problems] == [media.NO_AUDIO]
    problems = []
    with pytest.raises(MediaError):
        AudioLoader(mode="videollama2")([clips["silent"], tmp_path / "gone.wav"], problems)
    assert [e.reason for e in problems] == [media.NO_AUDIO, media.MISSING]


def test_videollama2_windows_hand_computed() -> None:
    rate = 16_000
    total = 30 * rate
    # under 2 s: the whole clip, 8 times, then zeros
    short = torch.arange(1, rate + 1, dtype=torch.float32)  # 1 s
    out = videollama2_windows(short)
    assert out.shape == (total,)
    assert torch.equal(out[: 8 * rate], short.repeat(8)) and out[8 * rate :].abs().sum() == 0
    # 4 s: starts k * (4 - 2) / 8 = 0.25 k s, each window 2 s (they overlap)
    four = torch.arange(4 * rate, dtype=torch.float32)
    out = videollama2_windows(four)
    for k in range(8):
        window = out[k * 2 * rate : (k + 1) * 2 * rate]
        assert torch.equal(window, four[k * rate // 4 : k * rate // 4 + 2 * rate])
    assert out[16 * rate :].abs().sum() == 0
    # 20 s: starts 2.25 k s; the last window ends at 17.75 s, before the clip does
    twenty = torch.arange(20 * rate, dtype=torch.float32)
    out = videollama2_windows(twenty)
    starts = [out[k * 2 * rate].item() / rate for k in range(8)]
    assert starts == [2.25 * k for k in range(8)]
    assert out[16 * rate - 1].item() == 17.75 * rate - 1
    with pytest.raises(ValueError, match="exceed"):
        videollama2_windows(short, num_windows=16)


def test_videollama2_audio_is_always_2998_frames_and_all_valid(clips: dict[str, Path]) -> None:
    loader = AudioLoader(mode="videollama2")
    for paths in ([clips["tone_1k"]], [clips["mono16k"], clips["tone_1k"]]):
        fbank, valid = loader(paths)
        # 30 s at 16 kHz: 1 + (480,000 - 400) // 160 frames; BEATs: (2998 // 16) x (128 // 16) tokens
        assert fbank.shape == (2998, 128) and valid == 2998 and (2998 // 16) * (128 // 16) == 1496
    # 1.5 s tone: 8 copies fill 12 s; after that, the fbank of exact zeros: kaldi's log floor
    # (float32 epsilon) normalised with BEATs' statistics, in every bin
    fbank, _ = loader(clips["tone_1k"])
    floor = (math.log(torch.finfo(torch.float32).eps) - 15.41663) / (2 * 6.55582)
    assert torch.allclose(fbank[1201:], torch.full_like(fbank[1201:], floor), atol=1e-4)
    assert (fbank[:1198].amax(-1) > floor + 1).all()  # tone everywhere in the 12 s
    with pytest.raises(ValueError, match="audio mode"):
        AudioLoader(mode="windows")  # type: ignore[arg-type]


def test_downmix_equals_ffmpeg_to_16_bit_as_videollama2_decodes(tmp_path: Path) -> None:
    """VideoLLaMA2-AV reads audio with ``ffmpeg -ac 1 -ar 16000`` to 16-bit PCM: the same samples."""
    import subprocess

    from multimood.data.synthetic.cuts import ffmpeg_exe

    rate = 44_100
    t = np.arange(int(1.5 * rate)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t + 1)
    clip = write_clip(tmp_path / "stereo.mp4", None, audio=np.stack([left, right]), sample_rate=rate)
    ours = load_waveform(clip).numpy()

    def ffmpeg(fmt: str, dtype: type, scale: float) -> np.ndarray:
        command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip), "-vn", "-ac", "1"]
        command += ["-ar", "16000", "-f", fmt, "-"]
        out = subprocess.run(command, capture_output=True, check=True).stdout
        return np.frombuffer(out, dtype).astype(np.float64) / scale

    pcm = ffmpeg("s16le", np.int16, 32768.0)
    assert pcm.shape == ours.shape == (24_000,)
    # equal to 16-bit rounding, except where the two resamplers flush their tails
    assert np.abs(ours[:-16] - pcm[:-16]).max() <= 1 / 32768
    # FFmpeg down-mixing to float does not rescale its 1/sqrt(2) matrix: 3 dB louder
    assert np.abs(ffmpeg("f32le", np.float32, 1.0)).max() / np.abs(ours).max() == pytest.approx(
        2**0.5, rel=1e-3
    )


def test_audio_errors_name_the_file(clips: dict[str, Path], tmp_path: Path) -> None:
    cases = {
        clips["silent"]: media.NO_AUDIO,
        clips["blip"]: media.AUDIO_TOO_SHORT,
        tmp_path / "missing.wav": media.MISSING,
        tmp_path: media.NOT_A_FILE,
    }
    for path, reason in cases.items():
        with pytest.raises(MediaError) as caught:
            load_audio(path)
        assert caught.value.reason == reason and str(path) in str(caught.value)
    with pytest.raises(ValueError, match="pad_to_max"):
        AudioLoader(max_seconds=None, pad_to_max=True)


def test_media_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(MediaError("/data/x.mp4", media.VIDEO_DECODE, "bad slice")))
    assert (error.path, error.reason, error.detail) == ("/data/x.mp4", media.VIDEO_DECODE, "bad slice")
    assert str(error) == "/data/x.mp4: video decode failed (bad slice)"
    assert set(media.MEDIA_ERROR_REASONS) >= {media.MISSING, media.NO_AUDIO, media.UNKNOWN_CODEC}
