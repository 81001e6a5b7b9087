"""The model layer: the LLaMA-VID network (``modeling``), its parts, generation, and loading checkpoints.

``LlamaVid``, ``Answer`` and ``Prompt`` are importable from here (``from llamavid.model import LlamaVid``),
lazily, so that the package's small modules (``choices`` of dtypes, ``memory``) do not pull in the network.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"LlamaVid": "modeling", "Prompt": "modeling", "WeightsInfo": "modeling", "init_weights_": "modeling",
            "new_llm": "modeling", "finish_llm": "modeling", "build_modules": "modeling", "Answer": "generation"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
