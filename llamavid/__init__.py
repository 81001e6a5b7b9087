"""llamavid: LLaMA-VID video question answering. Every frame is two LLM tokens.

The data path reads straight through the modules (docs/ARCHITECTURE.md):
video -> frames (video) -> vision features (vision, encode) -> .vidtok (vidtok) -> per-question tokens
(qformer, tokens) -> prompt (planning, prompt) -> answer (model, decoding, qa).

Names are imported lazily so that ``import llamavid`` (and ``llamavid --version``) does not pull in torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "model.loading", "load_vision_encoder": "model.loading",
    "LlamaVid": "model.modeling", "Answer": "model.generation", "Prompt": "model.modeling",
    "SamplingOptions": "model.generation", "AskOptions": "core.options", "Callbacks": "core.callbacks",
    "open_input": "pipeline.inputs", "VideoInput": "pipeline.inputs",
    "ask": "tasks.qa", "answer_features": "tasks.qa", "AskResult": "tasks.qa", "Question": "tasks.qa",
    "answer_questions": "tasks.qa",
    "ChatSession": "tasks.chat", "summarize": "tasks.summary",
    "make_chapters": "tasks.chapters", "Chapter": "tasks.chapters", "Chapters": "tasks.chapters",
    "find_evidence": "tasks.evidence", "EvidenceRange": "tasks.evidence", "ChoiceScore": "model.likelihood",
    "read_batch": "tasks.batch", "run_batch": "tasks.batch",
    "search": "tasks.search", "SearchOptions": "core.options", "SearchResult": "tasks.search", "Moment": "tasks.search",
    "LlamaVidError": "core.errors", "InputError": "core.errors", "CheckpointError": "core.errors",
    "ModelNotFoundError": "core.errors",
    "VideoError": "core.errors", "VidtokError": "core.errors", "ContextOverflowError": "core.errors",
    "MemoryLimitError": "core.errors",
}

__all__ = ["__version__", *_EXPORTS]

# Modules that moved into the layer packages (docs/ARCHITECTURE.md): the old names keep working, with a
# DeprecationWarning, and are the same module objects as the new ones (so patching either patches both).
_MOVED = {
    "errors": "core.errors", "callbacks": "core.callbacks", "choices": "core.choices", "timecode": "core.timecode",
    "fileio": "core.fileio", "locking": "core.locking", "options": "core.options",
    "video": "media.video", "subtitles": "media.subtitles",
    "config": "model.config", "qformer": "model.qformer", "tokens": "model.tokens", "vision": "model.vision",
    "prompt": "model.prompt", "decoding": "model.generation", "kvcache": "model.kvcache",
    "likelihood": "model.likelihood", "memory": "model.memory", "devices": "model.devices",
    "quantize": "model.quantize", "checkpoint": "model.checkpoint", "loading": "model.loading",
    "export": "model.export", "builtin": "model.builtin",
    "vidtok": "features.vidtok", "encode": "features.encode",
    "inputs": "pipeline.inputs", "planning": "pipeline.planning",
    "qa": "tasks.qa", "chat": "tasks.chat", "summary": "tasks.summary", "chapters": "tasks.chapters",
    "evidence": "tasks.evidence", "batch": "tasks.batch",
    "service": "server.service", "chat_request": "server.protocol", "media_access": "server.media_access",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import llamavid.qa`` -> the module ``llamavid.tasks.qa``, with a DeprecationWarning."""

    _specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, rest = fullname.partition(".")
        if package != __name__ or rest not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} is deprecated: it moved to {new}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._specs[module.__name__]  # the real module keeps its own spec


sys.meta_path.append(_MovedModules())


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
