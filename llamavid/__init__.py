"""llamavid: LLaMA-VID video question answering. Every frame is two LLM tokens.

The data path reads straight through the modules (docs/ARCHITECTURE.md):
video -> frames (video) -> vision features (vision, encode) -> .vidtok (vidtok) -> per-question tokens
(qformer, tokens) -> prompt (planning, prompt) -> answer (model, decoding, qa).

Names are imported lazily so that ``import llamavid`` (and ``llamavid --version``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "loading", "load_vision_encoder": "loading",
    "LlamaVid": "model", "Answer": "model", "Prompt": "model",
    "SamplingOptions": "decoding", "AskOptions": "options", "Callbacks": "callbacks",
    "open_input": "inputs", "VideoInput": "inputs",
    "ask": "qa", "AskResult": "qa", "Question": "qa", "answer_questions": "qa",
    "ChatSession": "chat", "summarize": "summary",
    "make_chapters": "chapters", "Chapter": "chapters", "Chapters": "chapters",
    "find_evidence": "evidence", "EvidenceRange": "evidence", "ChoiceScore": "likelihood",
    "read_batch": "batch", "run_batch": "batch",
    "LlamaVidError": "errors", "InputError": "errors", "CheckpointError": "errors", "ModelNotFoundError": "errors",
    "VideoError": "errors", "VidtokError": "errors", "ContextOverflowError": "errors", "MemoryLimitError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def _quiet_import_chatter() -> None:
    """torchao (imported by transformers whenever it is installed) logs a warning for each CUDA kernel library a
    CPU build cannot load, and torch's pytree one per enum it registers: noise on every start, not news."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_import_chatter()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamavid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
