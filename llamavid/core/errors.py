"""Error types for user mistakes and bad inputs: one line each, carrying data that each front end words.

Every error a user can cause by what they pass in (a missing file, a broken video, a checkpoint in the
wrong layout, a prompt too long for the model) is a ``LlamaVidError``. It holds

* ``where``: what the error is about (a file, a line of a batch file, a request field), or None;
* the problem, in ``parts``: text, and ``Opt`` references to options (``Opt("max_frames", 12)``);
* typed data where a caller can act on it (``ContextOverflowError.frames_fit``, ``OptionError.field``...).

``str(error)`` is the library's wording (options as Python keywords: ``max_frames=12``); a front end
calls ``error.render(style)`` with its own ``Style``: the CLI says ``--max-frames 12``, the HTTP server
``"max_frames": 12``, and the server names a file as the client did. Nothing is ever reworded by string
replacement. Anything else that escapes is a bug in llamavid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

SHOWN_CHARS = 80  # a value longer than this is cut in messages (a 200-option list is not a 10 KB line)


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _Missing()


@dataclass(frozen=True)
class Opt:
    """An option named in an error message, with the value the message suggests or refuses (if any)."""

    name: str  # the option's field name: AskOptions / EncodeOptions fields, load_model keywords
    value: Any = NO_VALUE

    @property
    def has_value(self) -> bool:
        return self.value is not NO_VALUE


def shown(value: Any, *, as_json: bool = False) -> str:
    """A value as a message shows it: repr (or JSON), cut to ``SHOWN_CHARS`` characters."""
    if as_json:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = json.dumps(str(value), ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


class Style:
    """How a front end words options and subjects. This base is the library's (Python keywords)."""

    def option(self, opt: Opt) -> str:
        return f"{opt.name}={shown(opt.value)}" if opt.has_value else opt.name

    def subject(self, opt: Opt) -> str:
        """An option as the subject of a problem ("max_frames=0: must be at least 1")."""
        return self.option(opt) + ":"

    def where(self, where: str) -> str:
        return where

    def finish(self, text: str) -> str:
        """The whole message, once worded, before it is made one line (a front end may take things out of it:
        the server's paths)."""
        return text


class JsonStyle(Style):
    """Options as the JSON fields of a batch line or a request body: ``"max_frames": 12``."""

    names: dict[str, str] = {}  # option name -> field name where they differ

    def option(self, opt: Opt) -> str:
        name = json.dumps(self.names.get(opt.name, opt.name))
        return f"{name}: {shown(opt.value, as_json=True)}" if opt.has_value else name

    def subject(self, opt: Opt) -> str:
        return self.option(opt)


PYTHON = Style()
JSON = JsonStyle()


def exception_text(exc: BaseException | str, *paths: str | os.PathLike, limit: int = 160) -> str:
    """A library's exception as the one-line reason inside a llamavid message: each of ``paths`` it mentions
    is replaced by the file's name (the error's ``where`` names the file; the text never holds a folder),
    then the text is cut to ``limit`` characters (after the replacement, so a cut never leaves half a path)."""
    text = " ".join(str(exc).split())
    for path in sorted({os.fspath(p) for p in paths}, key=len, reverse=True):
        if path and path not in (".", "/"):
            text = text.replace(path, os.path.basename(path.rstrip("/")) or path)
    return text if len(text) <= limit else text[:limit - 1] + "…"

def _finish(style, text: str) -> str:
    finish = getattr(style, "finish", None)  # (a front end's style may be any object with option/subject/where)
    return text if finish is None else finish(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class LlamaVidError(Exception):
    """Base class: a problem with what the user passed in, explained in one line."""

    exit_code = 1

    def __init__(self, *parts: str | Opt, where: str | os.PathLike | None = None):
        # Multi-line text from libraries is folded when rendered: messages are one line.
        self.parts: tuple[str | Opt, ...] = parts
        self.where: str | None = None if where is None else os.fspath(where)
        super().__init__(self.render())

    def render(self, style: Style = PYTHON) -> str:
        text = "".join(p if isinstance(p, str) else style.option(p) for p in self.parts)
        return _one_line(_finish(style, f"{style.where(self.where)}: {text}" if self.where is not None else text))

    def __reduce__(self) -> tuple:
        # keep the parts and data across pickling (multiprocessing), whatever the subclass's signature
        return _restore, (type(self), self.args, self.__dict__.copy())

    @property
    def suggestions(self) -> dict[str, Any]:
        """The option values the message suggests or refuses, by option name (for JSON error bodies)."""
        return {p.name: p.value for p in self.parts if isinstance(p, Opt) and p.has_value}


def _restore(cls: type, args: tuple, state: dict) -> LlamaVidError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InputError(LlamaVidError):
    """A missing, unreadable or malformed input file or argument."""


class OptionError(InputError):
    """An option with a value of the wrong type or out of range (``field`` names it, as a Python keyword)."""

    def __init__(self, field: str = "", value: Any = NO_VALUE, reason: str = "", *, where: str | None = None):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(Opt(field, value), " ", reason, where=where)

    def render(self, style: Style = PYTHON) -> str:
        text = f"{style.subject(Opt(self.field, self.value))} {self.reason}"
        return _one_line(_finish(style, f"{style.where(self.where)}: {text}" if self.where is not None else text))


class CheckpointError(LlamaVidError):
    """A model checkpoint that is missing, incomplete, or not in a layout we can load."""


class ModelNotFoundError(CheckpointError):
    """A model name that is neither a local directory nor reachable on the Hugging Face hub."""


class VideoError(LlamaVidError):
    """A video or image that cannot be decoded, or that holds no frames."""


class VidtokError(LlamaVidError):
    """A .vidtok token file that is truncated, tampered with, or made by another vision encoder."""


class ContextOverflowError(LlamaVidError):
    """A prompt that needs more tokens than the model's context window holds.

    ``needed``: the prompt's tokens (visual tokens included) plus the room kept for the answer;
    ``context``: the model's context; ``frames_fit``: how many frames would fit (0: not even one; None:
    frames are not the problem, e.g. a text-only prompt)."""

    def __init__(self, *parts: str | Opt, where: str | os.PathLike | None = None, needed: int | None = None,
                 context: int | None = None, frames_fit: int | None = None):
        self.needed, self.context, self.frames_fit = needed, context, frames_fit
        super().__init__(*parts, where=where)


class MemoryLimitError(LlamaVidError):
    """Weights or a prompt's KV cache that would not fit the memory available: refused before any work.

    ``needed`` and ``available`` in bytes; for a KV cache, ``fit_tokens``: the longest prompt that fits."""

    def __init__(self, *parts: str | Opt, where: str | os.PathLike | None = None, needed: float | None = None,
                 available: float | None = None, fit_tokens: int | None = None):
        self.needed, self.available, self.fit_tokens = needed, available, fit_tokens
        super().__init__(*parts, where=where)


class RequestError(InputError):
    """A request to ``llamavid serve`` that is refused: the HTTP ``status`` (a 4xx), the request field at
    fault (``param``, e.g. ``"messages[0].content[1].video_url.url"``) and a short machine-readable ``code``."""

    def __init__(self, *parts: str | Opt, status: int = 400, param: str | None = None, code: str | None = None,
                 where: str | None = None):
        self.status, self.param, self.code = status, param, code
        super().__init__(*parts, where=where)

