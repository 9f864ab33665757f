"""Corrupt, empty, truncated, missing and stream-less media through the video and audio loaders.

Every file goes through :func:`load_video` and :func:`load_audio` in a child process, so that a
segfault or a hang in a native decoder shows up as a failure naming the file instead of killing
pytest. Expectations per file and loader: "fail" (must raise MediaError naming the file), "ok"
(must load) or "either" (byte flips inside the compressed payload, or a truncated file whose index
is at the front: decoders may conceal the damage and return plausible frames, which no decoder can
tell from good ones; the result must then be a well-formed tensor).

Run as a script (``python test_media_fuzz.py JOBS.json``) it is the child: it prints one
``START i`` line before and one ``DONE i {json}`` line after each job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_FRAMES, IMAGE_SIZE = 8, 32  # small outputs: the decoders do the same work on the input
CHILD_TIMEOUT_S = 240


# ------------------------------------------------------------------------------ corpus building


def _remux_faststart(src: Path, dst: Path) -> None:
    """Copy an mp4 with its index (moov) moved to the front, as streaming-friendly files have it."""
    import av

    with (
        av.open(str(src)) as source,
        av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def make_base_media(folder: Path) -> dict[str, Path]:
    """Good files: audio+video (index at the end and at the front), video only, audio only, wav, frames."""
    import soundfile

    from multimood.data.synthetic import write_clip

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(20)[:, None, None, None]
    frames = np.clip(rng.integers(0, 60, (20, 48, 64, 3)) + t * 9, 0, 255).astype(np.uint8)
    seconds = np.arange(int(44_100 * 2.0)) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * seconds), 0.2 * np.sin(2 * np.pi * 660 * seconds)])
    base = {
        "av": write_clip(
            folder / "av.mp4", frames, fps=10, audio=stereo.astype(np.float32), sample_rate=44_100
        ),
        "video_only": write_clip(folder / "video_only.mp4", frames, fps=10),
        "audio_only": write_clip(
            folder / "audio_only.mp4", None, audio=stereo[0].astype(np.float32), sample_rate=16_000
        ),
    }
    _remux_faststart(base["av"], folder / "av_faststart.mp4")
    base["av_faststart"] = folder / "av_faststart.mp4"
    soundfile.write(folder / "tone.wav", stereo[0][:32_000].astype(np.float32), 16_000)
    base["wav"] = folder / "tone.wav"
    frame_dir = folder / "frames"
    frame_dir.mkdir()
    from PIL import Image

    for i in range(5):
        Image.fromarray(frames[i]).save(frame_dir / f"{i:05d}.jpg")
    base["frames"] = frame_dir
    return base


def make_bad_media(folder: Path, base: dict[str, Path], flips: int = 8, seed: int = 1) -> list[dict]:
    """Damaged copies of the good files and other bad paths, each with its expectation per loader."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    jobs: list[dict] = []

    def add(name: str, data: bytes | None, video: str, audio: str) -> None:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        jobs.append({"path": str(path), "video": video, "audio": audio})

    for key in ("av", "av_faststart", "video_only", "audio_only"):
        data = base[key].read_bytes()
        has_video, has_audio = key != "audio_only", key != "video_only"
        # a stream the file lacks is a certain failure, whatever else is wrong with it
        lacks = {"video": not has_video, "audio": not has_audio}
        index_at_front = key == "av_faststart"

        def expect(kind: str, damage: str, lacks: dict = lacks) -> str:
            return "fail" if lacks[kind] else damage

        for frac in (0.02, 0.1, 0.3, 0.5, 0.8, 0.95, 0.999):
            # Without its index (moov at the end, cut off) an mp4 cannot be read at all; with the
            # index in front, the decodable prefix may or may not be accepted. Cutting the last
            # 0.1% removes only trailing metadata (the encoder tag) and leaves a good file.
            damage = "either" if index_at_front or frac > 0.99 else "fail"
            add(
                f"{key}_trunc{frac}.mp4",
                data[: int(len(data) * frac)],
                expect("video", damage),
                expect("audio", damage),
            )
        for k in range(flips):
            arr = bytearray(data)
            for pos in rng.integers(0, len(arr), int(rng.integers(1, 100))):
                arr[pos] ^= int(rng.integers(1, 256))
            add(f"{key}_flip{k}.mp4", bytes(arr), expect("video", "either"), expect("audio", "either"))
        for k in range(2):
            arr = bytearray(data)
            for pos in rng.integers(0, min(2000, len(arr)), 20):
                arr[pos] ^= int(rng.integers(1, 256))
            add(f"{key}_headflip{k}.mp4", bytes(arr), expect("video", "either"), expect("audio", "either"))
        for zeros in (16, 1024):
            add(f"{key}_zero{zeros}.mp4", bytes(zeros) + data[zeros:], "fail", "fail")
        arr = bytearray(data)
        at = arr.find(b"moov")
        arr[at : at + 4] = b"xxxx"
        add(f"{key}_nomoov.mp4", bytes(arr), "fail", "fail")
        arr = bytearray(data)
        third = len(arr) // 3
        arr[third : 2 * third] = rng.integers(0, 256, third, dtype=np.uint8).tobytes()
        add(f"{key}_midrandom.mp4", bytes(arr), expect("video", "either"), expect("audio", "either"))
        add(f"{key}_boxheader.mp4", data[:32], "fail", "fail")

    wav = base["wav"].read_bytes()
    add("wav_zeroheader.wav", bytes(44) + wav[44:], "fail", "fail")
    add("wav_headeronly.wav", wav[:44], "fail", "fail")
    # A cut wav is a shorter valid wav to FFmpeg (its duration comes from the file size).
    add("wav_trunc0.5.wav", wav[: len(wav) // 2], "fail", "either")
    for k in range(2):
        arr = bytearray(wav)
        for pos in rng.integers(0, len(arr), 50):
            arr[pos] ^= int(rng.integers(1, 256))
        add(f"wav_flip{k}.wav", bytes(arr), "fail", "either")

    add("missing.mp4", None, "fail", "fail")
    add("empty.mp4", b"", "fail", "fail")
    add("text.mp4", b"this is not a video\n" * 50, "fail", "fail")
    for k, size in enumerate((10, 1000, 50_000, 300_000)):
        add(f"random{k}.mp4", rng.integers(0, 256, size, dtype=np.uint8).tobytes(), "fail", "fail")
    add("random.wav", rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(), "fail", "fail")
    (folder / "folder.mp4").mkdir()  # for video an (empty) frame folder, for audio not a file
    add("folder.mp4", None, "fail", "fail")
    os.mkfifo(folder / "pipe.mp4")  # opening a FIFO blocks forever: must be refused, not opened
    add("pipe.mp4", None, "fail", "fail")

    # frame folders: a good one with one bad frame (every frame is sampled), one of garbage files
    for name, bad in (("frames_truncated_jpg", "truncated"), ("frames_garbage", "garbage")):
        bad_dir = folder / name
        bad_dir.mkdir()
        for src in sorted(base["frames"].iterdir()):
            content = src.read_bytes()
            if bad == "garbage":
                content = rng.integers(0, 256, 500, dtype=np.uint8).tobytes()
            elif src.name == "00002.jpg":
                content = content[: len(content) // 2]
            (bad_dir / src.name).write_bytes(content)
        add(name, None, "fail", "fail")
    return jobs


def good_jobs(base: dict[str, Path]) -> list[dict]:
    """The undamaged files, with what each loader must do with them."""
    return [
        {"path": str(base["av"]), "video": "ok", "audio": "ok"},
        {"path": str(base["av_faststart"]), "video": "ok", "audio": "ok"},
        {"path": str(base["video_only"]), "video": "ok", "audio": "fail"},
        {"path": str(base["audio_only"]), "video": "fail", "audio": "ok"},
        {"path": str(base["wav"]), "video": "fail", "audio": "ok"},
        {"path": str(base["frames"]), "video": "ok", "audio": "fail"},
    ]


# ----------------------------------------------------------------------------- child and parent


def _child_main(jobs_file: str) -> None:
    import torch

    from multimood.data.media import MediaError, load_audio, load_video

    jobs = json.loads(Path(jobs_file).read_text())
    start = int(os.environ.get("FUZZ_START", "0"))
    for i in range(start, len(jobs)):
        job = jobs[i]
        print(f"START {i}", flush=True)
        result: dict = {"path": job["path"]}
        for kind in ("video", "audio"):
            try:
                if kind == "video":
                    out = load_video(job["path"], num_frames=NUM_FRAMES, image_size=IMAGE_SIZE)
                    well_formed = out.shape == (NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
                else:
                    fbank, valid = load_audio(job["path"])
                    out = fbank
                    well_formed = fbank.ndim == 2 and fbank.shape[1] == 128 and 0 < valid <= fbank.shape[0]
                well_formed = well_formed and bool(torch.isfinite(out).all())
                result[kind] = {"status": "ok", "well_formed": well_formed, "shape": list(out.shape)}
            except MediaError as error:
                result[kind] = {
                    "status": "media_error",
                    "reason": error.reason,
                    "names_file": Path(job["path"]).name in str(error),
                    "message": str(error)[:300],
                }
            except Exception as error:  # the bug this test exists to catch
                result[kind] = {"status": "other", "message": f"{type(error).__name__}: {error}"[:300]}
        print(f"DONE {i} {json.dumps(result)}", flush=True)


def run_jobs(jobs: list[dict], workdir: Path, child: str | None = None) -> tuple[dict[int, dict], list[str]]:
    """Run the jobs in child processes (``child``: the script, default this file); restart after a
    crash or hang, past the file it happened on. Returns results by job index and the incidents."""
    jobs_file = workdir / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    results: dict[int, dict] = {}
    incidents: list[str] = []
    start = 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FUZZ_START": "0"}
    while start < len(jobs):
        env["FUZZ_START"] = str(start)
        try:
            proc = subprocess.run(
                [sys.executable, child or __file__, str(jobs_file)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
            stdout, failure = proc.stdout, (f"exit code {proc.returncode}" if proc.returncode else None)
            if proc.returncode:
                failure += f": {proc.stderr.strip()[-500:]}"
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout or b""
            stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
            failure = f"hang (no progress within {CHILD_TIMEOUT_S} s)"
        started = None
        for line in stdout.splitlines():
            if line.startswith("START "):
                started = int(line.split()[1])
            elif line.startswith("DONE "):
                _, index, payload = line.split(" ", 2)
                results[int(index)] = json.loads(payload)
                started = None
        if failure is None:
            break
        if started is None or started < start:  # died outside a job: nothing to blame, no way on
            incidents.append(f"child failed outside a job: {failure}")
            break
        incidents.append(f"{jobs[started]['path']}: {failure}")
        start = started + 1
    return results, incidents


def check_results(jobs: list[dict], results: dict[int, dict], incidents: list[str]) -> list[str]:
    """Every way the loaders broke the policy, one line each."""
    problems = list(incidents)
    for i, job in enumerate(jobs):
        if i not in results:
            if not any(job["path"] in incident for incident in incidents):
                problems.append(f"{job['path']}: no result")
            continue
        for kind in ("video", "audio"):
            expected, got = job[kind], results[i][kind]
            where = f"{Path(job['path']).name} ({kind}, expected {expected})"
            if got["status"] == "other":
                problems.append(f"{where}: non-MediaError exception {got['message']}")
            elif got["status"] == "media_error":
                if expected == "ok":
                    problems.append(f"{where}: good file rejected: {got['message']}")
                elif not got["names_file"]:
                    problems.append(f"{where}: MediaError does not name the file: {got['message']}")
            elif expected == "fail":
                problems.append(f"{where}: bad file accepted, shape {got['shape']}")
            elif not got["well_formed"]:
                problems.append(f"{where}: malformed output {got['shape']}")
    return problems


def test_bad_media_raise_media_error_and_never_crash(tmp_path: Path) -> None:
    base = make_base_media(tmp_path / "good")
    bad = make_bad_media(tmp_path / "bad", base)
    assert len(bad) >= 100, f"only {len(bad)} bad files"
    jobs = good_jobs(base) + bad
    results, incidents = run_jobs(jobs, tmp_path)
    problems = check_results(jobs, results, incidents)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
    # the corpus really exercises failure: most bad files are rejected by both loaders
    rejected = sum(
        results[i][kind]["status"] == "media_error"
        for i in range(len(good_jobs(base)), len(jobs))
        for kind in ("video", "audio")
    )
    assert rejected >= 150, f"only {rejected} of {2 * len(bad)} bad loads raised MediaError"


def test_child_harness_reports_a_crash_as_a_failure(tmp_path: Path) -> None:
    """The parent must notice a segfaulting child and blame the file it was on."""
    base = make_base_media(tmp_path / "good")
    jobs = good_jobs(base)[:2]
    crash_script = tmp_path / "crash.py"
    # job 0 segfaults; job 1 completes
    crash_script.write_text(
        "import os, signal\n"
        "start = int(os.environ['FUZZ_START'])\n"
        "print(f'START {start}', flush=True)\n"
        "if start == 0:\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
        'print(\'DONE 1 {"path": "x"}\', flush=True)\n'
    )
    results, incidents = run_jobs(jobs, tmp_path, child=str(crash_script))
    assert list(results) == [1]
    assert len(incidents) == 1 and jobs[0]["path"] in incidents[0] and "exit code -11" in incidents[0]
    problems = check_results(
        jobs,
        {1: {"video": {"status": "ok", "well_formed": True}, "audio": {"status": "ok", "well_formed": True}}},
        incidents,
    )
    assert problems == incidents


def test_decoder_error_spam_is_silenced(tmp_path: Path) -> None:
    """FFmpeg reports each broken macroblock of a damaged stream; loading a clip prints none of it
    (PyAV keeps FFmpeg's log off unless asked; decord, which printed it, is no longer used)."""
    from multimood.data.synthetic import write_clip

    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 96, 3), dtype=np.uint8)
    data = bytearray(write_clip(tmp_path / "clip.mp4", frames, fps=10).read_bytes())
    rng = np.random.default_rng(3)
    for pos in rng.integers(len(data) // 4, len(data) // 2, 40):  # inside the frame data
        data[pos] ^= 0x5A
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    script = (
        "import sys\n"
        "if sys.argv[2] == 'loud':\n"
        "    import av.logging\n"
        "    av.logging.set_level(av.logging.WARNING)\n"
        "from multimood.data import media\n"
        "try:\n"
        "    media.load_video(sys.argv[1], num_frames=4, image_size=16)\n"
        "except media.MediaError:\n"
        "    pass\n"
    )

    def ffmpeg_lines(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", script, str(damaged), mode],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return sum("macroblock" in line or "decoding MB" in line for line in run.stderr.splitlines())

    assert ffmpeg_lines("loud") > 0  # the damage does make FFmpeg complain
    assert ffmpeg_lines("quiet") == 0


if __name__ == "__main__":
    _child_main(sys.argv[1])
