"""Times as users write and read them: seconds, ``MM:SS`` or ``HH:MM:SS`` (with optional fractions)."""

from __future__ import annotations

import math
import re

_CLOCK = re.compile(r"^\s*(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)\s*$")
_SECONDS = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def parse_time(value: str | int | float) -> float:
    """``90``, ``"90"``, ``"1:30"``, ``"00:01:30.5"`` -> seconds; ValueError (with the reason) otherwise.

    Minutes and seconds after a colon must be below 60; numbers must be finite and not negative.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or [HH:]MM:SS")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        if _SECONDS.match(value):
            seconds = float(value)
        else:
            m = _CLOCK.match(value)
            if not m:
                raise ValueError("must be a number of seconds or [HH:]MM:SS")
            hours, minutes, secs = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            if secs >= 60 or (m.group(1) is not None and minutes >= 60):
                raise ValueError("minutes and seconds must be below 60 in [HH:]MM:SS")
            seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError("must be a number of seconds or [HH:]MM:SS")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_clock(seconds: float, *, hours: bool | None = None, up: bool = False, nearest: bool = False) -> str:
    """``MM:SS`` (or ``H:MM:SS`` when ``hours``, by default when the time has hours); whole seconds,
    rounded down (``up``: rounded up, for the end of a range; ``nearest``: to the nearest second)."""
    if nearest:
        s = int(round(seconds))
    else:
        s = int(math.ceil(seconds - 1e-6)) if up else int(math.floor(seconds + 1e-6))
    s = max(0, s)
    if hours is None:
        hours = s >= 3600
    if hours:
        return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60:02d}:{s % 60:02d}"
