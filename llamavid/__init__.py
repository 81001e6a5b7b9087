"""llamavid: LLaMA-VID video question answering. Every frame is two LLM tokens.

The data path reads straight through the modules:
video -> frames (video) -> vision features (vision) -> .vidtok (vidtok) -> per-frame tokens (qformer,
tokens) -> prompt (prompt) -> answer (model, decoding).
"""

__version__ = "0.1.0"

from .decoding import SamplingOptions
from .errors import (
    CheckpointError, ContextOverflowError, InputError, LlamaVidError, ModelNotFoundError, VideoError, VidtokError,
)
from .model import Answer, LlamaVid, load_model

__all__ = [
    "__version__", "load_model", "LlamaVid", "Answer", "SamplingOptions",
    "LlamaVidError", "InputError", "CheckpointError", "ModelNotFoundError", "VideoError", "VidtokError",
    "ContextOverflowError",
]
