"""Built-in model names (such as the shipped demo model) and the default model.

A name listed here resolves to a checkpoint directory inside the installed package, so it works
offline. Everything else is a local directory or a Hugging Face id.
"""

from __future__ import annotations

import os
from pathlib import Path

# The released short-video model: the default when neither --model nor LLAMAVID_MODEL is given.
DEFAULT_MODEL = "YanweiLi/llama-vid-7b-full-224-video-fps-1"

_ASSETS = Path(__file__).parent.parent / "assets"
BUILTIN_MODELS: dict[str, Path] = {
    # A small LLaMA-VID trained from scratch on the synthetic shapes set (llamavid.train.demo): it answers
    # colour / shape / count / order questions about such videos, offline, on any CPU.
    "demo": _ASSETS / "demo",
}


def resolve_builtin(name: str | os.PathLike) -> Path | None:
    """The packaged checkpoint directory for a built-in model name, else None."""
    path = BUILTIN_MODELS.get(os.fspath(name))
    return path if path is not None and path.is_dir() else None


def default_model_name() -> str:
    """--model is not given: $LLAMAVID_MODEL, else the built-in default."""
    return os.environ.get("LLAMAVID_MODEL") or DEFAULT_MODEL
