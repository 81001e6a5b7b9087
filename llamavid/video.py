"""Frames from a video (or a still image) at a requested rate, in chunks, with timestamps.

Sampling rule (the published one): every ``step = max(1, round(native_fps / fps))``-th frame from frame 0.
Each frame's timestamp is its real presentation time (relative to the first frame, read exactly from
the packets), so it is right for 29.97 fps and for files whose first frame does not start at 0.
Variable-frame-rate files (and constant-rate files with gaps from damage) are sampled by time instead:
for each sample time k / fps the frame ON SCREEN then (the last frame whose time is <= k / fps), each
frame taken once, with its own presentation time as the timestamp. In a damaged file the frames from a
gap up to the next keyframe are left out (a decoder only invents pictures for them) and the gap is
reported through ``on_warning`` as a time range.

Decoders: decord (fast random access) where it works (a batch it fails on is retried frame by frame,
skipping and reporting the frames that do not decode); PyAV where decord cannot open a file and for
rotated videos (decord ignores display matrices); an ``ffmpeg`` pipe as the last resort. The one
chosen is ``VideoInfo.backend``. Frames come out upright (the display rotation is applied) as
(n, H, W, 3) uint8 RGB arrays, ``chunk_size`` at a time, so memory never depends on the video's length.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import InputError, VideoError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"}
BACKENDS = ("decord", "pyav", "ffmpeg")

Warn = Callable[[str], None]


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


@dataclass
class VideoInfo:
    path: str
    is_image: bool
    backend: str  # the decoder that will be used: "decord", "pyav", "ffmpeg" or "image"
    native_fps: float  # average frame rate (1.0 for images)
    frame_count: int  # native frames
    duration: float  # seconds
    width: int  # after rotation
    height: int
    rotation: int  # counter-clockwise degrees the frames are turned by to display upright: 0, 90, 180, 270
    variable_frame_rate: bool
    frame_times: list[float] | None = field(default=None, repr=False)  # every native frame's time, when known
    gaps: list[tuple[float, float]] = field(default_factory=list)  # stretches with no frames (damage)
    start_time: float = 0.0  # container time of the first frame (timestamps are relative to it)


@dataclass
class FrameChunk:
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB, upright
    timestamps: list[float]  # seconds
    indices: list[int]  # positions in the sampled sequence (0, 1, 2, ...)


# ---------------------------------------------------------------------------------------------------------
# probing


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")


def _ffprobe(path: Path) -> dict | None:
    """Stream metadata from ffprobe, or None when ffprobe is missing or cannot read the file."""
    if shutil.which("ffprobe") is None:
        return None
    proc = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return None


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _rotation_from_probe(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return (-int(tag)) % 360 if tag not in (None, "") else 0  # the old tag is clockwise


def _image_info(path: Path) -> VideoInfo:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            width, height = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoError(f"{path}: not an image we can decode ({' '.join(str(exc).split())[:120]})") from None
    return VideoInfo(str(path), True, "image", 1.0, 1, 0.0, width, height, 0, False, [0.0])


def _frame_times_decord(path: Path) -> tuple[list[float], float] | None:
    try:
        from decord import VideoReader, cpu
    except ImportError:
        return None
    try:
        vr = VideoReader(str(path), ctx=cpu(0), num_threads=1)
        n = len(vr)
        if n == 0:
            return [], 0.0
        stamps = vr.get_frame_timestamp(list(range(n)))[:, 0]
        return [float(t) for t in stamps], float(vr.get_avg_fps())
    except Exception:  # decord raises its own DECORDError types for anything it cannot handle
        return None


FULL_SCAN_BYTES = 1 << 30


def _frame_times_pyav(path: Path, variable_hint: bool) -> tuple[list[float], list[bool], float, int, int] | None:
    """Presentation times of every frame (sorted), whether each is a keyframe, rate, width, height.

    Times come from the packets (demuxing reads the file but decodes nothing) and are exact: pts times
    the stream time base, in float64 (decord's own timestamps are float32, off by a millisecond after
    a few hours). For a file over 1 GiB that ffprobe calls constant-rate, nominal times (index / rate)
    spare reading it all.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return [], [], 0.0, 0, 0
            stream = container.streams.video[0]
            base = stream.time_base
            rate = float(stream.average_rate or 0.0)
            width, height = stream.codec_context.width, stream.codec_context.height
            if path.stat().st_size > FULL_SCAN_BYTES and not variable_hint and rate and stream.frames:
                start = float(stream.start_time * base) if stream.start_time is not None else 0.0
                return [start + i / rate for i in range(stream.frames)], [True] * stream.frames, rate, width, height
            found = sorted((p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.pts is not None and p.size > 0)
            return [float(pts * base) for pts, _ in found], [key for _, key in found], rate, width, height
    except Exception:  # any container PyAV cannot parse
        return None


def probe(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """What a file is: still image or video, frame rate, frame count, size, rotation, and the decoder to use."""
    path = Path(path)
    _check_exists(path)
    if backend not in ("auto", *BACKENDS):
        raise InputError(f"backend {backend!r}: expected auto, decord, pyav or ffmpeg")
    if is_image_path(path):
        return _image_info(path)
    meta = _ffprobe(path)
    stream = next((s for s in (meta or {}).get("streams", []) if s.get("codec_type") == "video"
                   and not (s.get("disposition") or {}).get("attached_pic")), None)
    if meta is not None and stream is None:
        raise VideoError(f"{path}: the file holds no video stream")
    rotation = _rotation_from_probe(stream) if stream else 0
    avg = _rate(stream.get("avg_frame_rate")) if stream else 0.0
    real = _rate(stream.get("r_frame_rate")) if stream else 0.0

    # Frame times come from the packets (PyAV, exact) or the container index (decord): no decoding needed.
    times: list[float] | None = None
    keys: list[bool] | None = None
    fps = avg
    size = (0, 0)
    hint = bool(avg and real and abs(avg - real) / real > 0.01)
    got_av = _frame_times_pyav(path, variable_hint=hint)
    pyav_ok = got_av is not None
    if got_av is not None:
        times, keys, fps, size = got_av[0], got_av[1], got_av[2] or avg, (got_av[3], got_av[4])
    decord_ok = False
    if rotation == 0 and backend in ("auto", "decord"):
        got = _frame_times_decord(path)
        if got is not None:
            decord_ok = True
            if times is None or len(times) != len(got[0]):  # decord's frame numbering rules where it decodes
                times, keys = got[0], None
            fps = got[1] or fps
    if backend == "decord" and rotation in (90, 270):
        raise VideoError(f"{path}: decord cannot decode video rotated by {rotation} degrees (use --backend pyav)")
    if backend == "auto":
        chosen = "decord" if decord_ok else "pyav" if pyav_ok and times else "ffmpeg"
    else:
        chosen = backend
    if times is None and meta is None:
        raise VideoError(f"{path}: not a video or image file we can decode (no decoder could open it)")
    if times is not None and not times:
        raise VideoError(f"{path}: the video holds no frames")

    width = int(stream.get("width", 0)) if stream else 0
    height = int(stream.get("height", 0)) if stream else 0
    if not width or not height:
        width, height = size
    if rotation in (90, 270):
        width, height = height, width
    t0 = 0.0
    vfr = False
    gaps: list[tuple[float, float]] = []
    if times is not None:
        t0 = times[0]
        times = [t - t0 for t in times]
        count = len(times)
        vfr = _is_variable(times)
        fps = _native_rate(times, fps, vfr)
        gaps = [] if vfr else _gaps(times, keys, fps)
        step = 1.0 / fps if not vfr else float(np.median(np.diff(times))) if count > 1 else 0.0
        duration = times[-1] + step
    else:
        duration = float((meta or {}).get("format", {}).get("duration") or stream.get("duration") or 0.0)
        count = int(stream.get("nb_frames") or round(duration * (avg or 1.0)))
        if count <= 0:
            raise VideoError(f"{path}: the video holds no frames")
        vfr = hint
    if not fps or fps <= 0:
        fps = 1.0
    return VideoInfo(str(path), False, chosen, float(fps), count, float(duration), width, height, rotation, vfr, times, gaps,
                     start_time=t0)


def _is_variable(times: Sequence[float]) -> bool:
    """More than 5% of frame intervals wander over 25% from the median interval.

    The median, not the container's nominal rate, is the yardstick: Matroska reports 1000 fps for
    anything, and a constant-rate file with a damaged stretch keeps its median (its one long interval
    is a gap, not variable rate).
    """
    if len(times) < 3:
        return False
    d = np.diff(np.asarray(times))
    nominal = float(np.median(d))
    if nominal <= 0:
        return True
    return bool(np.mean(np.abs(d - nominal) > 0.25 * nominal) > 0.05)


def _native_rate(times: Sequence[float], reported: float, variable: bool) -> float:
    """The frame rate to report and to step by: the container's when the frame times agree with it
    (keeps 30000/1001 exact), else what the times say (the median interval for constant rate, the
    mean for variable rate)."""
    if len(times) < 2:
        return reported or 1.0
    d = np.diff(np.asarray(times))
    if variable:
        return float((len(times) - 1) / (times[-1] - times[0]))
    measured = 1.0 / float(np.median(d)) if np.median(d) > 0 else 0.0
    if reported and measured and abs(reported - measured) / measured <= 0.01:
        return float(reported)
    return measured or reported or 1.0


def _gaps(times: Sequence[float], keys: Sequence[bool] | None, fps: float) -> list[tuple[float, float]]:
    """Stretches with no usable frame in a constant-rate file: damage.

    A gap starts at the last frame before a missing stretch of at least half a second (and 4 frame
    intervals). The frames after it up to the next keyframe are counted in: their reference frames are
    gone, so a decoder only makes up pictures for them (stale copies of earlier frames). The gap is
    (time of the last good frame, time of the next good frame) and sampling leaves out the frames inside.
    """
    if len(times) < 2 or not fps:
        return []
    d = np.diff(np.asarray(times))
    limit = max(0.5, 4.0 / fps)
    gaps = []
    for i in np.nonzero(d > limit)[0]:
        j = int(i) + 1
        if keys is not None:
            while j < len(times) and not keys[j]:
                j += 1
        end = float(times[j]) if j < len(times) else float(times[-1]) + 1.0 / fps
        gaps.append((float(times[i]), end))
    return gaps


# ---------------------------------------------------------------------------------------------------------
# the sampling plan


def _plan(info: VideoInfo, fps: float) -> list[tuple[int, float]]:
    """(native frame index, timestamp) of every sampled frame, in order.

    Constant rate: the published rule, native frames 0, step, 2*step, ... with step = round(native_fps
    / fps), each with its real presentation time. Variable rate or damaged: by time, the frame ON SCREEN
    at each sample time k / fps (the last frame whose time is <= k / fps), k = 0, 1, ... while k / fps is
    inside the video; a frame on screen at several sample times is taken once, and its timestamp is its
    own presentation time (not the sample time). Frames inside a damage gap are never chosen.
    """
    if fps <= 0:
        raise InputError(f"--fps {fps}: must be positive")
    if info.is_image:
        return [(0, 0.0)]
    times = info.frame_times
    if times is None:  # ffmpeg-only files: the published index rule with nominal times
        step = max(1, round(info.native_fps / fps))
        return [(i, i / info.native_fps) for i in range(0, info.frame_count, step)]
    if not info.variable_frame_rate and not info.gaps:
        step = max(1, round(info.native_fps / fps))
        return [(i, times[i]) for i in range(0, len(times), step)]
    eps = 1e-6
    usable = [i for i, t in enumerate(times) if not any(a + eps < t < b - eps for a, b in info.gaps)]
    arr = np.asarray([times[i] for i in usable])
    plan: list[tuple[int, float]] = []
    k = 0
    while k / fps < info.duration - eps:
        j = int(np.searchsorted(arr, k / fps + eps, side="right")) - 1  # last usable frame at or before k / fps
        if j >= 0 and (not plan or usable[j] > plan[-1][0]):
            plan.append((usable[j], float(arr[j])))
        k += 1
    return plan


def sample_times(info: VideoInfo, fps: float) -> list[float]:
    """The timestamps sampling will give (cheap: no decoding)."""
    return [t for _, t in _plan(info, fps)]


# ---------------------------------------------------------------------------------------------------------
# decoding


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))[None]


def _decode_decord(path: Path, plan: list[tuple[int, float]], warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
    from decord import VideoReader, cpu

    vr = VideoReader(str(path), ctx=cpu(0))
    batch = 8
    for start in range(0, len(plan), batch):
        part = plan[start : start + batch]
        try:
            frames = vr.get_batch([i for i, _ in part]).asnumpy()
            for j, frame in enumerate(frames):
                yield start + j, frame
        except Exception:  # a damaged stretch: frame by frame, skipping what does not decode
            for j, (i, t) in enumerate(part):
                try:
                    yield start + j, vr[i].asnumpy()
                except Exception:
                    warn(f"{path.name}: could not decode the frame at {t:.1f} s; skipped")


def _decode_pyav(path: Path, info: VideoInfo, plan: list[tuple[int, float]], warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
    """Decode forward from a seek near the first wanted frame, keeping the frames whose time is planned."""
    import av

    wanted = {round(t, 6): k for k, (_, t) in enumerate(plan)}
    targets = sorted(wanted)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pos = 0
        if plan and plan[0][1] > 1.0:
            container.seek(int((info.start_time + plan[0][1] - 1.0) / stream.time_base), stream=stream,
                           backward=True, any_frame=False)
        it = container.demux(stream)
        while pos < len(targets):
            try:
                packet = next(it)
            except StopIteration:
                break
            except av.error.FFmpegError:
                warn(f"{path.name}: unreadable data near {targets[pos]:.1f} s; skipped")
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                t = round(float(frame.pts * stream.time_base) - info.start_time, 6)
                while pos < len(targets) and targets[pos] < t - 1e-4:
                    pos += 1  # that planned frame never came out of the decoder
                if pos < len(targets) and abs(targets[pos] - t) <= 1e-4:
                    yield wanted[targets[pos]], _upright(frame.to_ndarray(format="rgb24"), info.rotation)
                    pos += 1


def _decode_ffmpeg(path: Path, info: VideoInfo, plan: list[tuple[int, float]], warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
    """ffmpeg selects the planned frame numbers itself and pipes raw RGB (it applies the rotation too)."""
    if shutil.which("ffmpeg") is None:
        raise VideoError(f"{path}: no decoder available (install ffmpeg, or PyAV/decord)")
    wanted = [i for i, _ in plan]
    expr = "+".join(f"eq(n\\,{i})" for i in wanted) if len(wanted) < 200 else None
    if expr is None:
        step = wanted[1] - wanted[0] if len(wanted) > 1 else 1
        expr = f"gte(n\\,{wanted[0]})*not(mod(n-{wanted[0]}\\,{step}))"
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"select='{expr}'", "-fps_mode", "passthrough",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    size = info.width * info.height * 3
    try:
        for k in range(len(plan)):
            buf = proc.stdout.read(size)  # type: ignore[union-attr]
            if len(buf) < size:
                if k < len(plan):
                    warn(f"{path.name}: ffmpeg gave {k} of {len(plan)} frames; the rest could not be decoded")
                break
            yield k, np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
    finally:
        proc.kill()
        proc.wait()


def sample_frames(path: str | os.PathLike, fps: float = 1.0, *, chunk_size: int = 32, start: int = 0,
                  stop: int | None = None, backend: str = "auto", on_warning: Warn | None = None,
                  info: VideoInfo | None = None) -> Iterator[FrameChunk]:
    """Sampled frames from ``start`` up to ``stop`` (positions in the sampled sequence; ``stop`` None: to
    the end), ``chunk_size`` at a time."""
    path = Path(path)
    warn = on_warning or (lambda _msg: None)
    info = info or probe(path, backend)
    if chunk_size < 1:
        raise InputError(f"chunk size {chunk_size}: must be at least 1")
    if info.is_image:
        if start == 0:
            yield FrameChunk(_load_image(path), [0.0], [0])
        return
    plan = _plan(info, fps)
    for a, b in info.gaps:
        warn(f"{path.name}: could not decode frames between {a:.1f} s and {b:.1f} s; skipped")
    todo = plan[start:stop]
    if not todo:
        return
    if info.backend == "decord":
        frames = _decode_decord(path, todo, warn)
    elif info.backend == "pyav":
        frames = _decode_pyav(path, info, todo, warn)
    else:
        frames = _decode_ffmpeg(path, info, todo, warn)
    buf: list[np.ndarray] = []
    idx: list[int] = []
    for k, frame in frames:
        buf.append(frame[..., :3])
        idx.append(start + k)
        if len(buf) == chunk_size:
            yield FrameChunk(np.stack(buf), [plan[i][1] for i in idx], idx)
            buf, idx = [], []
    if buf:
        yield FrameChunk(np.stack(buf), [plan[i][1] for i in idx], idx)
