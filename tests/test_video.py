"""Frame sampling on generated media: every frame carries its own number (media.read_index), so each
test checks WHICH source frame came out, not only how many, against expectations computed here from
the published rule (every round(native / fps)-th frame from frame 0) or, for variable-rate files, from
the "frame on screen at k / fps" rule."""

from __future__ import annotations

import json
import math
import re
import subprocess
from fractions import Fraction

import numpy as np
import pytest

import media
from llamavid import video
from llamavid.errors import InputError, LlamaVidError, VideoError


def _collect(path, fps, **kwargs):
    """(timestamps, frame numbers read from the pictures, frames, chunk lengths) of a whole sampling run."""
    stamps, numbers, frames, sizes = [], [], [], []
    for chunk in video.sample_frames(path, fps, **kwargs):
        assert chunk.frames.dtype == np.uint8 and chunk.frames.ndim == 4 and chunk.frames.shape[-1] == 3
        assert len(chunk.timestamps) == len(chunk.indices) == len(chunk.frames)
        stamps += chunk.timestamps
        numbers += [media.read_index(f) for f in chunk.frames]
        frames += list(chunk.frames)
        sizes.append(len(chunk.frames))
    return stamps, numbers, frames, sizes


def _ffprobe_frame_times(path) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return [float(f["pts_time"]) for f in json.loads(out)["frames"]]


# ---------------------------------------------------------------------------------------------------------
# constant frame rate


@pytest.mark.parametrize("native", ["24", "30000/1001", "30", "60"])
def test_cfr_timestamps_and_frame_identity(tmp_path, native):
    rate = Fraction(native)
    path = media.make_video(tmp_path / "v.mp4", seconds=2.5, fps=native)
    n = int(round(Fraction(5, 2) * rate))
    info = video.probe(path)
    assert info.backend == "decord" and not info.variable_frame_rate and not info.gaps
    assert info.frame_count == n
    assert info.native_fps == pytest.approx(float(rate), rel=1e-6)
    for fps in (1, 2, 0.5):
        step = max(1, round(rate / Fraction(fps)))  # exact arithmetic: 29.97 / 2 = 14.985 -> 15
        want = list(range(0, n, step))
        stamps, numbers, _, sizes = _collect(path, fps, chunk_size=3)
        assert numbers == want, (native, fps)
        assert stamps == pytest.approx([float(i / rate) for i in want], abs=1e-6), (native, fps)
        assert max(sizes) <= 3
        assert video.sample_times(info, fps) == pytest.approx(stamps, abs=1e-9)


def test_chunks_never_exceed_chunk_size_and_resume_gives_the_same_tail(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", seconds=3, fps=30)
    full_t, full_n, full_f, sizes = _collect(path, 5, chunk_size=4)
    assert full_n == list(range(0, 90, 6)) and sizes == [4, 4, 4, 3]
    for backend in ("auto", "pyav", "ffmpeg"):
        for start in (1, 4, 9, 14):
            tail_t, tail_n, tail_f, sizes = _collect(path, 5, chunk_size=4, start=start, backend=backend)
            assert tail_n == full_n[start:] and tail_t == pytest.approx(full_t[start:], abs=1e-9), (backend, start)
            assert all(s <= 4 for s in sizes)
            assert all(np.abs(a.astype(int) - b.astype(int)).mean() < 2 for a, b in zip(tail_f, full_f[start:]))
        chunks = list(video.sample_frames(path, 5, chunk_size=4, start=len(full_n), backend=backend))
        assert chunks == []
    with pytest.raises(InputError):
        next(video.sample_frames(path, 5, chunk_size=0))
    with pytest.raises(InputError):
        next(video.sample_frames(path, 0))


def test_all_backends_agree_and_are_recorded(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", seconds=2, fps="30000/1001")
    runs = {}
    for backend in ("auto", "decord", "pyav", "ffmpeg"):
        info = video.probe(path, backend)
        assert info.backend == ("decord" if backend == "auto" else backend)
        runs[backend] = _collect(path, 2, chunk_size=5, info=info)
    ref_t, ref_n, ref_f, _ = runs["decord"]
    assert ref_n == list(range(0, 60, 15))
    for backend, (stamps, numbers, frames, _) in runs.items():
        assert numbers == ref_n and stamps == pytest.approx(ref_t, abs=1e-9), backend
        for a, b in zip(frames, ref_f):
            assert a.shape == b.shape == (media.HEIGHT, media.WIDTH, 3)
            assert np.abs(a.astype(int) - b.astype(int)).mean() < 2, backend  # same picture, up to colour rounding


# ---------------------------------------------------------------------------------------------------------
# variable frame rate

VFR_TIMES = [0.0, 0.1, 0.15, 0.7, 0.73, 1.2, 2.05, 2.5, 3.3]


def _on_screen(times: list[float], fps: float) -> list[int]:
    """Independent expectation: for k = 0, 1, ... the last frame with time <= k / fps, each frame once,
    while k / fps is inside the video: a frame lasts until the next one, the last one for the median
    interval (a variable-rate file does not say how long its last frame lasts)."""
    end = times[-1] + float(np.median(np.diff(times)))
    chosen: list[int] = []
    for k in range(int(math.ceil(end * fps))):
        j = max(i for i, t in enumerate(times) if t <= k / fps + 1e-9)
        if not chosen or j != chosen[-1]:
            chosen.append(j)
    return chosen


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_vfr_generator_holds_the_intended_times(tmp_path, suffix):
    path = media.make_vfr_video(tmp_path / f"vfr{suffix}", VFR_TIMES)
    assert _ffprobe_frame_times(path) == pytest.approx(VFR_TIMES, abs=1e-6)  # no 1/25 s grid, no extra frame


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_vfr_timestamps_are_presentation_times_of_the_frame_on_screen(tmp_path, suffix):
    path = media.make_vfr_video(tmp_path / f"vfr{suffix}", VFR_TIMES)
    for backend in ("auto", "pyav", "ffmpeg"):
        info = video.probe(path, backend)
        assert info.variable_frame_rate and not info.gaps, backend
        assert info.frame_times == pytest.approx(VFR_TIMES, abs=1e-6)
        assert info.native_fps == pytest.approx((len(VFR_TIMES) - 1) / VFR_TIMES[-1])  # not Matroska's 1000
        for fps in (2, 1):
            want = _on_screen(VFR_TIMES, fps)
            stamps, numbers, _, sizes = _collect(path, fps, chunk_size=2, info=info)
            assert numbers == want, (backend, fps)
            assert stamps == pytest.approx([VFR_TIMES[i] for i in want], abs=1e-6), (backend, fps)
            assert max(sizes) <= 2
    # the rule spelled out once: t=0.5 shows frame 2 (0.15 s); at 1 fps the last frame (3.3 s, lasting
    # to 3.75 s) is never on screen at a whole second
    assert _on_screen(VFR_TIMES, 2) == [0, 2, 4, 5, 7, 8] and _on_screen(VFR_TIMES, 1) == [0, 4, 5, 7]


# ---------------------------------------------------------------------------------------------------------
# rotation


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = media.make_rotated_video(tmp_path / f"r{rotation}.mp4", rotation, seconds=1, fps=10)
    info = video.probe(path)
    assert info.rotation == rotation and info.backend == "pyav"  # decord ignores display matrices
    assert (info.width, info.height) == (media.WIDTH, media.HEIGHT)  # stored 64 wide, shown 96 wide
    stamps, numbers, frames, _ = _collect(path, 5)
    assert numbers == [0, 2, 4, 6, 8] and stamps == pytest.approx([0, 0.2, 0.4, 0.6, 0.8], abs=1e-6)
    # ffmpeg's own autorotation is the independent judge of "upright"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", "select='not(mod(n\\,2))'", "-fps_mode",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    upright = np.frombuffer(raw, np.uint8).reshape(-1, media.HEIGHT, media.WIDTH, 3)
    assert len(upright) == len(frames)
    for a, b in zip(frames, upright):
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 2
    assert [media.read_index(f) for f in _collect(path, 5, backend="ffmpeg")[2]] == numbers
    with pytest.raises(VideoError, match="rotated"):
        video.probe(path, "decord")


# ---------------------------------------------------------------------------------------------------------
# still images


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_still_images_are_one_frame(tmp_path, suffix):
    path = media.make_image(tmp_path / f"still{suffix}", index=37)
    info = video.probe(path)
    assert info.is_image and info.backend == "image" and info.frame_count == 1
    chunks = list(video.sample_frames(path, 1))
    assert len(chunks) == 1 and chunks[0].frames.shape == (1, media.HEIGHT, media.WIDTH, 3)
    assert chunks[0].timestamps == [0.0] and chunks[0].indices == [0]
    assert media.read_index(chunks[0].frames[0]) == 37
    assert list(video.sample_frames(path, 1, start=1)) == []  # resume past the only frame


# ---------------------------------------------------------------------------------------------------------
# errors and damage


def _one_line_error(exc_type, path, call):
    with pytest.raises(exc_type) as caught:
        call()
    message = str(caught.value)
    assert isinstance(caught.value, LlamaVidError)
    assert "\n" not in message and str(path) in message
    return message


def _write_zero_frame_video(path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for packet in [*audio.encode(frame), *audio.encode()]:
            container.mux(packet)


def test_errors_name_the_file_in_one_line(tmp_path):
    missing = tmp_path / "missing.mp4"
    assert "no such file" in _one_line_error(InputError, missing, lambda: video.probe(missing))
    assert "no such file" in _one_line_error(InputError, missing, lambda: next(video.sample_frames(missing)))

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    assert "decode" in _one_line_error(VideoError, text, lambda: video.probe(text))

    audio = tmp_path / "audio.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", str(audio)], check=True)
    assert "no video" in _one_line_error(VideoError, audio, lambda: video.probe(audio))

    empty = tmp_path / "empty.mp4"  # ffmpeg asked for 0 video frames drops the video stream
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=s=64x64:d=1", "-frames:v", "0",
                    "-c:v", "libx264", str(empty)], check=True)
    assert "no video" in _one_line_error(VideoError, empty, lambda: video.probe(empty))

    zero = tmp_path / "zero.mkv"  # a video stream with no frame in it (beside an audio one)
    _write_zero_frame_video(zero)
    assert "no frames" in _one_line_error(VideoError, zero, lambda: video.probe(zero))

    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x89PNG not really")
    _one_line_error(VideoError, fake_png, lambda: video.probe(fake_png))

    _one_line_error(InputError, tmp_path, lambda: video.probe(tmp_path))  # a folder


def test_video_damaged_in_the_middle_decodes_what_it_can_and_names_the_gap(tmp_path):
    clean = media.make_video(tmp_path / "clean.ts", seconds=6, fps=10, extra_args=["-f", "mpegts"])
    data = bytearray(clean.read_bytes())
    a = len(data) * 2 // 5
    data[a : a + len(data) // 6] = np.random.default_rng(0).integers(0, 256, len(data) // 6, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))

    for backend in ("auto", "pyav", "ffmpeg"):
        warnings: list[str] = []
        stamps, numbers, _, _ = _collect(damaged, 2, backend=backend, on_warning=warnings.append)
        gap_messages = [w for w in warnings if "between" in w]
        assert len(gap_messages) == 1 and "damaged.ts" in gap_messages[0], (backend, warnings)
        lo, hi = (float(x) for x in re.search(r"between ([\d.]+) s and ([\d.]+) s", gap_messages[0]).groups())
        assert 0.5 < lo < hi < 5.5
        # every frame that came out is the picture of its own time: no stale, made-up pictures
        assert numbers == [round(t * 10) for t in stamps], backend
        assert not any(lo + 1e-6 < t < hi - 1e-6 for t in stamps)
        assert stamps[0] == 0.0 and stamps[-1] >= 5.0 and len(stamps) >= 8
        # the frames before the gap follow the published rule
        assert numbers[: int(lo * 2) + 1] == list(range(0, int(lo * 10) + 1, 5))
