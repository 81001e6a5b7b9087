"""The vision encoder: EVA ViT-g/14 as used by BLIP-2 and LLaMA-VID, plus the CLIP preprocessing.

The module's parameter names are the LAVIS names of ``eva_vit_g.pth`` (``blocks.{i}.attn.qkv.weight``...),
so the public file loads as it is. The encoder's size is read from the tensors (width from the class
token, depth = number of blocks up to 39, head width 88, MLP width from ``fc1``), so the 1B-parameter
real file and a tiny test file go through the same code.

Output: the LAST block's tokens with no final norm, (T, 1 + grid*grid, width) = (T, 257, 1408) at 224 px.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..core.errors import CheckpointError
from .checkpoint import convert_tensors, tensor_fingerprint

MAX_DEPTH = 39  # BLIP-2 / LLaMA-VID drop the 40th block of EVA ViT-g (use the penultimate layer's output)
HEAD_WIDTH = 88
LAYER_NORM_EPS = 1e-6

# CLIP preprocessing (the "clip-patch14-224" processor of the release).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PUBLIC_WEIGHTS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class VisionConfig:
    """Sizes of an EVA ViT, read from its weights."""

    width: int = 1408
    depth: int = 39
    heads: int = 16
    mlp_width: int = 6144
    patch_size: int = 14
    image_size: int = 224
    source_grid: int = 16  # position-embedding grid stored in the weights (interpolated if it differs)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid * self.grid

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], image_size: int = 224,
                        source: str = "vision tower") -> "VisionConfig":
        for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
            if key not in sd:
                raise CheckpointError(f"not an EVA ViT weights file (no {key!r})", where=source)
        width = int(sd["cls_token"].shape[-1])
        if width % HEAD_WIDTH:
            raise CheckpointError(f"class token width {width} is not a multiple of the head width {HEAD_WIDTH}",
                                  where=source)
        blocks = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k))}
        depth = 0
        while depth in blocks and depth < MAX_DEPTH:
            depth += 1
        patch = sd["patch_embed.proj.weight"]
        if patch.ndim != 4 or patch.shape[0] != width or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
            raise CheckpointError(f"patch_embed.proj.weight has shape {list(patch.shape)}, expected [{width}, 3, p, p]",
                                  where=source)
        n_pos = int(sd["pos_embed"].shape[-2]) - 1
        grid = int(round(n_pos ** 0.5))
        if grid * grid != n_pos or sd["pos_embed"].shape[-1] != width:
            raise CheckpointError(f"pos_embed has shape {list(sd['pos_embed'].shape)}, expected [1, 1 + g*g, {width}]",
                                  where=source)
        return cls(
            width=width,
            depth=depth,
            heads=width // HEAD_WIDTH,
            mlp_width=int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
            patch_size=int(patch.shape[-1]),
            image_size=int(image_size),
            source_grid=grid,
        )


class EvaAttention(nn.Module):
    """Multi-head self-attention with one bias-free qkv projection plus learned q and v biases (k bias = 0)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_width)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_width), as EVA
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class EvaMlp(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_width)
        self.fc2 = nn.Linear(cfg.mlp_width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EvaBlock(nn.Module):
    """Pre-norm transformer block (no layer scale in EVA ViT-g as used by BLIP-2)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.attn = EvaAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.mlp = EvaMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, grid*grid, width)


class EvaVisionTransformer(nn.Module):
    """EVA ViT with LAVIS parameter names; returns all tokens of the last block, before any norm."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))
        self.gradient_checkpointing = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, S, S) -> features (B, 1 + grid*grid, width)."""
        s = self.config.image_size
        if pixel_values.shape[-3:] != (3, s, s):
            raise ValueError(f"expected pixel values of shape (B, 3, {s}, {s}), got {tuple(pixel_values.shape)}")
        x = self.patch_embed(pixel_values.to(self.cls_token.dtype))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubically resize a (1, 1 + g*g, C) position embedding to (1, 1 + grid*grid, C), CLS kept as is."""
    n = pos_embed.shape[1] - 1
    g = int(round(n ** 0.5))
    if g == grid:
        return pos_embed
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:].float()
    patches = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)


def expected_vision_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor the encoder needs, as stored in the weights file (source grid)."""
    w, m, p = cfg.width, cfg.mlp_width, cfg.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, w),
        "pos_embed": (1, 1 + cfg.source_grid ** 2, w),
        "patch_embed.proj.weight": (w, 3, p, p),
        "patch_embed.proj.bias": (w,),
    }
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes.update(
            {
                b + "norm1.weight": (w,), b + "norm1.bias": (w,),
                b + "attn.qkv.weight": (3 * w, w), b + "attn.q_bias": (w,), b + "attn.v_bias": (w,),
                b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                b + "norm2.weight": (w,), b + "norm2.bias": (w,),
                b + "mlp.fc1.weight": (m, w), b + "mlp.fc1.bias": (m,),
                b + "mlp.fc2.weight": (w, m), b + "mlp.fc2.bias": (w,),
            }
        )
    return shapes


def vision_state_dict_for(cfg: VisionConfig, sd: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Check a LAVIS state dict against the config and return exactly the tensors the encoder uses.

    Blocks beyond the depth (the 40th of the public file) are dropped; everything else that is missing,
    extra or mis-shaped is an error naming the keys.
    """
    expected = expected_vision_shapes(cfg)
    missing = sorted(k for k in expected if k not in sd)
    if missing:
        raise CheckpointError(f"missing vision-encoder keys {_few(missing)}", where=source)
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(v)})" for k, v in expected.items() if tuple(sd[k].shape) != v]
    if wrong:
        raise CheckpointError(f"wrong tensor shapes: {_few(wrong)}", where=source)
    unexpected = sorted(
        k for k in sd if k not in expected and not ((m := _BLOCK.match(k)) and int(m.group(1)) >= cfg.depth)
    )
    if unexpected:
        raise CheckpointError(f"unexpected vision-encoder keys {_few(unexpected)}", where=source)
    out = {k: sd[k] for k in expected}
    out["pos_embed"] = interpolate_pos_embed(out["pos_embed"], cfg.grid)
    return out


def _few(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def read_lavis_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``eva_vit_g.pth`` (a torch-saved state dict) safely: weights_only, memory-mapped where possible."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("vision-tower weights file not found", where=path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for damaged files
            raise CheckpointError(f"cannot read vision-tower weights ({_short(exc)})", where=path) from None
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise CheckpointError("cannot read vision-tower weights (truncated, corrupt or not a torch file: "
                              f"{_short(exc)})", where=path) from None
    if isinstance(sd, dict) and "cls_token" not in sd:
        for key in ("model", "state_dict", "module"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict):
        raise CheckpointError("expected a state dict of tensors", where=path)
    return sd


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def build_vision_tower(
    sd: Mapping[str, torch.Tensor], *, image_size: int = 224, source: str = "vision tower",
    device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
) -> EvaVisionTransformer:
    """An EVA encoder built from a LAVIS-named state dict (sizes inferred), frozen and in eval mode."""
    cfg = VisionConfig.from_state_dict(sd, image_size=image_size, source=source)
    weights = vision_state_dict_for(cfg, sd, source)
    with torch.device("meta"):
        model = EvaVisionTransformer(cfg)
    model.load_state_dict(convert_tensors(weights, device, dtype), strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()



class VisionWeights:
    """Where the vision encoder's weights come from (a file, the checkpoint's embedded copy, or the URL).

    Building the 1B-parameter encoder is deferred until frames are encoded: answering from a ``.vidtok``
    never needs it. The identity fingerprint reads only a few (memory-mapped) tensors.
    """

    def __init__(self, description: str, loader: Callable[[], Mapping[str, torch.Tensor]], image_size: int):
        self.description = description
        self._loader = loader
        self._sd: Mapping[str, torch.Tensor] | None = None
        self.image_size = image_size

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        if self._sd is None:
            self._sd = self._loader()
        return self._sd

    def config(self) -> VisionConfig:
        return VisionConfig.from_state_dict(self.state_dict(), image_size=self.image_size, source=self.description)

    def validate(self) -> None:
        """Check every tensor's presence and shape now (cheap: the file is memory-mapped)."""
        vision_state_dict_for(self.config(), self.state_dict(), self.description)

    def weight_bytes(self, dtype: torch.dtype | None) -> int:
        """Bytes the encoder's weights take in ``dtype`` (only the blocks it uses)."""
        from .memory import tensor_bytes

        return tensor_bytes(vision_state_dict_for(self.config(), self.state_dict(), self.description), dtype)

    def fingerprint(self) -> str:
        cfg = self.config()
        sd = self.state_dict()
        names = ["cls_token", "pos_embed", "patch_embed.proj.weight", f"blocks.{cfg.depth - 1}.mlp.fc2.weight"]
        items = {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "mlp": cfg.mlp_width,
                 "patch": cfg.patch_size, "image_size": cfg.image_size}
        return tensor_fingerprint(items, {n: sd[n] for n in names})

    def identity(self) -> dict[str, Any]:
        """What a .vidtok records about the encoder that made it."""
        cfg = self.config()
        return {
            "fingerprint": self.fingerprint(), "architecture": "eva_vit", "width": cfg.width, "depth": cfg.depth,
            "heads": cfg.heads, "mlp_width": cfg.mlp_width, "patch_size": cfg.patch_size,
            "image_size": cfg.image_size, "tokens": cfg.num_tokens, "weights": self.description,
        }


class VisionEncoder:
    """The frozen vision encoder as one unit: its weights, its identity, preprocessing and batched forward.

    ``llamavid encode`` needs only this (not the LLM); ``LlamaVid`` holds one too.
    """

    def __init__(self, weights: "VisionWeights", *, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = torch.float32,
                 pad_images: bool = True):
        self.weights = weights
        self.device = torch.device(device)
        self.dtype = dtype
        self.pad_images = pad_images
        self._module: EvaVisionTransformer | None = None
        self._identity: dict | None = None

    @property
    def image_size(self) -> int:
        return self.weights.image_size

    @property
    def module(self) -> EvaVisionTransformer:
        """The network, built on first use."""
        if self._module is None:
            self._module = build_vision_tower(self.weights.state_dict(), image_size=self.image_size,
                                              source=self.weights.description, device=self.device, dtype=self.dtype)
        return self._module

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = self.weights.identity()
        return self._identity

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
        """(T, 3, S, S) normalized pixels -> (T, 1 + grid^2, width) features on this encoder's device."""
        module = self.module
        out = [module(pixel_values[i : i + batch_size].to(self.device, non_blocking=True))
               for i in range(0, pixel_values.shape[0], batch_size)]
        if not out:
            cfg = module.config
            return torch.empty(0, cfg.num_tokens, cfg.width, device=self.device, dtype=self.dtype)
        return torch.cat(out)

    def encode_frames(self, frames, *, is_image: bool = False, batch_size: int = 16) -> torch.Tensor:
        """RGB uint8 frames (T, H, W, 3) -> features; still images are padded to square first, as published."""
        pixels = preprocess_frames(frames, self.image_size, pad_to_square=is_image and self.pad_images)
        return self.encode_pixels(pixels, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------------
# Preprocessing


def _resize_shortest_edge(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (long side truncated, as CLIPImageProcessor), bicubic."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample=Image.BICUBIC)


def _center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < size or w < size:  # pad with zeros like transformers' center_crop does for small images
        out = np.zeros((max(h, size), max(w, size), 3), dtype=arr.dtype)
        top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        out[top : top + h, left : left + w] = arr
        arr, h, w = out, out.shape[0], out.shape[1]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


def expand_to_square(img: Image.Image, background: tuple[int, int, int] | None = None) -> Image.Image:
    """Pad a still image to a square with the CLIP mean colour (the release's image_aspect_ratio "pad")."""
    if background is None:
        background = tuple(int(x * 255) for x in CLIP_MEAN)  # (122, 116, 104)
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def preprocess_frames(
    frames: np.ndarray | Sequence[np.ndarray | Image.Image], image_size: int = 224, *, pad_to_square: bool = False
) -> torch.Tensor:
    """RGB frames (n, H, W, 3) uint8 -> normalized pixel values (n, 3, S, S) float32.

    Video frames are resized (shortest edge, bicubic) and centre-cropped; still images are first padded
    to a square with the mean colour (``pad_to_square``), as the published pipeline does.
    """
    out = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        img = frame if isinstance(frame, Image.Image) else Image.fromarray(np.ascontiguousarray(frame))
        img = img.convert("RGB")
        if pad_to_square:
            img = expand_to_square(img)
        img = _resize_shortest_edge(img, image_size)
        out[i] = _center_crop(np.asarray(img), image_size)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std
