"""Subtitles: .srt files (any common encoding), sidecar discovery, embedded streams, and which frame a
line belongs to.

Rule for attaching a line to frames (the published one, stated per line): a subtitle line goes with the
LAST sampled frame whose time is strictly before the line's END time; with frame 0 when no frame is.
The published code walked one pointer forward over the lines in file order, which puts an out-of-order
line on the wrong frame and sends a line that ends at or before the first frame to the LAST frame; the
per-line rule gives the intended answer in both cases. Lines on one frame are joined by a space in
order of start time.

Malformed input is tolerated cue by cue: a cue whose timing line does not parse (or that ends before
it starts, or has no text) is skipped and reported through ``on_warning`` with the count, so one bad
cue does not cost a movie its subtitles; a file in which NO cue can be read is an ``InputError``
(it is most likely not an .srt file at all).
"""

from __future__ import annotations

import bisect
import html
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..core.errors import InputError, exception_text

_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_BLOCK = re.compile(r"\n[ \t]*\n")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class SubtitleLine:
    start: float  # seconds
    end: float
    text: str  # one line: tags removed, whitespace collapsed


def clean_text(text: str) -> str:
    """Drop HTML/ASS styling tags, unescape entities, fold newlines and runs of spaces into one space."""
    return " ".join(html.unescape(_TAG.sub("", text)).split())


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def parse_srt(text: str, source: str = "subtitles", on_warning: Warn | None = None) -> list[SubtitleLine]:
    """Cues from SRT text, sorted by (start, end); blank or malformed cues are skipped (and counted in
    a warning: the number of non-empty blocks minus the cues kept)."""
    import pysrt

    try:
        items = pysrt.from_string(text, error_handling=pysrt.ERROR_PASS)
    except Exception as exc:  # pysrt raises a few types on garbage
        raise InputError(f"not a subtitle file we can read ({exception_text(exc)})", where=source) from None
    lines = []
    for item in items:
        start, end = item.start.ordinal / 1000.0, item.end.ordinal / 1000.0
        body = clean_text(item.text)
        if body and end > start >= 0:
            lines.append(SubtitleLine(start, end, body))
    blocks = [b for b in _BLOCK.split(text.replace("\r\n", "\n").replace("\r", "\n").strip()) if b.strip()]
    if on_warning is not None and lines and len(blocks) > len(lines):
        on_warning(f"{source}: skipped {len(blocks) - len(lines)} malformed or empty subtitle cue(s)")
    return sorted(lines, key=lambda line: (line.start, line.end))


def load_srt(path: str | os.PathLike, on_warning: Warn | None = None) -> list[SubtitleLine]:
    """An .srt file in UTF-8 (with or without BOM), UTF-16 (with BOM) or cp1252/latin-1."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", where=path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", where=path) from None
    text = _decode(data)
    lines = parse_srt(text, source=str(path), on_warning=on_warning)
    if not lines and text.strip():
        raise InputError("no subtitle cue could be read (is it an .srt file?)", where=path)
    if not lines and on_warning is not None:
        on_warning(f"{path}: is empty: the video is answered without subtitles")
    return lines


def find_sidecar(video_path: str | os.PathLike) -> Path | None:
    """NAME.srt beside the video; else NAME.<lang>.srt (the first in name order)."""
    video = Path(video_path)
    folder = video.parent if str(video.parent) else Path(".")
    try:
        names = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".srt")
    except OSError:
        return None
    exact = [p for p in names if p.stem == video.stem]
    if exact:
        return exact[0]
    tagged = [p for p in names if p.stem.startswith(video.stem + ".") and "." not in p.stem[len(video.stem) + 1:]]
    return tagged[0] if tagged else None


def extract_embedded(video_path: str | os.PathLike) -> list[SubtitleLine]:
    """The first text subtitle stream inside the container, through ffmpeg; [] when there is none."""
    if shutil.which("ffmpeg") is None:
        return []
    with tempfile.TemporaryDirectory(prefix="llamavid-subs-") as tmp:
        out = Path(tmp) / "embedded.srt"
        proc = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video_path), "-map", "0:s:0", "-f", "srt",
                               str(out)], capture_output=True)
        if proc.returncode != 0 or not out.is_file():
            return []
        return parse_srt(_decode(out.read_bytes()), source=f"{video_path} (embedded subtitles)")


EMBEDDED = "embedded stream 0:s:0"  # where subtitles read from the video's own stream came from
SPEECH = "speech"  # where a transcript of the video's speech came from (llamavid.media.asr)


def resolve(video_path: str | os.PathLike | None, explicit: str | os.PathLike | None = None, *,
            stored: tuple[Sequence[SubtitleLine], str | None] | None = None,
            transcript: Sequence[SubtitleLine] | None = None, speech: bool = False,
            on_warning: Warn | None = None) -> tuple[list[SubtitleLine], str | None]:
    """The subtitles that apply to a video now, and where they came from (None: there are none).

    The one rule, first match wins:

    1. ``explicit``: a file the user named; or ``"none"`` (no subtitles at all) or ``"speech"`` (the
       transcript of the speech, whatever else the video has);
    2. a sidecar ``NAME.srt`` beside the video as it is now;
    3. the stream embedded in the video, as ``stored`` in its features at encode time ((lines, origin)) or
       read from the video; stored lines that came from a file which is no longer beside the video do not
       apply;
    4. with ``speech``, the transcript: the author's subtitles (1-3) are better text than a transcript, so
       speech fills in for a video that has none of its own (``"speech"`` forces it).

    Steps 1-3 are ``own_subtitles`` and step 4 is ``choose``, for a caller that stores the one and applies
    the other later (an encode stores the author's subtitles and the transcript apart). ``transcript``
    None with the speech chosen: the transcript is still to be made (the origin is ``SPEECH``, the lines are
    empty until it is). ``video_path`` None: a ``.vidtok`` on its own, whose stored lines apply as they are.
    """
    own = own_subtitles(video_path, None if explicit == SPEECH else explicit, stored=stored, on_warning=on_warning)
    return choose(own, transcript, forced=explicit == SPEECH, speech=speech)


def own_subtitles(video_path: str | os.PathLike | None, explicit: str | os.PathLike | None = None, *,
                  stored: tuple[Sequence[SubtitleLine], str | None] | None = None,
                  on_warning: Warn | None = None) -> tuple[list[SubtitleLine], str | None]:
    """Steps 1-3 of ``resolve``: the author's subtitles (``explicit``: a file, or ``"none"``)."""
    if explicit == "none":
        return [], None
    if explicit is not None:
        return load_srt(explicit, on_warning), Path(explicit).name
    if video_path is not None:
        sidecar = find_sidecar(video_path)
        if sidecar is not None:
            return load_srt(sidecar, on_warning), sidecar.name
    if stored is not None:
        lines, origin = stored
        if video_path is not None and str(origin or "").lower().endswith(".srt"):
            return [], None  # came from a file that is no longer beside the video
        return list(lines), origin if lines else None
    if video_path is None:
        return [], None
    embedded = extract_embedded(video_path)
    return (embedded, EMBEDDED) if embedded else ([], None)


def choose(own: tuple[list[SubtitleLine], str | None], transcript: Sequence[SubtitleLine] | None, *,
           forced: bool = False, speech: bool = False) -> tuple[list[SubtitleLine], str | None]:
    """Step 4 of ``resolve``: the transcript where it is forced, or asked for and the author gave none."""
    if forced or (speech and not own[0]):
        return list(transcript or []), SPEECH
    return own


def attach_to_frames(lines: Sequence[SubtitleLine], frame_times: Sequence[float]) -> list[str]:
    """Per-frame subtitle text by the published rule (see the module docstring)."""
    texts: list[list[tuple[float, str]]] = [[] for _ in frame_times]
    if not texts:
        return []
    times = list(frame_times)
    for line in lines:
        k = bisect.bisect_left(times, line.end) - 1  # last frame strictly before the end time
        texts[max(k, 0)].append((line.start, line.text))
    return [" ".join(text for _, text in sorted(group, key=lambda x: x[0])) for group in texts]
