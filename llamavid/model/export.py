"""Writing a model as a checkpoint in the published layout, which ``load_model`` (and the published code's
key names) read back: config.json, ``pytorch_model-0000k-of-0000n.bin`` shards plus their index (or
safetensors), the sentencepiece ``tokenizer.model`` and the QFormer's ``qformer_tokenizer/``.

Shards hold plain tensors only, so they load with ``torch.load(weights_only=True)``. The directory is
written beside its destination and renamed into place: a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.errors import CheckpointError
from .checkpoint import to_checkpoint_key
from .vision import vision_state_dict_for

if TYPE_CHECKING:
    from .modeling import LlamaVid

VISION_PREFIX = "model.vision_tower.vision_tower."


def checkpoint_state_dict(model: "LlamaVid", *, dtype: torch.dtype | None = None, embed_vision: bool = False,
                          vision_dtype: torch.dtype | None = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Every tensor of the model under its published checkpoint key."""
    sd: dict[str, torch.Tensor] = {}
    tied = bool(model.config.llm.get("tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if tied and name == "llm.lm_head.weight":
            continue
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[to_checkpoint_key(name)] = t.contiguous()
    if embed_vision:
        weights = model.vision_encoder.weights
        for key, t in vision_state_dict_for(weights.config(), weights.state_dict(), weights.description).items():
            t = t.detach().to("cpu")
            if vision_dtype is not None:
                t = t.to(vision_dtype)
            sd[VISION_PREFIX + key] = t.contiguous()
    return sd


def _shards(sd: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in sd.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += n
    return shards


def write_weights(folder: Path, sd: dict[str, torch.Tensor], *, fmt: str = "bin",
                  max_shard_bytes: int = 10 << 30) -> None:
    """Weights in the published sharded ``.bin`` layout (with index), or safetensors (one file or shards)."""
    shards = _shards(sd, max_shard_bytes)
    n = len(shards)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    if fmt == "safetensors":
        from safetensors.torch import save_file

        if n == 1:
            save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
            return
        names = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        for name, shard in zip(names, shards):
            save_file(shard, str(folder / name), metadata={"format": "pt"})
        index_name = "model.safetensors.index.json"
    elif fmt == "bin":
        names = [f"pytorch_model-{k + 1:05d}-of-{n:05d}.bin" for k in range(n)]
        for name, shard in zip(names, shards):
            torch.save(shard, folder / name)
        index_name = "pytorch_model.bin.index.json"
    else:
        raise ValueError(f"unknown weights format {fmt!r}")
    weight_map = {key: name for name, shard in zip(names, shards) for key in shard}
    (folder / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2))


def save_checkpoint(model: "LlamaVid", destination: str | os.PathLike, *, fmt: str = "bin",
                    dtype: torch.dtype | None = None,
                    embed_vision: bool = False, vision_dtype: torch.dtype | None = torch.bfloat16,
                    max_shard_bytes: int = 10 << 30, extra_config: dict | None = None) -> Path:
    """Write ``model`` as a checkpoint directory at ``destination`` (replaced atomically if it exists)."""
    dest = Path(destination)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint ({exc.strerror or exc})", where=dest) from None
    try:
        sd = checkpoint_state_dict(model, dtype=dtype, embed_vision=embed_vision, vision_dtype=vision_dtype)
        write_weights(tmp, sd, fmt=fmt, max_shard_bytes=max_shard_bytes)
        config = model.config.to_dict()
        config["torch_dtype"] = str(dtype or model.dtype).replace("torch.", "")
        config.update(extra_config or {})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tok = model.text_tokenizer
        shutil.copyfile(tok.path, tmp / tok.path.name)
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}) + "\n")
        model.qformer_tokenizer.save_pretrained(str(tmp / "qformer_tokenizer"))
        _fsync_tree(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays; an earlier checkpoint is kept
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":  # a full disk, mostly
            reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:160]
            raise CheckpointError(f"cannot write the checkpoint ({reason})", where=dest) from None
        raise
    return dest


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
