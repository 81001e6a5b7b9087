"""Writing subtitle lines as an .srt file, in exactly the form openai-whisper's command line writes.

The format (whisper's ``WriteSRT``): cues numbered from 1; each cue is its number, a timing line
``HH:MM:SS,mmm --> HH:MM:SS,mmm`` (hours always shown, two digits or more; a comma before the
milliseconds; times rounded to the nearest millisecond as Python's ``round`` does), the text with its
ends stripped and any ``-->`` in it written as ``->`` (so that no text line can pass for a timing line),
and a blank line, including after the last cue. The file is UTF-8 without a byte-order mark.

Two things whisper never meets are settled here: a line whose text is empty (or only spaces) is left
out, because a cue without text is not a cue (``parse_srt`` would skip it and the numbers would no
longer match); and line breaks inside a text are folded into spaces, because a blank line would cut the
cue in two. ``parse_srt(format_srt(lines))`` gives ``lines`` back for any lines in their cleaned form
(``clean_text(text) == text``, no ``-->``) and timed to the millisecond.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

from ..core.errors import InputError, Opt
from ..core.fileio import write_text_atomic
from .subtitles import SubtitleLine


def format_timestamp(seconds: float) -> str:
    """``HH:MM:SS,mmm`` with the hours always shown (``00:01:02,500``; ``100:00:00,000`` past 99 hours)."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)) or seconds < 0:
        raise InputError(f"subtitle time {seconds!r}: expected a finite number of seconds >= 0")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def cue_text(text: str) -> str:
    """The text as a cue holds it: ends stripped, ``-->`` written ``->``, line breaks folded to spaces."""
    text = text.strip().replace("-->", "->")
    if "\n" in text or "\r" in text:
        text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text


def format_srt(lines: Iterable[SubtitleLine]) -> str:
    """The .srt text of ``lines``, in the order given (numbered from 1, empty texts left out)."""
    cues = []
    for line in lines:
        text = cue_text(line.text)
        if not text:
            continue
        start, end = format_timestamp(line.start), format_timestamp(line.end)
        cues.append(f"{len(cues) + 1}\n{start} --> {end}\n{text}\n\n")
    return "".join(cues)


def srt_path_for(video: str | os.PathLike) -> Path:
    """Where a video's transcript goes as a sidecar: ``NAME.srt`` beside it (where subtitles are looked for)."""
    return Path(video).with_suffix(".srt")


def check_srt_target(path: str | os.PathLike, *, force: bool = False) -> None:
    """An .srt may be written at ``path``: not a folder, and not an existing file unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory; give a file name for the subtitles", where=path)
    if (path.exists() or path.is_symlink()) and not force:
        raise InputError("already exists; not overwritten (", Opt("force"), " replaces it)", where=path)


def write_srt(path: str | os.PathLike, lines: Iterable[SubtitleLine], *, force: bool = False) -> Path:
    """Write ``lines`` to ``path`` as .srt (UTF-8), whole or not at all; an existing file is replaced only
    with ``force``. Returns the path."""
    path = Path(path)
    check_srt_target(path, force=force)
    text = format_srt(lines)  # before touching the disk: a bad time leaves no file behind
    write_text_atomic(path, text)
    return path
