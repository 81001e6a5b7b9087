"""Error types for user mistakes and bad inputs.

Every error a user can cause by what they pass in (a missing file, a broken video, a checkpoint in the
wrong layout, a prompt too long for the model) is a ``LlamaVidError``. Its message is ONE line that names
the file or value and the problem, so that the CLI can print it as is and exit non-zero without a
traceback. Anything else that escapes is a bug in llamavid.
"""

from __future__ import annotations


class LlamaVidError(Exception):
    """Base class: a problem with what the user passed in, explained in one line."""

    exit_code = 1

    def __init__(self, message: str):
        # Keep messages to one line: multi-line text from libraries is folded.
        super().__init__(" ".join(str(message).split()))


class InputError(LlamaVidError):
    """A missing, unreadable or malformed input file or argument."""


class CheckpointError(LlamaVidError):
    """A model checkpoint that is missing, incomplete, or not in a layout we can load."""


class ModelNotFoundError(CheckpointError):
    """A model name that is neither a local directory nor reachable on the Hugging Face hub."""


class VideoError(LlamaVidError):
    """A video or image that cannot be decoded, or that holds no frames."""


class VidtokError(LlamaVidError):
    """A .vidtok token file that is truncated, tampered with, or made by another vision encoder."""


class ContextOverflowError(LlamaVidError):
    """A prompt that needs more tokens than the model's context window holds."""


class RequestError(InputError):
    """A request to ``llamavid serve`` that is refused: the HTTP ``status`` (a 4xx), the request field at
    fault (``param``, e.g. ``"messages[0].content[1].video_url.url"``) and a short machine-readable ``code``."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class MemoryLimitError(LlamaVidError):
    """Weights or a prompt's KV cache that would not fit the memory available: refused before any work."""
