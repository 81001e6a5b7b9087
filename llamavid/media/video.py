"""Frames from a video (or a still image) at a requested rate, in chunks, with timestamps.

Sampling rule (the published one): every ``step = max(1, round(native_fps / fps))``-th frame from frame 0.
Each frame's timestamp is its real presentation time (relative to the first frame, read exactly from
the packets), so it is right for 29.97 fps and for files whose first frame does not start at 0.
Variable-frame-rate files (and constant-rate files with gaps from damage) are sampled by time instead:
for each sample time k / fps the frame ON SCREEN then (the last frame whose time is <= k / fps), each
frame taken once, with its own presentation time as the timestamp. In a damaged file the frames from a
gap up to the next keyframe are left out (a decoder only invents pictures for them).

Decoders (``VideoInfo.backend``), chosen by measurement (docs/PERFORMANCE.md, "Decoding"):

- ``pyav`` (the default): decodes only what the sampled frames need. The packet index read at probe
  time says where every keyframe is, so groups of pictures that hold no sampled frame are never sent to
  the decoder, and a group is decoded only up to its last sampled frame; in H.264, frames that nothing
  refers to (non-reference frames) are skipped unless they are sampled. The pixels of the sampled
  frames are exactly those of a full decode. It applies the display rotation itself.
- ``decord`` (optional: ``pip install llamavid[decord]``; unmaintained, x86-64 wheels only).
- ``ffmpeg``: the ``ffmpeg`` program through a pipe, for files only it can read; it selects the
  planned frames by their timestamps and reports which frames it gave.

Long videos can be decoded by several workers at once (``sample_frames(workers=N)``): the sampling plan
is cut into segments at keyframes, each worker decodes whole segments (seeking to the segment's keyframe),
and the frames come out in order, identical to a single worker's. At most ``workers + 1`` segments are
held at any time, so memory does not grow with the length of the video.

Problems are reported through ``on_warning`` once per kind when sampling ends, with a count and a time
range ("v.ts: decoding failed for 134 frames between 12.0 s and 40.3 s; skipped"). The decoders' own
log lines never reach the terminal: PyAV's and decord's FFmpeg logging is turned off, decord's C++ log
and the ffmpeg program's stderr are captured.

Frames come out upright as (n, H, W, 3) uint8 RGB arrays, ``chunk_size`` at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..core.errors import InputError, LlamaVidError, VideoError, exception_text
from ..core.options import check_fps

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# The most pixels an image may declare (in its header, read before anything is decoded): 50 megapixels is
# more than an 8K frame (33 MP); the vision encoder sees 224 x 224. Pillow's own decompression-bomb limit
# (89 MP) is higher, and its error for twice that is refused here too.
MAX_IMAGE_PIXELS = 50_000_000


class ImageTooLargeError(VideoError):
    """An image that declares more than ``MAX_IMAGE_PIXELS`` pixels: refused before it is decoded."""
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"}
BACKENDS = ("pyav", "decord", "ffmpeg")

# Codecs in which a non-reference frame is never used to decode another frame, so skipping the ones that
# are not sampled cannot change any sampled pixel (in HEVC, "sub-layer non-reference" frames may still be
# referenced by higher temporal layers, so HEVC is not on the list).
NONREF_SKIP_CODECS = frozenset({"h264"})
SEGMENT_BYTES = 48 << 20  # raw RGB frames a parallel segment aims at (it ends at the next keyframe after that)
MIN_PARALLEL_SECONDS = 120.0  # shorter videos decode in one worker: a parallel start-up costs more than it saves

Warn = Callable[[str], None]


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


@dataclass
class VideoInfo:
    path: str
    is_image: bool
    backend: str  # the decoder that will be used: "pyav", "decord", "ffmpeg" or "image"
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
    codec: str = ""  # the video codec's FFmpeg name ("h264", ...), when PyAV read the file
    # The packet index, in file (decoding) order: each packet's pts in the stream's time base and whether
    # it is a keyframe. None when the packets were not all read (files over 1 GiB) or are not usable
    # (packets without timestamps, duplicate timestamps); decoding then goes forward from a seek.
    packet_pts: np.ndarray | None = field(default=None, repr=False, compare=False)
    packet_keys: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class FrameChunk:
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB, upright
    timestamps: list[float]  # seconds
    indices: list[int]  # positions in the sampled sequence (0, 1, 2, ...)


# ---------------------------------------------------------------------------------------------------------
# keeping native decoders quiet


_quiet_lock = threading.Lock()
_stderr_lock = threading.Lock()
_quieted: set[str] = set()


def _quiet_pyav() -> None:
    """FFmpeg inside PyAV logs nothing (PyAV 14+ starts that way; older versions route it to Python logging)."""
    with _quiet_lock:
        if "pyav" in _quieted:
            return
        import av.logging

        try:
            av.logging.set_level(None)
        except (TypeError, ValueError):  # PyAV < 14 takes a number only
            av.logging.set_level(av.logging.PANIC)
        _quieted.add("pyav")


def _quiet_decord() -> None:
    with _quiet_lock:
        if "decord" in _quieted:
            return
        import decord.logging

        decord.logging.set_level(decord.logging.QUIET)
        _quieted.add("decord")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[None]:
    """Send file descriptor 2 to a scratch file for the duration, then restore it.

    For native code that writes to stderr directly (decord's C++ log when it cannot open a file). The
    window is one library call; it holds a lock so that two threads never swap the descriptor at once.
    """
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing can reach a terminal
            yield
            return
        try:
            with tempfile.TemporaryFile() as scratch:
                os.dup2(scratch.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)


# ---------------------------------------------------------------------------------------------------------
# probing


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", where=path)
    if path.is_dir():
        raise InputError("is a directory, not a video", where=path)


def _ffprobe(path: Path) -> dict | None:
    """Stream metadata from ffprobe, or None when ffprobe is missing or cannot read the file."""
    if shutil.which("ffprobe") is None:
        return None
    proc = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
                           str(path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
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


@contextlib.contextmanager
def open_image(source, where: str | os.PathLike, *, what: str = "decode"):
    """A Pillow image whose header has been read and checked, nothing decoded yet: ``source`` a path or a binary
    file. An image that is not one Pillow reads, or that declares more than ``MAX_IMAGE_PIXELS`` pixels (a
    decompression bomb: a few KB that decode to gigabytes), is a ``VideoError`` about ``where``."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by our lower limit
            img = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"the image declares more pixels than the limit of {MAX_IMAGE_PIXELS:,}; it is not "
                         "decoded", where=where) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        paths = [source] if isinstance(source, (str, os.PathLike)) else []
        raise VideoError(f"not an image we can {what} ({exception_text(exc, *paths, limit=120)})",
                         where=where) from None
    with img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(f"the image declares {width:,} x {height:,} pixels, more than the limit of "
                             f"{MAX_IMAGE_PIXELS:,}; it is not decoded", where=where)
        yield img


def upright_size(img) -> tuple[int, int]:
    """(width, height) of an image as shown, after its EXIF orientation, from the header alone."""
    width, height = img.size
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the image is shown as stored
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _image_info(path: Path) -> VideoInfo:
    with open_image(path, path) as img:
        width, height = upright_size(img)
    return VideoInfo(str(path), True, "image", 1.0, 1, 0.0, width, height, 0, False, [0.0])


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _frame_times_decord(path: Path) -> tuple[list[float], float] | None:
    if not decord_available():
        return None
    from decord import VideoReader, cpu

    _quiet_decord()
    try:
        with _stderr_captured():  # decord's C++ log prints "ERROR opening ..." itself
            vr = VideoReader(str(path), ctx=cpu(0), num_threads=1)
        n = len(vr)
        if n == 0:
            return [], 0.0
        stamps = vr.get_frame_timestamp(list(range(n)))[:, 0]
        return [float(t) for t in stamps], float(vr.get_avg_fps())
    except Exception:  # decord raises its own DECORDError types for anything it cannot handle
        return None


FULL_SCAN_BYTES = 1 << 30


@dataclass
class _Scan:
    """What reading every packet of the video stream (no decoding) tells."""

    times: list[float]  # presentation times, sorted (seconds, container time)
    keys: list[bool]  # whether each of those is a keyframe
    rate: float
    width: int
    height: int
    codec: str = ""
    packet_pts: np.ndarray | None = None  # in file order
    packet_keys: np.ndarray | None = None


def _scan_pyav(path: Path, variable_hint: bool) -> _Scan | None:
    """Presentation times of every frame (sorted), whether each is a keyframe, and the packet index.

    Times come from the packets (demuxing reads the file but decodes nothing) and are exact: pts times
    the stream time base, in float64 (decord's own timestamps are float32, off by a millisecond after
    a few hours). For a file over 1 GiB that ffprobe calls constant-rate, nominal times (index / rate)
    spare reading it all (and there is no packet index).
    """
    import av

    _quiet_pyav()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return _Scan([], [], 0.0, 0, 0)
            stream = container.streams.video[0]
            base = stream.time_base
            rate = float(stream.average_rate or 0.0)
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name or ""
            if path.stat().st_size > FULL_SCAN_BYTES and not variable_hint and rate and stream.frames:
                start = float(stream.start_time * base) if stream.start_time is not None else 0.0
                return _Scan([start + i / rate for i in range(stream.frames)], [True] * stream.frames, rate, width,
                             height, codec)
            pts: list[int] = []
            keys: list[bool] = []
            usable = True
            for p in container.demux(stream):
                if p.size <= 0:
                    continue
                if p.pts is None:
                    usable = False
                    continue
                pts.append(p.pts)
                keys.append(bool(p.is_keyframe))
            order = sorted(range(len(pts)), key=pts.__getitem__)
            times = [float(pts[i] * base) for i in order]
            packet_pts = np.asarray(pts, dtype=np.int64)
            if usable and len(pts) > 1 and np.any(np.diff(packet_pts[order]) == 0):
                usable = False  # two packets with one timestamp: which frame is which is ambiguous
            return _Scan(times, [keys[i] for i in order], rate, width, height, codec,
                         packet_pts if usable and pts else None,
                         np.asarray(keys, dtype=bool) if usable and pts else None)
    except Exception:  # any container PyAV cannot parse
        return None


def check_readable(path: str | os.PathLike) -> None:
    """Refuse, cheaply, a file that is not a video or image we can decode: only the container's (or the
    image's) header is read, so a text file, an audio file or a damaged header is refused in milliseconds,
    before anything expensive (a model load, a probe that reads every packet) is spent on it."""
    path = Path(path)
    if is_image_path(path):
        with open_image(path, path, what="read"):
            return
    import av

    _quiet_pyav()
    try:
        with av.open(str(path)) as container:
            if not any(s.type == "video" and not (s.disposition & av.stream.Disposition.attached_pic)
                       for s in container.streams):
                raise VideoError("the file holds no video stream", where=path)
    except VideoError:
        raise
    except Exception as exc:  # PyAV's own errors: the container cannot be opened at all
        raise VideoError(f"not a video we can read ({exception_text(exc, path, limit=120)})", where=path) from None


def probe(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """What a file is: still image or video, frame rate, frame count, size, rotation, and the decoder to use."""
    path = Path(path)
    if backend not in ("auto", *BACKENDS):
        raise InputError(f"backend {backend!r}: expected auto, {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
    _check_exists(path)
    if backend == "decord" and not decord_available():
        raise InputError("backend 'decord': decord is not installed (pip install 'llamavid[decord]')")
    if is_image_path(path):
        return _image_info(path)
    meta = _ffprobe(path)
    stream = next((s for s in (meta or {}).get("streams", []) if s.get("codec_type") == "video"
                   and not (s.get("disposition") or {}).get("attached_pic")), None)
    if meta is not None and stream is None:
        raise VideoError("the file holds no video stream", where=path)
    rotation = _rotation_from_probe(stream) if stream else 0
    avg = _rate(stream.get("avg_frame_rate")) if stream else 0.0
    real = _rate(stream.get("r_frame_rate")) if stream else 0.0

    # Frame times come from the packets (PyAV, exact) or the container index (decord): no decoding needed.
    times: list[float] | None = None
    keys: list[bool] | None = None
    fps = avg
    size = (0, 0)
    hint = bool(avg and real and abs(avg - real) / real > 0.01)
    scan = _scan_pyav(path, variable_hint=hint)
    pyav_ok = scan is not None
    if scan is not None:
        times, keys, fps, size = scan.times, scan.keys, scan.rate or avg, (scan.width, scan.height)
    index_ok = pyav_ok
    if backend == "decord" and rotation in (90, 270):
        raise VideoError(f"decord cannot decode video rotated by {rotation} degrees (backend='pyav' can)", where=path)
    decord_times = None
    if backend == "decord" or (backend == "auto" and not (pyav_ok and times) and rotation == 0):
        decord_times = _frame_times_decord(path)
        if backend == "decord" and decord_times is None:
            raise VideoError("decord cannot open this file (try backend='pyav')", where=path)
    if backend == "auto":
        chosen = "pyav" if pyav_ok and times else "decord" if decord_times is not None else "ffmpeg"
    else:
        chosen = backend
    if chosen == "decord" and decord_times is not None:
        if times is None or len(times) != len(decord_times[0]):
            times, keys, index_ok = decord_times[0], None, False  # decord's frame numbering rules where it decodes
        fps = decord_times[1] or fps
    if times is None and meta is None:
        raise VideoError("not a video or image file we can decode (no decoder could open it)", where=path)
    if times is not None and not times:
        raise VideoError("the video holds no frames", where=path)

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
            raise VideoError("the video holds no frames", where=path)
        vfr = hint
    if not fps or fps <= 0:
        fps = 1.0
    info = VideoInfo(str(path), False, chosen, float(fps), count, float(duration), width, height, rotation, vfr, times,
                     gaps,
                     start_time=t0)
    if scan is not None:
        info.codec = scan.codec
        if index_ok and scan.packet_pts is not None and len(scan.packet_pts) == count:
            info.packet_pts, info.packet_keys = scan.packet_pts, scan.packet_keys
    return info


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
    fps = check_fps(fps)
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


def sampling_plan(info: VideoInfo, fps: float) -> list[tuple[int, float]]:
    """The frames sampling at ``fps`` takes: (native frame index, timestamp) each (cheap: no decoding)."""
    return _plan(info, fps)


def sample_times(info: VideoInfo, fps: float) -> list[float]:
    """The timestamps sampling will give (cheap: no decoding)."""
    return [t for _, t in _plan(info, fps)]


def frames_in_range(timestamps: Sequence[float] | np.ndarray, time_range: tuple[float, float]) -> list[int]:
    """Positions of the frames whose time t has start <= t < end (a millisecond of slack for rounding)."""
    start, end = time_range
    ts = np.asarray(timestamps, dtype=np.float64)
    return np.nonzero((ts >= start - 1e-3) & (ts < end - 1e-3))[0].tolist()


# ---------------------------------------------------------------------------------------------------------
# problems, counted


def _span(times: Sequence[float]) -> str:
    lo, hi = min(times), max(times)
    return f"at {lo:.1f} s" if f"{lo:.1f}" == f"{hi:.1f}" else f"between {lo:.1f} s and {hi:.1f} s"


def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


class _Problems:
    """Frame-level problems of one sampling run, reported as one line per kind when the run ends."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._failed: list[float] = []

    def failed(self, t: float) -> None:
        """A planned frame (timestamp ``t``) that the decoder did not deliver."""
        with self._lock:
            self._failed.append(t)

    def lines(self, gaps: Sequence[tuple[float, float]], fps: float, duration: float) -> list[str]:
        out = []
        if gaps:  # sampled frames lost: sample times k / fps strictly inside a gap
            lost = sum(max(0, math.ceil((b - 1e-6) * fps) - math.floor((a + 1e-6) * fps) - 1) for a, b in gaps)
            where = "" if len(gaps) == 1 else f" in {len(gaps)} stretches"
            out.append(f"{self.name}: damaged data{where}: {_frames(lost)} could not be decoded "
                       f"{_span([gaps[0][0], gaps[-1][1]])}; skipped")
        with self._lock:
            failed = sorted(set(self._failed))
        if failed:
            out.append(f"{self.name}: decoding failed for {_frames(len(failed))} {_span(failed)}; skipped")
        return out


# ---------------------------------------------------------------------------------------------------------
# decoding

Plan = list[tuple[int, int, float]]  # (position in the sampled sequence, native frame index, timestamp)


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def _load_image(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with open_image(path, path) as img:
        try:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))[None]
        except (OSError, ValueError, SyntaxError) as exc:  # a damaged image body
            raise VideoError(f"not an image we can decode ({exception_text(exc, path, limit=120)})",
                             where=path) from None


@dataclass
class _Index:
    """The packet index arranged for planning: file order, presentation order and groups of pictures."""

    pts: np.ndarray  # file order
    order: np.ndarray  # file position of the i-th frame in presentation order
    sorted_pts: np.ndarray  # pts[order]
    starts: np.ndarray  # file positions where groups of pictures begin (keyframes; 0 always)
    open_gop: np.ndarray  # per group: holds frames shown before its keyframe (they refer to the previous group)

    @classmethod
    def of(cls, info: VideoInfo) -> "_Index | None":
        if info.packet_pts is None or info.packet_keys is None:
            return None
        cached = getattr(info, "_index", None)
        if cached is not None:
            return cached
        pts = info.packet_pts
        order = np.argsort(pts, kind="stable")
        starts = np.flatnonzero(info.packet_keys)
        if not len(starts) or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        group_min = np.minimum.reduceat(pts, starts)
        index = cls(pts, order, pts[order], starts, group_min < pts[starts])
        object.__setattr__(info, "_index", index)
        return index

    def position(self, pts: int) -> int | None:
        """File position of the packet with this pts (None: not in the index)."""
        i = int(np.searchsorted(self.sorted_pts, pts))
        return int(self.order[i]) if i < len(self.sorted_pts) and self.sorted_pts[i] == pts else None

    def group_of(self, pos: np.ndarray | int):
        return np.searchsorted(self.starts, pos, side="right") - 1

    def group_end(self, g: int) -> int:
        return int(self.starts[g + 1]) - 1 if g + 1 < len(self.starts) else len(self.pts) - 1

    def runs(self, native: Sequence[int]) -> list[tuple[int, int]]:
        """File-order ranges (first, last) of packets to decode for the given native frames (presentation order).

        A group of pictures is decoded from its keyframe up to the last packet a sampled frame in it needs
        (its own packet: the frames it refers to come before it in file order); a group that holds no
        sampled frame is not decoded at all. A group that shows frames before its keyframe ("open" GOP)
        refers to the group before it, which is then decoded whole.
        """
        if not len(native):
            return []
        positions = self.order[np.asarray(native, dtype=np.int64)]
        last: dict[int, int] = {}
        for g, p in zip(self.group_of(positions).tolist(), positions.tolist()):
            last[g] = max(last.get(g, -1), p)
        for g in sorted(last, reverse=True):
            while g > 0 and self.open_gop[g]:
                g -= 1
                last[g] = self.group_end(g)
        runs: list[tuple[int, int]] = []
        for g in sorted(last):
            first = int(self.starts[g])
            if runs and runs[-1][1] == first - 1:
                runs[-1] = (runs[-1][0], last[g])
            else:
                runs.append((first, last[g]))
        return runs


def _decode_pyav(path: Path, info: VideoInfo, plan: Plan, threads: int, problems: _Problems,
                 stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """Decode what the planned frames need; yield (position, frame) for each, in order.

    With a packet index, only the packet runs of ``_Index.runs`` are sent to the decoder (before a jump
    the decoder is drained and reset, as after a seek); without one, everything from a seek before the
    first planned frame. In codecs of NONREF_SKIP_CODECS, non-reference frames that are not planned are
    not decoded. A planned frame that never comes out of the decoder is counted as failed.
    """
    import av

    _quiet_pyav()
    wanted = {round(t, 6): k for k, _, t in plan}
    targets = sorted(wanted)
    index = _Index.of(info)
    runs = index.runs([i for _, i, _ in plan]) if index is not None else None
    pos = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        cc = stream.codec_context
        base = stream.time_base
        skip_nonref = cc.name in NONREF_SKIP_CODECS
        skipping = False

        def take(frames) -> Iterator[tuple[int, np.ndarray]]:
            nonlocal pos
            for frame in frames:
                if frame.pts is None:
                    continue
                t = round(float(frame.pts * base) - info.start_time, 6)
                while pos < len(targets) and targets[pos] < t - 1e-4:
                    problems.failed(targets[pos])  # that planned frame never came out of the decoder
                    pos += 1
                if pos < len(targets) and abs(targets[pos] - t) <= 1e-4:
                    yield wanted[targets[pos]], _upright(frame.to_ndarray(format="rgb24"), info.rotation)
                    pos += 1

        def send(packet) -> Iterator[tuple[int, np.ndarray]]:
            nonlocal skipping
            if skip_nonref and packet is not None:
                planned = packet.pts is not None and round(float(packet.pts * base) - info.start_time, 6) in wanted
                if skipping == planned:
                    cc.skip_frame = "DEFAULT" if planned else "NONREF"
                    skipping = not planned
            try:
                frames = cc.decode(packet)
            except av.error.FFmpegError:
                return  # damaged data: the decoder goes on with the next packet
            yield from take(frames)

        def seek(pts: int) -> None:  # to the keyframe at or before pts (stream time base)
            container.seek(max(0, int(pts)), stream=stream, backward=True, any_frame=False)

        if runs is None:
            if plan[0][2] > 1.0:
                seek(math.floor((info.start_time + plan[0][2] - 1.0) / base))
        elif runs[0][0] > 0:
            seek(int(index.pts[runs[0][0]]))
        run = 0
        sent_last = -1  # file position of the packet sent last (-1: none yet)
        reseeks = 0
        errors = 0
        demux = container.demux(stream)
        while pos < len(targets) and not stop.is_set():
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError:  # unreadable data: carry on after it
                errors += 1
                if errors > 1000:
                    break
                demux = container.demux(stream)
                continue
            if packet.size <= 0:
                continue
            if runs is not None:
                at = index.position(packet.pts) if packet.pts is not None else None
                if at is None:  # a packet the index does not know: decode it only inside a run
                    if sent_last < 0:
                        continue
                else:
                    if sent_last < 0 and at > runs[0][0] and reseeks < 3:  # the seek landed past the keyframe
                        reseeks += 1
                        seek(int(index.pts[runs[0][0]]) - math.ceil((2.0, 10.0, 1e9)[reseeks - 1] / base))
                        demux = container.demux(stream)
                        continue
                    while run < len(runs) and at > runs[run][1]:
                        run += 1
                    if run == len(runs):
                        break
                    if at < runs[run][0]:
                        continue
                    if sent_last >= 0 and at == runs[run][0] and at != sent_last + 1:
                        yield from take(cc.decode(None))  # a jump: drain and reset the decoder, as a seek does
                        cc.flush_buffers()
                    sent_last = at
            yield from send(packet)
        if stop.is_set():
            return
        try:
            yield from take(cc.decode(None))
        except av.error.FFmpegError:
            pass
    for t in targets[pos:]:
        problems.failed(t)


def _decode_decord(path: Path, info: VideoInfo, plan: Plan, threads: int, problems: _Problems,
                   stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """decord's batches; a batch it fails on is retried frame by frame, skipping the frames that do not
    decode. After any failure the reader is opened again (a decord reader that failed once also fails
    on good frames after it), and a frame counts as lost only when a fresh reader fails on it too."""
    from decord import VideoReader, cpu

    _quiet_decord()

    def reader(threads: int = threads):
        with _stderr_captured():
            return VideoReader(str(path), ctx=cpu(0), num_threads=threads)

    vr = reader()
    batch = 8
    for start in range(0, len(plan), batch):
        if stop.is_set():
            return
        part = plan[start : start + batch]
        try:
            frames = vr.get_batch([i for _, i, _ in part]).asnumpy()
        except Exception:  # a damaged stretch: frame by frame, in one thread (decord's threads read ahead)
            vr = reader(1)
            for k, i, t in part:
                frame = None
                for _attempt in range(2):  # once more from a fresh reader before calling the frame lost
                    try:
                        frame = vr[i].asnumpy()
                        break
                    except Exception:
                        vr = reader(1)
                if frame is None:
                    problems.failed(t)
                    continue
                yield k, _upright(frame, info.rotation)
            continue
        for (k, _, _), frame in zip(part, frames):
            yield k, _upright(frame, info.rotation)


FFMPEG_BATCH = 128  # planned frames per ffmpeg process (the select expression is a tree of this many leaves)
_SHOWINFO = re.compile(rb"\bn:\s*\d+\s+pts:\s*(-?\d+)")


def _select_tree(times: Sequence[float]) -> str:
    """An ffmpeg expression true for frames at the given (sorted, absolute) times: a balanced tree of
    comparisons (ffmpeg's parser refuses a long flat sum, and a tree costs log2(n) per frame)."""
    if len(times) == 1:
        return f"lt(abs(t-{times[0]:.6f})\\,0.0005)"
    mid = len(times) // 2
    split = (times[mid - 1] + times[mid]) / 2
    return f"if(lt(t\\,{split:.6f})\\,{_select_tree(times[:mid])}\\,{_select_tree(times[mid:])})"


def _ffmpeg_frames(cmd: list[str], size: int, stop: threading.Event,
                   failures: list[str]) -> Iterator[tuple[bytes, int | None]]:
    """Run ffmpeg, yield (raw frame, pts in microseconds from showinfo or None); its stderr never reaches
    the terminal. When it fails without giving any frame, its last line goes to ``failures``."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stamps: queue.Queue = queue.Queue()
    last: list[str] = []

    def read_stderr() -> None:  # always drained, so ffmpeg never blocks on a full pipe
        for line in proc.stderr:  # type: ignore[union-attr]
            m = _SHOWINFO.search(line)
            if m and b"showinfo" in line:
                stamps.put(int(m.group(1)))
            elif line.strip():
                last[:] = [line.decode(errors="replace").strip()]
        stamps.put(None)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    ended = False
    got = 0
    try:
        while not stop.is_set():
            buf = proc.stdout.read(size)  # type: ignore[union-attr]
            if len(buf) < size:
                if got == 0 and proc.wait() != 0:
                    reader.join(timeout=5)
                    failures.append(re.sub(r"^\[[^]]*\]\s*", "", last[0]) if last else f"exit status {proc.returncode}")
                break
            pts = None
            if not ended:
                try:
                    pts = stamps.get(timeout=30)
                except queue.Empty:
                    pts = None
                ended = pts is None
            got += 1
            yield buf, pts
    finally:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)


def _decode_ffmpeg(path: Path, info: VideoInfo, plan: Plan, threads: int, problems: _Problems,
                   stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """The ffmpeg program selects the planned frames and pipes raw RGB (it applies the rotation too).

    Frames are chosen by timestamp (so a frame the decoder drops cannot shift the others), ``FFMPEG_BATCH``
    at a time, each batch from a seek shortly before it, and each frame that comes out is matched to the
    plan by its timestamp (printed by the showinfo filter). Files whose timestamps only ffmpeg can read
    are sampled by frame number in one run.
    """
    if shutil.which("ffmpeg") is None:
        raise VideoError("no decoder available (install ffmpeg, or PyAV)", where=path)
    size = info.width * info.height * 3
    failures: list[str] = []
    common = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-threads", str(threads)]
    out = ["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    if info.frame_times is None:  # nominal times: every step-th frame by number
        first, last = plan[0][1], plan[-1][1]
        step = plan[1][1] - plan[0][1] if len(plan) > 1 else 1
        expr = f"between(n\\,{first}\\,{last})*not(mod(n-{first}\\,{step}))"
        cmd = common + ["-v", "error", "-i", str(path), "-vf", f"select='{expr}'"] + out
        got = 0
        for (k, _, _), (buf, _) in zip(plan, _ffmpeg_frames(cmd, size, stop, failures)):
            yield k, np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
            got += 1
        if not got and failures:
            raise VideoError(f"ffmpeg could not decode it ({failures[0][:160]})", where=path)
        for _, _, t in plan[got:]:
            problems.failed(t)
        return
    for b in range(0, len(plan), FFMPEG_BATCH):
        batch = plan[b : b + FFMPEG_BATCH]
        absolute = [info.start_time + t for _, _, t in batch]
        by_us = {round(a * 1e6): k for a, (k, _, _) in zip(absolute, batch)}
        seek = max(0.0, batch[0][2] - 2.0)  # -ss counts from the container's start, at or before the video's
        chain = f"trim=end={absolute[-1] + 0.5:.6f},select='{_select_tree(absolute)}',settb=AVTB,showinfo"
        cmd = common + ["-v", "info", "-copyts", "-noaccurate_seek", "-ss", f"{seek:.6f}", "-i", str(path), "-vf",
                        chain] + out
        delivered = set()
        for buf, pts in _ffmpeg_frames(cmd, size, stop, failures):
            if pts is None:  # no timestamp printed (an ffmpeg that words showinfo otherwise): by order
                k = next((k for k, _, _ in batch if k not in delivered), None)
            else:
                k = by_us.get(pts)
                if k is None:
                    k = next((v for u, v in by_us.items() if abs(u - pts) <= 200), None)
            if k is None or k in delivered:
                continue
            delivered.add(k)
            yield k, np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
            if len(delivered) == len(batch):
                break
        if stop.is_set():
            return
        if failures and not os.access(path, os.R_OK):  # not damage: the file is gone or unreadable
            raise VideoError(f"ffmpeg could not decode it ({failures[-1][:160]})", where=path)
        for k, _, t in batch:
            if k not in delivered:
                problems.failed(t)


_DECODERS = {"pyav": _decode_pyav, "decord": _decode_decord, "ffmpeg": _decode_ffmpeg}


# ---------------------------------------------------------------------------------------------------------
# workers


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(info: VideoInfo, planned: int, cpus: int | None = None) -> int:
    """Workers ``sample_frames`` uses when not told: one per two cores for a video of at least two minutes
    with a packet index (so segments start at keyframes), at most 8 and at most one per 16 planned frames;
    otherwise one (which uses all cores through the decoder's own threads)."""
    cpus = available_cpus() if cpus is None else cpus
    if info.is_image or info.backend != "pyav" or _Index.of(info) is None or info.duration < MIN_PARALLEL_SECONDS:
        return 1
    return max(1, min(cpus // 2, 8, planned // 16))


def _segments(info: VideoInfo, todo: Plan, workers: int) -> list[Plan]:
    """Cut the plan into pieces that decode independently: at keyframes (a piece starts where no frame
    of the piece before it needs any packet after), about ``SEGMENT_BYTES`` of frames each, and at least
    ``4 * workers`` pieces when the video allows, so the work spreads evenly."""
    if workers <= 1 or len(todo) < 2:
        return [todo]
    frame_bytes = max(1, info.width * info.height * 3)
    target = max(1, min(SEGMENT_BYTES // frame_bytes, math.ceil(len(todo) / (4 * workers))))
    index = _Index.of(info)
    if index is not None:
        groups = index.group_of(index.order[np.asarray([i for _, i, _ in todo], dtype=np.int64)])
        first_group = groups.copy()  # the first group each frame needs (open groups pull in the one before)
        for j, g in enumerate(groups.tolist()):
            while g > 0 and index.open_gop[g]:
                g -= 1
            first_group[j] = g
    pieces: list[Plan] = []
    current: Plan = []
    for j, item in enumerate(todo):
        if current and len(current) >= target:
            clean = index is None or first_group[j] > groups[j - 1]
            if clean or len(current) >= 4 * target:
                pieces.append(current)
                current = []
        current.append(item)
    pieces.append(current)
    return pieces


_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _in_order(decode: Callable[[Plan, int, threading.Event], Iterator[tuple[int, np.ndarray]]], segments: list[Plan],
              workers: int, threads: int) -> Iterator[tuple[int, np.ndarray]]:
    """(position, frame) of every segment, in order, decoded by ``workers`` threads.

    A worker takes the next segment when at most ``workers`` others are decoded but not yet handed on
    (``workers + 1`` segments in memory at most). One worker streams its only segment through a short
    queue, so the caller's work on frames (resizing) overlaps the decoding.
    """
    stop = threading.Event()
    slots = threading.Semaphore(workers + 1)
    depth = [len(s) + 1 if workers > 1 else 4 for s in segments]
    queues = [queue.Queue(maxsize=d) for d in depth]
    counter = itertools.count()
    lock = threading.Lock()

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        while not stop.is_set():
            if not slots.acquire(timeout=0.1):
                continue
            with lock:
                i = next(counter)
            if i >= len(segments):
                slots.release()
                return
            frames = decode(segments[i], threads, stop)
            try:
                for item in frames:
                    if not put(queues[i], item):
                        return
                put(queues[i], _DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer in order
                put(queues[i], _Failed(exc))
            finally:
                frames.close()

    pool = [threading.Thread(target=work, daemon=True, name=f"llamavid-decode-{n}")
            for n in range(min(workers, len(segments)))]
    for t in pool:
        t.start()
    try:
        for q in queues:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
            slots.release()
    finally:
        stop.set()
        for t in pool:
            while t.is_alive():
                for q in queues:  # unblock a worker waiting on a full queue
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()
                t.join(timeout=0.05)


def sample_frames(path: str | os.PathLike, fps: float = 1.0, *, chunk_size: int = 32, start: int = 0,
                  stop: int | None = None, backend: str = "auto", on_warning: Warn | None = None,
                  info: VideoInfo | None = None, workers: int | None = None,
                  plan: Sequence[tuple[int, float]] | None = None) -> Iterator[FrameChunk]:
    """Sampled frames from ``start`` up to ``stop`` (positions in the sampled sequence; ``stop`` None: to
    the end), ``chunk_size`` at a time. ``plan``: the sampling plan already made (``sampling_plan(info,
    fps)``, e.g. by an encode job), used as it is.

    ``workers``: threads decoding segments of the video at once (None: ``auto_workers``); the frames and
    timestamps are the same for any number. Problems are reported through ``on_warning`` when the
    sampling ends, one line per kind.
    """
    path = Path(path)
    warn = on_warning or (lambda _msg: None)
    fps = check_fps(fps)
    for name, value, low in (("chunk size", chunk_size, 1), ("start", start, 0), ("stop", stop, 0)):
        if name == "stop" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} {value!r}: must be an integer of at least {low}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers {workers!r}: must be an integer of at least 1")
    info = info or probe(path, backend)
    if info.is_image:
        if start == 0:
            yield FrameChunk(_load_image(path), [0.0], [0])
        return
    plan = _plan(info, fps) if plan is None else plan
    problems = _Problems(path.name)
    todo: Plan = [(k, i, t) for k, (i, t) in enumerate(plan)][start:stop]
    if todo:
        n = auto_workers(info, len(todo)) if workers is None else workers
        if info.backend == "pyav" and _Index.of(info) is None or info.frame_times is None:
            n = 1  # segments could not start at keyframes, or ffmpeg numbers frames from its start
        segments = _segments(info, todo, n)
        n = min(n, len(segments))
        threads = 0 if n == 1 else max(1, available_cpus() // n)
        decoder = _DECODERS[info.backend]

        def decode(seg: Plan, th: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
            try:
                yield from decoder(path, info, seg, th, problems, stop)
            except LlamaVidError:
                raise
            except Exception as exc:  # a decoder library's own error: one line that names the file
                raise VideoError(f"{info.backend} could not decode it ({type(exc).__name__}: "
                                 f"{exception_text(exc, path)})", where=path) from exc

        frames = _in_order(decode, segments, n, threads)
        buf: list[np.ndarray] = []
        idx: list[int] = []
        try:
            for k, frame in frames:
                buf.append(frame[..., :3])
                idx.append(k)
                if len(buf) == chunk_size:
                    yield FrameChunk(np.stack(buf), [plan[i][1] for i in idx], idx)
                    buf, idx = [], []
            if buf:
                yield FrameChunk(np.stack(buf), [plan[i][1] for i in idx], idx)
        finally:
            frames.close()
    for line in problems.lines(info.gaps, fps, info.duration):
        warn(line)
