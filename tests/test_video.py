"""Frame sampling on generated media: every frame carries its own number (media.read_index), so each
test checks WHICH source frame came out, not only how many, against expectations computed here from
the published rule (every round(native / fps)-th frame from frame 0) or, for variable-rate files, from
the "frame on screen at k / fps" rule."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
import types
from fractions import Fraction

import media
import numpy as np
import pytest

from llamavid.core.errors import InputError, LlamaVidError, VideoError
from llamavid.media import video

# decord is optional (llamavid[decord]); where it is installed it is tested like the others
BACKENDS = ("pyav", "ffmpeg", "decord") if video.decord_available() else ("pyav", "ffmpeg")


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
    assert info.backend == "pyav" and not info.variable_frame_rate and not info.gaps
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_all_backends_agree_and_are_recorded(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", seconds=2, fps="30000/1001")
    runs = {}
    for backend in ("auto", *BACKENDS):
        info = video.probe(path, backend)
        assert info.backend == ("pyav" if backend == "auto" else backend)
        runs[backend] = _collect(path, 2, chunk_size=5, info=info)
    ref_t, ref_n, ref_f, _ = runs["pyav"]
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


@pytest.mark.slow
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
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True,
                         check=True).stdout
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


def _damaged_ts(tmp_path):
    clean = media.make_video(tmp_path / "clean.ts", seconds=6, fps=10, extra_args=["-f", "mpegts"])
    data = bytearray(clean.read_bytes())
    a = len(data) * 2 // 5
    data[a : a + len(data) // 6] = np.random.default_rng(0).integers(0, 256, len(data) // 6, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    return damaged


COUNTED = re.compile(r"^(\S+): (damaged data|decoding failed for)\D*?(\d+) frames? .*?between ([\d.]+) s and "
                     r"([\d.]+) s; skipped$")


@pytest.mark.slow
def test_video_damaged_in_the_middle_decodes_what_it_can_and_names_the_gap_once(tmp_path):
    damaged = _damaged_ts(tmp_path)
    for backend in ("auto", *BACKENDS):
        warnings: list[str] = []
        stamps, numbers, _, _ = _collect(damaged, 2, backend=backend, on_warning=warnings.append)
        # ONE line for the damage, with the count of sampled frames lost and the time range
        assert len(warnings) == 1, (backend, warnings)
        m = COUNTED.match(warnings[0])
        assert m and m.group(1) == "damaged.ts" and m.group(2) == "damaged data", (backend, warnings)
        lost, lo, hi = int(m.group(3)), float(m.group(4)), float(m.group(5))
        assert 0.5 < lo < hi < 5.5
        assert lost == sum(1 for k in range(13) if lo + 1e-6 < k / 2 < hi - 1e-6) > 0
        # every frame that came out is the picture of its own time: no stale, made-up pictures
        assert numbers == [round(t * 10) for t in stamps], backend
        assert not any(lo + 1e-6 < t < hi - 1e-6 for t in stamps)
        assert stamps[0] == 0.0 and stamps[-1] >= 5.0 and len(stamps) >= 8
        # the frames before the gap follow the published rule
        assert numbers[: int(lo * 2) + 1] == list(range(0, int(lo * 10) + 1, 5))


@pytest.mark.slow
def test_frames_that_fail_to_decode_are_one_counted_line(tmp_path):
    """140 frames (10.0 s - 23.9 s) are garbage with intact timestamps; at 2 fps 28 planned frames fail.
    Before: one warning per frame (or none); now one line with the count and the range."""
    bad = set(range(100, 240))
    path = media.make_video_with_bad_frames(tmp_path / "bad.mkv", bad, seconds=30, fps=10)
    want = [i for i in range(0, 300, 5) if i not in bad]
    for backend in BACKENDS:
        warnings: list[str] = []
        stamps, numbers, _, _ = _collect(path, 2, backend=backend, on_warning=warnings.append)
        assert numbers == [round(t * 10) for t in stamps], backend  # what came out is the right picture
        assert len(warnings) == 1, (backend, warnings)
        m = COUNTED.match(warnings[0])
        assert m and m.group(1) == "bad.mkv" and m.group(2) == "decoding failed for", (backend, warnings)
        if backend == "decord":  # decord loses good frames near damage, and not the same ones every run
            assert set(want) >= set(numbers) and int(m.group(3)) == 60 - len(numbers), warnings
            continue
        assert numbers == want, backend
        assert (int(m.group(3)), m.group(4), m.group(5)) == (28, "10.0", "23.5"), warnings


# ---------------------------------------------------------------------------------------------------------
# long videos, every backend


@pytest.fixture(scope="module")
def three_minutes(tmp_path_factory):
    """3 minutes at 24 fps (4,320 frames, 96x64): frame numbers need 13 bits."""
    return media.make_video(tmp_path_factory.mktemp("long") / "long.mp4", seconds=180, fps=24, bits=13)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_samples_a_three_minute_video_completely(three_minutes, backend):
    warnings: list[str] = []
    stamps, chunks = [], []
    numbers = []
    for chunk in video.sample_frames(three_minutes, 1, chunk_size=32, backend=backend, on_warning=warnings.append):
        stamps += chunk.timestamps
        numbers += [media.read_index(f, bits=13) for f in chunk.frames]
        chunks.append(chunk.indices)
    assert numbers == list(range(0, 4320, 24)), backend  # all 180, each the right picture, in order
    assert stamps == pytest.approx([i / 24 for i in range(0, 4320, 24)], abs=1e-6)
    assert [i for c in chunks for i in c] == list(range(180)) and warnings == []


def _on_screen_plan(times, fps, duration):
    chosen = []
    for k in range(int(math.ceil(duration * fps))):
        j = int(np.searchsorted(times, k / fps + 1e-9, side="right")) - 1
        if not chosen or j != chosen[-1]:
            chosen.append(j)
    return chosen


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "decord"])  # decord is not used for VFR files
def test_a_long_variable_rate_video_is_sampled_by_time_completely(tmp_path, backend):
    """3 minutes of frames 0.1 - 0.8 s apart: the plan is irregular, so no frame-number formula can pick it
    (the ffmpeg pipe used one above 200 frames)."""
    gaps = np.random.default_rng(3).uniform(0.1, 0.8, 400)
    times = [round(float(t), 3) for t in np.concatenate([[0.0], np.cumsum(gaps)]) if t < 180]
    path = media.make_vfr_video(tmp_path / "vfr.mkv", times)
    info = video.probe(path, backend)
    assert info.variable_frame_rate
    want = _on_screen_plan(np.asarray(times), 1, info.duration)
    assert len(want) > 150
    stamps, numbers, _, _ = _collect(path, 1, chunk_size=64, info=info)
    assert numbers == want
    assert stamps == pytest.approx([times[i] for i in want], abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# decoding only what the plan needs, and in parallel


def _full_decode(path, stamps):
    """Independent reference: every frame decoded by PyAV with no skipping, the planned ones kept."""
    import av

    keep = {round(t, 6) for t in stamps}
    out = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        t0 = None
        frames = list(container.decode(stream))
        t0 = min(float(f.pts * stream.time_base) for f in frames)
        for f in frames:
            t = round(float(f.pts * stream.time_base) - t0, 6)
            if t in keep:
                out[t] = f.to_ndarray(format="rgb24")
    return [out[round(t, 6)] for t in stamps]


@pytest.mark.slow
@pytest.mark.parametrize("open_gop", [False, True])
def test_skipped_decoding_gives_exactly_the_pixels_of_a_full_decode(tmp_path, open_gop):
    """H.264 with B-pyramids, GOP 48 at 24 fps: sampling at 1 fps leaves whole group tails and non-reference
    frames undecoded; the sampled pixels must be bit-identical to decoding everything."""
    path = media.make_video(tmp_path / "bf.mp4", seconds=20, fps=24, gop=48, bframes=3)
    if open_gop:  # x264 open GOP in Matroska: keyframes whose group shows frames before them
        reenc = tmp_path / "og.mkv"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-c:v", "libx264", "-preset", "ultrafast",
                        "-bf", "3",
                        "-g", "48", "-x264-params", "open-gop=1:b-pyramid=normal:scenecut=0", str(reenc)], check=True)
        path = reenc
    info = video.probe(path)
    index = video._Index.of(info)
    assert info.backend == "pyav" and info.codec in video.NONREF_SKIP_CODECS and index is not None
    assert bool(index.open_gop[1:].all()) == open_gop
    plan = [i for i, _ in video._plan(info, 1)]
    runs = index.runs(plan)
    if open_gop:  # each group refers to the one before: all decoded, up to the last sampled frame
        assert len(runs) == 1 and runs[0][0] == 0 and runs[0][1] >= index.starts[-1]
    else:  # closed groups: their tails after the last sampled frame are never decoded
        assert len(runs) == len(index.starts) == 10
        assert sum(b - a + 1 for a, b in runs) < 0.6 * len(index.pts)
    for workers in (1, 2):
        stamps, numbers, frames, _ = _collect(path, 1, chunk_size=4, info=info, workers=workers)
        assert numbers == list(range(0, 480, 24)) and len(frames) == 20
        for got, ref in zip(frames, _full_decode(path, stamps)):
            assert np.array_equal(got, ref)


@pytest.mark.slow
def test_parallel_workers_give_the_same_frames_and_timestamps(three_minutes, tmp_path):
    info = video.probe(three_minutes)
    runs = {}
    for workers in (1, 2, 3):
        chunks = list(video.sample_frames(three_minutes, 2, chunk_size=7, start=5, info=info, workers=workers))
        runs[workers] = chunks
        assert all(len(c.frames) <= 7 for c in chunks)
    ref = runs[1]
    assert [i for c in ref for i in c.indices] == list(range(5, 360))
    for workers in (2, 3):
        assert [c.indices for c in runs[workers]] == [c.indices for c in ref]
        assert [c.timestamps for c in runs[workers]] == [c.timestamps for c in ref]
        assert all(np.array_equal(a.frames, b.frames) for a, b in zip(runs[workers], ref))
    # a damaged file: the same frames and the same one warning with any number of workers
    damaged = _damaged_ts(tmp_path)
    results = []
    for workers in (1, 2):
        warnings: list[str] = []
        stamps, numbers, frames, _ = _collect(damaged, 5, chunk_size=3, workers=workers, on_warning=warnings.append)
        results.append((stamps, numbers, warnings))
    assert results[0] == results[1] and len(results[0][2]) == 1


def test_without_a_packet_index_decoding_goes_forward_from_a_seek(three_minutes, monkeypatch):
    """Files over FULL_SCAN_BYTES get nominal times and no packet index: no skipping, one worker, same frames."""
    indexed = video.probe(three_minutes)
    monkeypatch.setattr(video, "FULL_SCAN_BYTES", 1000)
    nominal = video.probe(three_minutes)
    assert nominal.packet_pts is None and indexed.packet_pts is not None
    assert nominal.frame_times == pytest.approx(indexed.frame_times, abs=1e-6)
    a = _collect(three_minutes, 1, chunk_size=16, start=100, info=indexed)
    b = _collect(three_minutes, 1, chunk_size=16, start=100, info=nominal, workers=2)
    assert [media.read_index(f, bits=13) for f in b[2]] == list(range(2400, 4320, 24))
    assert a[0] == pytest.approx(b[0], abs=1e-9) and len(a[2]) == len(b[2])
    assert all(np.array_equal(x, y) for x, y in zip(a[2], b[2]))


def test_segments_start_at_keyframes_and_hold_a_bounded_number_of_frames(three_minutes, monkeypatch):
    info = video.probe(three_minutes)
    index = video._Index.of(info)
    todo = [(k, i, t) for k, (i, t) in enumerate(video._plan(info, 2))]
    monkeypatch.setattr(video, "SEGMENT_BYTES", 10 * info.width * info.height * 3)  # 10 frames a segment
    pieces = video._segments(info, todo, 2)
    assert [x for p in pieces for x in p] == todo and len(pieces) > 10
    assert all(10 <= len(p) <= 12 for p in pieces[:-1])
    for p in pieces:  # each piece's packets start at a keyframe that no earlier piece needs
        first = index.runs([i for _, i, _ in p])[0][0]
        assert info.packet_keys[first]
    # at most workers + 1 segments are decoded ahead of the consumer
    live = []
    real = video._decode_pyav

    def counting(path, info, seg, threads, problems, stop):
        live.append(seg[0][0])
        yield from real(path, info, seg, threads, problems, stop)

    monkeypatch.setitem(video._DECODERS, "pyav", counting)
    # No sleep-and-hope: wait until every decode worker has asked _in_order's slot semaphore for one more
    # segment and been refused. While the consumer holds on to its first chunk no slot is ever given back,
    # so a refused worker has finished its segment and can start no other: the workers are as far ahead as
    # they may ever get, and the count below is final, however fast or slow this machine is.
    refused: set[str] = set()
    made: list[threading.Semaphore] = []
    changed = threading.Condition()

    class WatchedSlots(threading.Semaphore):
        def __init__(self, value: int = 1) -> None:
            super().__init__(value)
            made.append(self)

        def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
            got = super().acquire(blocking, timeout)
            if not got:
                with changed:
                    refused.add(threading.current_thread().name)
                    changed.notify_all()
            return got

    watched = types.ModuleType("threading")  # video.py's `threading`, with the slot semaphore watched
    watched.__dict__.update(vars(threading))
    watched.Semaphore = WatchedSlots
    monkeypatch.setattr(video, "threading", watched)

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("llamavid-decode")]

    def all_waiting() -> bool:  # every worker still running was refused a slot (or ran out of work)
        return all(t.name in refused for t in workers())

    frames = video.sample_frames(three_minutes, 2, chunk_size=1, info=info, workers=2)
    next(frames)
    try:
        assert len(made) == 1, "_in_order no longer bounds its workers with a threading.Semaphore: update this test"
        deadline = time.monotonic() + 60
        with changed:
            while not all_waiting():
                if time.monotonic() > deadline:
                    pytest.fail(f"after 60 s the decode workers {[t.name for t in workers()]} were still not all "
                                f"waiting for a free segment slot (refused: {sorted(refused)}); "
                                f"segments started: {live}")
                changed.wait(0.05)  # a worker that exits (no segments left) notifies no one: look again soon
        assert len(live) == 3  # segments 0, 1 and 2: two decoding, one more waiting, none beyond
    finally:
        frames.close()
    assert not workers()


def test_auto_workers_rule(three_minutes, tmp_path):
    info = video.probe(three_minutes)
    assert video.auto_workers(info, 180, cpus=2) == 1
    assert video.auto_workers(info, 180, cpus=8) == 4
    assert video.auto_workers(info, 180, cpus=64) == 8
    assert video.auto_workers(info, 40, cpus=8) == 2  # at least 16 planned frames a worker
    short = video.probe(media.make_video(tmp_path / "short.mp4", seconds=10, fps=24))
    assert video.auto_workers(short, 10, cpus=8) == 1


# ---------------------------------------------------------------------------------------------------------
# options checked at the edge


def test_bad_options_are_one_line_input_errors(tmp_path, monkeypatch):
    path = media.make_video(tmp_path / "v.mp4", seconds=1, fps=10)
    for fps in (0, -1, float("nan"), float("inf"), "abc"):
        with pytest.raises(InputError, match="fps"):
            next(video.sample_frames(path, fps))
    for kwargs in ({"chunk_size": 0}, {"chunk_size": True}, {"chunk_size": 2.5}, {"start": -1}, {"workers": 0},
                   {"workers": True}, {"workers": "2"}):
        with pytest.raises(InputError):
            next(video.sample_frames(path, 1, **kwargs))
    with pytest.raises(InputError, match="expected auto, pyav, decord or ffmpeg"):
        video.probe(path, "opencv")
    monkeypatch.setattr(video, "decord_available", lambda: False)
    with pytest.raises(InputError, match=r"llamavid\[decord\]"):
        video.probe(path, "decord")


def test_a_decoder_library_error_is_a_one_line_video_error(tmp_path):
    path = media.make_video(tmp_path / "gone.mp4", seconds=1, fps=10)
    for backend in BACKENDS:
        info = video.probe(path, backend)
        path.rename(tmp_path / "moved.mp4")  # the file vanishes between probing and decoding
        try:
            message = _one_line_error(VideoError, path, lambda: list(video.sample_frames(path, 2, info=info)))
            assert backend in message, message
        finally:
            (tmp_path / "moved.mp4").rename(path)


# ---------------------------------------------------------------------------------------------------------
# the native decoders stay quiet

QUIET_CHILD = """
import sys
from llamavid.media import video
from llamavid.core.errors import LlamaVidError
for path in sys.argv[2:]:
    for backend in sys.argv[1].split(","):
        try:
            for chunk in video.sample_frames(path, 2, backend=backend, on_warning=lambda w: print("warning:", w)):
                pass
            print("ok", backend, path)
        except LlamaVidError as exc:
            print("error:", exc)
"""


@pytest.mark.slow
def test_native_decoder_output_never_reaches_stderr(tmp_path, tiny):
    damaged = _damaged_ts(tmp_path)
    bad = media.make_video_with_bad_frames(tmp_path / "bad.mkv", set(range(100, 240)), seconds=30, fps=10)
    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video\n" * 20)
    files = [str(damaged), str(bad), str(notes)]
    proc = subprocess.run([sys.executable, "-c", QUIET_CHILD, ",".join(BACKENDS), *files], capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert sum(line.startswith("ok") for line in out) == 2 * len(BACKENDS)
    assert sum(line.startswith("error:") and "notes.mp4" in line for line in out) == len(BACKENDS)
    assert sum(line.startswith("warning:") for line in out) == 2 * len(BACKENDS)  # one per damaged file
    # the CLI: only our own lines, one per problem
    proc = subprocess.run([sys.executable, "-m", "llamavid_cli", "encode", str(damaged), str(bad), str(notes), "-o",
                           str(tmp_path / "out"), "--vision-tower", str(tiny.vision_path), "--fps", "2"],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    ours = re.compile(r"^(llamavid: |\S+: \d+ frames -> \S+\.vidtok \()")  # our messages and per-file status lines
    assert proc.returncode == 1 and lines and all(ours.match(line) for line in lines), proc.stderr[-2000:]
    assert sum(line.startswith("llamavid: warning: ") for line in lines) == 2, lines
    assert sum(line.startswith("llamavid: error: ") and "notes.mp4" in line for line in lines) == 1, lines
