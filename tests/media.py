"""Test media made on the spot with numpy and ffmpeg: no binary fixtures in the repository.

Each frame of a generated video carries its own frame number in 12 black/white columns (bit 11 on the
left), big enough to survive lossy compression, so a test can tell which source frame a decoder gave.
Videos of more than 4096 frames use more columns (``bits``; 13 hold 8192 frames, minutes at 24 fps).
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 96, 64
BITS = 12


def frame_image(index: int, width: int = WIDTH, height: int = HEIGHT, bits: int = BITS) -> np.ndarray:
    """An RGB frame (H, W, 3) uint8 whose top half encodes ``index`` in ``bits`` binary columns."""
    if not 0 <= index < 1 << bits:
        raise ValueError(f"frame {index} does not fit in {bits} bits")
    img = np.full((height, width, 3), 64, dtype=np.uint8)
    col = width // bits
    for bit in range(bits):
        if (index >> (bits - 1 - bit)) & 1:
            img[: height // 2, bit * col : (bit + 1) * col] = 255
        else:
            img[: height // 2, bit * col : (bit + 1) * col] = 0
    img[height // 2 :, :, 0] = (index * 37) % 256  # a colour that changes, for "different frames differ"
    return img


def read_index(frame: np.ndarray, bits: int = BITS) -> int:
    """The frame number a ``frame_image`` carries (frame given as decoded, (H, W, 3))."""
    height, width = frame.shape[:2]
    col = width // bits
    top = frame[: height // 2].astype(np.float32).mean(axis=2)
    value = 0
    for bit in range(bits):
        block = top[:, bit * col + 1 : (bit + 1) * col - 1]
        value = (value << 1) | int(block.mean() > 128)
    return value


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
        input=stdin,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace')}")


def make_video(
    path: str | Path,
    *,
    seconds: float = 3.0,
    fps: float | str = 10,
    width: int = WIDTH,
    height: int = HEIGHT,
    codec: str = "libx264",
    gop: int | None = None,
    extra_args: list[str] | None = None,
    bits: int = BITS,
    bframes: int = 0,
) -> Path:
    """A constant-frame-rate video whose frame i shows ``frame_image(i)``.

    ``fps`` may be a string fraction such as "30000/1001" (29.97). ``bframes``: H.264 B-frames between
    reference frames (with a B-pyramid, so some frames are non-reference ones). Returns the path.
    """
    path = Path(path)
    rate = Fraction(str(fps))
    n = int(round(seconds * rate))
    data = b"".join(frame_image(i, width, height, bits).tobytes() for i in range(n))
    args = [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate), "-i", "-",
        "-c:v", codec, "-pix_fmt", "yuv420p",
    ]
    if codec == "libx264":
        args += ["-preset", "ultrafast", "-crf", "18", "-g", str(gop or max(1, int(rate)))]
        if bframes:
            args += ["-bf", str(bframes), "-x264-params", "b-pyramid=normal"]
    args += list(extra_args or []) + [str(path)]
    _ffmpeg(args, stdin=data)
    return path


def make_vfr_video(path: str | Path, times: list[float], *, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A variable-frame-rate video (MKV or MP4, from the suffix): frame i shows ``frame_image(i)`` at ``times[i]`` s.

    Written with PyAV, setting each frame's pts in a 1/1000 s time base, because ffmpeg's concat demuxer
    rounds still-image durations to its 1/25 s default rate and repeats the last image. ``times`` must
    increase and are kept to the millisecond (check with ``ffprobe -show_entries frame=pts_time``).
    """
    import av

    path = Path(path)
    millis = [round(t * 1000) for t in times]
    if any(b <= a for a, b in zip(millis, millis[1:])):
        raise ValueError("times must increase by at least a millisecond")
    base = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1000, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = base
        stream.codec_context.time_base = base
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for i, pts in enumerate(millis):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts, frame.time_base = pts, base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_video_with_bad_frames(path: str | Path, bad: set[int], *, seconds: float = 30.0, fps: int = 10,
                               width: int = WIDTH, height: int = HEIGHT) -> Path:
    """An MJPEG video (MKV) whose frame i shows ``frame_image(i)``, except that the frames in ``bad`` are
    random bytes: every packet is there with its timestamp (no gap for a prober to see), and exactly
    those frames fail to decode (each MJPEG frame stands alone)."""
    import av

    path = Path(path)
    rng = np.random.default_rng(0)
    base = Fraction(1, fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, base
            for packet in stream.encode(frame):
                if i in bad:
                    junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                    junk.stream, junk.pts, junk.dts, junk.time_base = stream, packet.pts, packet.dts, packet.time_base
                    packet = junk
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_rotated_video(path: str | Path, rotation: int, *, seconds: float = 1.0, fps: float | str = 10,
                       width: int = WIDTH, height: int = HEIGHT) -> Path:
    """An MP4 whose pictures are STORED turned and whose display matrix turns them back: a player (and
    ffmpeg's autorotate) shows ``frame_image(i)`` upright, ``width`` x ``height``.

    ``rotation`` is the display matrix angle as ffprobe reports it (counter-clockwise degrees, 90 or
    270); the stored picture is the upright one turned the other way. ffmpeg 5.1 writes a
    ``rotate=R`` stream tag as a display matrix of R degrees counter-clockwise.
    """
    path = Path(path)
    if rotation not in (90, 270):
        raise ValueError("rotation must be 90 or 270")
    plain = path.with_name(path.stem + "_upright.mp4")
    stored = path.with_name(path.stem + "_stored.mp4")
    make_video(plain, seconds=seconds, fps=fps, width=width, height=height)
    turn = "transpose=1" if rotation == 90 else "transpose=2"  # 1: clockwise, 2: counter-clockwise
    _ffmpeg(["-i", str(plain), "-vf", turn, "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18",
             "-pix_fmt", "yuv420p", str(stored)])
    _ffmpeg(["-i", str(stored), "-c", "copy", "-metadata:s:v:0", f"rotate={rotation}", str(path)])
    return path


def _write_png(path: Path, img: np.ndarray) -> None:
    height, width = img.shape[:2]
    _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-", str(path)],
            stdin=img.tobytes())


def make_image(path: str | Path, index: int = 5, *, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A still image (format from the suffix: .png, .jpg, .webp) showing ``frame_image(index)``."""
    path = Path(path)
    _write_png(path, frame_image(index, width, height)) if path.suffix == ".png" else _ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-", str(path)],
        stdin=frame_image(index, width, height).tobytes(),
    )
    return path


def write_srt(path: str | Path, lines: list[tuple[float, float, str]], encoding: str = "utf-8") -> Path:
    """A .srt file with the given (start s, end s, text) lines, in the order given."""

    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    path = Path(path)
    body = "".join(f"{i + 1}\n{stamp(s)} --> {stamp(e)}\n{text}\n\n" for i, (s, e, text) in enumerate(lines))
    path.write_bytes(body.encode(encoding))
    return path
