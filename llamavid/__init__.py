"""llamavid: LLaMA-VID video question answering. Every frame is two LLM tokens.

The data path reads straight through the modules:
video -> frames (video) -> vision features (vision) -> .vidtok (vidtok) -> per-frame tokens (qformer,
tokens) -> prompt (prompt) -> answer (model, decoding).

Names are imported lazily so that ``import llamavid`` (and ``llamavid --version``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "model", "load_vision_encoder": "model", "LlamaVid": "model", "Answer": "model",
    "SamplingOptions": "decoding",
    "ask": "qa", "ChatSession": "qa", "summarize": "qa", "open_video_input": "qa",
    "LlamaVidError": "errors", "InputError": "errors", "CheckpointError": "errors", "ModelNotFoundError": "errors",
    "VideoError": "errors", "VidtokError": "errors", "ContextOverflowError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamavid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
