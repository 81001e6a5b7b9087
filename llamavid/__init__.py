"""llamavid: LLaMA-VID video question answering. Every frame is two LLM tokens.

The data path reads straight through the modules:
video -> frames (video) -> vision features (vision) -> .vidtok (vidtok) -> per-frame tokens (tokens,
qformer) -> prompt (prompt) -> answer (model, decoding).
"""

__version__ = "0.1.0"
