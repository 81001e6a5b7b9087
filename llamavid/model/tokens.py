"""The two tokens of a frame: the context token and the content token(s).

With X = the frame's patch features (CLS removed; (256, C) at 224 px) and Q = the QFormer's query outputs:

    text_q  = query_projector(Q)                        (32, C)        [model.vlm_att_projector]
    K       = key_projector(X)                          (256, C)       [model.vlm_att_key_projector]
    A       = softmax(text_q K^T / sqrt(C))             (32, 256)      softmax over patches
    context = value_projector(mean_q(A X))              (1, H)         [model.vlm_att_val_projector]
    content = content_projector(pool(X))                (n, H)         [model.mm_projector]

pool is set by compress_type: anything containing "mean" -> 1 token; "grid:N" -> an N x N average pool
(kernel = stride = grid // N, as published); None -> all patches. Note the values of the attention are the
raw X, not a projection of it.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import CheckpointError

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
_GRID = re.compile(r"grid:(\d+)")


def build_projector(kind: str, in_width: int, out_width: int) -> nn.Module:
    """The LLaVA projector types: "linear", "mlp{N}x_gelu" (keys 0, 2, 4, ...) and "identity"."""
    if kind == "linear":
        return nn.Linear(in_width, out_width)
    if kind == "identity":
        if in_width != out_width:
            raise CheckpointError(f"mm_projector_type identity needs equal widths, got {in_width} and {out_width}")
        return nn.Identity()
    m = _MLP.match(kind)
    if m:
        layers: list[nn.Module] = [nn.Linear(in_width, out_width)]
        for _ in range(int(m.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(out_width, out_width)]
        return nn.Sequential(*layers)
    raise CheckpointError(f"unknown mm_projector_type {kind!r} (expected linear, mlp2x_gelu or identity)")


def pool_content(patches: torch.Tensor, compress_type: str | None) -> torch.Tensor:
    """(B, P, C) patch features -> (B, n, C) pooled content features."""
    if compress_type is None:
        return patches
    m = _GRID.search(compress_type)
    if m:
        n = int(m.group(1))
        side = int(patches.shape[1] ** 0.5)
        if n < 2 or side * side != patches.shape[1] or n > side:
            raise ValueError(f"compress_type {compress_type!r} does not fit {patches.shape[1]} patches")
        stride = side // n
        grid = patches.reshape(patches.shape[0], side, side, -1).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(grid, kernel_size=stride, stride=stride)
        return pooled.permute(0, 2, 3, 1).flatten(1, 2)
    if "mean" in compress_type:
        return patches.mean(dim=1, keepdim=True)
    raise ValueError(f"unknown compress_type {compress_type!r}")


class TokenGenerator(nn.Module):
    """Query outputs + patch features -> [context, content...] LLM-space tokens per frame."""

    def __init__(self, qformer_width: int, vision_width: int, llm_width: int, projector_type: str,
                 compress_type: str | None,
                 token_types: str = "both"):
        super().__init__()
        self.compress_type = compress_type
        self.token_types = token_types  # the paper's ablation: "context" or "content" alone
        self.query_projector = nn.Linear(qformer_width, vision_width)
        self.key_projector = nn.Linear(vision_width, vision_width)
        self.value_projector = nn.Linear(vision_width, llm_width)
        self.content_projector = build_projector(projector_type, vision_width, llm_width)

    def context_features(self, query_out: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """(B, 32, Dq) and (B, P, C) -> (B, C): the question-weighted average of the patches, before projection."""
        text_q = self.query_projector(query_out)  # (B, 32, C)
        keys = self.key_projector(patches)  # (B, P, C)
        scores = text_q @ keys.transpose(-1, -2) / (patches.shape[-1] ** 0.5)  # (B, 32, P)
        return (scores.softmax(dim=-1) @ patches).mean(dim=1)  # (B, C)

    def context_logits(self, query_out: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """(B, 32, Dq) and (B, P, C) -> (B, 32, P): the text-guided attention's scores before the softmax,
        how strongly each of the question's queries matches each patch (what ``context_features`` weighs)."""
        text_q = self.query_projector(query_out)
        keys = self.key_projector(patches)
        return text_q @ keys.transpose(-1, -2) / (patches.shape[-1] ** 0.5)

    def detail(self, patches: torch.Tensor, grid: int) -> torch.Tensor:
        """(B, P, C) patches -> (B, grid * grid, H): content tokens pooled on a grid (the published
        ``compress_type`` "grid:N", the image-mode layout) instead of one mean token."""
        return self.content_projector(pool_content(patches, f"grid:{grid}"))

    def forward(self, query_out: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """query_out (B, 32, Dq), patches (B, P, C) -> tokens (B, 1 + n, H)."""
        if self.token_types == "content":
            return self.content_projector(pool_content(patches, self.compress_type))
        context = self.value_projector(self.context_features(query_out, patches))[:, None]  # (B, 1, H)
        if self.token_types == "context":
            return context
        content = self.content_projector(pool_content(patches, self.compress_type))  # (B, n, H)
        return torch.cat([context, content.to(context.dtype)], dim=1)
