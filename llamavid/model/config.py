"""Plain-dataclass configuration of a LLaMA-VID model.

``config.json`` of a released checkpoint says ``model_type: "llava"``, which clashes with transformers' own
LLaVA, so it is read here as plain JSON, never through AutoConfig. The sizes of the vision encoder and of
the QFormer are not in config.json at all: they are read from the weight tensors (``VisionConfig`` and
``QFormerConfig`` in vision.py / qformer.py), so that the real files and tiny test files take one path.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import CheckpointError

# Keys without which a config.json is not a LLaMA-VID config.
REQUIRED_LLAMAVID_KEYS = ("mm_vision_tower", "mm_hidden_size", "bert_type")
REQUIRED_LLAMA_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

# LlamaConfig fields copied from config.json when present.
LLAMA_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "rms_norm_eps", "vocab_size", "rope_theta", "rope_scaling",
    "rope_parameters", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
    "attention_bias", "mlp_bias", "head_dim", "pretraining_tp", "initializer_range",
)

_GRID = re.compile(r"grid:(\d+)")


@dataclass
class LlamaVidConfig:
    """What config.json says about a LLaMA-VID checkpoint (plus our optional extensions).

    Our own checkpoints (e.g. the demo model) may add ``image_size`` and ``conv_mode`` and
    ``long_video``; released checkpoints never have them and get the published defaults.
    """

    llm: dict[str, Any]
    mm_hidden_size: int = 1408
    mm_projector_type: str = "mlp2x_gelu"
    mm_vision_tower: str | None = None
    image_processor: str | None = None
    mm_vision_select_feature: str = "patch"
    mm_use_im_start_end: bool = False
    bert_type: str = "qformer_pretrain"
    num_query: int = 32
    compress_type: str | None = "mean"
    image_aspect_ratio: str = "pad"
    max_token: int | None = None
    image_size: int = 224
    conv_mode: str = "vicuna_v1"
    long_video: bool = False
    token_types: str = "both"  # "both" (published), or "context" / "content" only (the paper's ablation)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "LlamaVidConfig":
        missing = [k for k in REQUIRED_LLAMAVID_KEYS if k not in raw]
        if missing:
            raise CheckpointError(
                f"{source}: not a LLaMA-VID config (missing {', '.join(missing)}); "
                "expected a checkpoint such as YanweiLi/llama-vid-7b-full-224-video-fps-1"
            )
        missing = [k for k in REQUIRED_LLAMA_KEYS if k not in raw]
        if missing:
            raise CheckpointError(f"LLaMA fields missing ({', '.join(missing)})", where=source)
        if raw.get("mm_use_im_start_end"):
            raise CheckpointError("mm_use_im_start_end=true is not supported (no released LLaMA-VID model uses it)",
                                  where=source)
        if "raw" in str(raw.get("bert_type", "")) or "qformer" not in str(raw.get("bert_type", "")):
            raise CheckpointError(f"bert_type {raw.get('bert_type')!r} is not supported (expected a "
                                  "qformer_pretrain variant)", where=source)
        compress = raw.get("compress_type", None)
        if compress is not None and "mean" not in compress and not _GRID.search(compress):
            raise CheckpointError(f"unknown compress_type {compress!r} (expected 'mean', 'mean_concat', "
                                  "'grid:N' or null)", where=source)
        llm = {k: raw[k] for k in LLAMA_FIELDS if k in raw}
        image_processor = raw.get("image_processor")
        image_size = int(raw.get("image_size") or (336 if image_processor and "336" in str(image_processor) else 224))
        max_token = raw.get("max_token")
        token_types = str(raw.get("token_types", "both"))
        if token_types not in ("both", "context", "content"):
            raise CheckpointError(f"token_types {token_types!r} is not one of both, context, content", where=source)
        long_video = bool(raw.get("long_video", compress == "mean_concat" or (max_token or 0) > 8192))
        return cls(
            llm=llm,
            mm_hidden_size=int(raw["mm_hidden_size"]),
            mm_projector_type=str(raw.get("mm_projector_type", "linear")),
            mm_vision_tower=raw.get("mm_vision_tower"),
            image_processor=image_processor,
            mm_vision_select_feature=str(raw.get("mm_vision_select_feature", "patch")),
            mm_use_im_start_end=bool(raw.get("mm_use_im_start_end", False)),
            bert_type=str(raw["bert_type"]),
            num_query=int(raw.get("num_query") or 32),
            compress_type=compress,
            image_aspect_ratio=str(raw.get("image_aspect_ratio", "pad")),
            max_token=max_token,
            image_size=image_size,
            conv_mode=str(raw.get("conv_mode", "vicuna_v1")),
            long_video=long_video,
            token_types=token_types,
            raw=dict(raw),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "LlamaVidConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError("no such file; a checkpoint directory needs config.json", where=path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"not readable JSON ({exc})", where=path) from None
        if not isinstance(raw, dict):
            raise CheckpointError("expected a JSON object", where=path)
        return cls.from_dict(raw, source=str(path))

    @property
    def llm_hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def content_tokens_per_frame(self) -> int:
        """Content tokens per frame for a 224/336 px encoder with patch 14 (pooled as compress_type says)."""
        grid = self.image_size // 14
        if self.compress_type is None:
            return grid * grid
        if "grid" in self.compress_type:
            n = int(_GRID.search(self.compress_type).group(1))  # type: ignore[union-attr]
            stride = grid // n
            return (grid // stride) ** 2
        return 1

    @property
    def tokens_per_frame(self) -> int:
        """LLM tokens per frame: one context token plus the content tokens (unless ablated)."""
        if self.token_types == "context":
            return 1
        if self.token_types == "content":
            return self.content_tokens_per_frame
        return 1 + self.content_tokens_per_frame

    @property
    def context_length(self) -> int:
        """The LLM's context window in tokens (linear RoPE scaling stretches max_position_embeddings)."""
        base = int(self.llm.get("max_position_embeddings", 4096))
        scaling = self.llm.get("rope_scaling") or self.llm.get("rope_parameters") or {}
        kind = scaling.get("type") or scaling.get("rope_type") if isinstance(scaling, dict) else None
        if kind in ("linear", "dynamic") and scaling.get("factor"):
            base = int(math.floor(base * float(scaling["factor"])))
        return base

    def to_dict(self) -> dict[str, Any]:
        """The config.json a checkpoint of this model is saved with (the published keys)."""
        out = dict(self.raw)
        out.update(self.llm)
        out.update(
            {
                "architectures": out.get("architectures", ["LlavaLlamaAttForCausalLM"]),
                "model_type": out.get("model_type", "llava"),
                "mm_hidden_size": self.mm_hidden_size,
                "mm_projector_type": self.mm_projector_type,
                "mm_vision_tower": self.mm_vision_tower,
                "image_processor": self.image_processor,
                "mm_vision_select_feature": self.mm_vision_select_feature,
                "mm_use_im_start_end": self.mm_use_im_start_end,
                "mm_use_im_patch_token": out.get("mm_use_im_patch_token", False),
                "bert_type": self.bert_type,
                "num_query": self.num_query,
                "compress_type": self.compress_type,
                "image_aspect_ratio": self.image_aspect_ratio,
                "max_token": self.max_token,
            }
        )
        return out
