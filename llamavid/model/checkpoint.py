"""Finding and reading checkpoints: local directories, Hugging Face ids, shards, and the vision-tower file.

Everything here reads untrusted files safely: torch files with ``weights_only=True`` (memory-mapped),
safetensors as they are; never pickle, never remote code. Checkpoint keys are mapped onto our module
names by one explicit prefix table, used both ways (loading, and saving in the published layout).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..core.errors import CheckpointError, InputError, ModelNotFoundError, Opt

# Checkpoint key prefix -> our module path. Order matters: the first match wins.
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("model.vlm_att_encoder.bert.", "qformer.bert."),
    ("model.vlm_att_query", "qformer.query_tokens"),
    ("model.vlm_att_ln.", "qformer.ln_vision."),
    ("model.vlm_att_projector.", "tokens.query_projector."),
    ("model.vlm_att_key_projector.", "tokens.key_projector."),
    ("model.vlm_att_val_projector.", "tokens.value_projector."),
    ("model.mm_projector.", "tokens.content_projector."),
    ("model.vision_tower.vision_tower.", "vision."),
    ("lm_head.", "llm.lm_head."),
    ("model.", "llm.model."),
)

# Keys a checkpoint may hold that carry nothing we need (buffers saved by old transformers versions).
IGNORED_KEYS = (
    re.compile(r"\.rotary_emb\.inv_freq$"),
    re.compile(r"^model\.vlm_att_encoder\.bert\.embeddings\.position_ids$"),
)

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

HUB_FILES = [
    "config.json", "generation_config.json", "*.json", "*.bin", "*.safetensors", "tokenizer.model",
    "qformer_tokenizer/*",
]

VISION_TOWER_NAME = "eva_vit_g.pth"


def to_module_key(key: str) -> str | None:
    """Checkpoint key -> our parameter name, or None when the key is unknown."""
    for prefix, target in KEY_MAP:
        if key == prefix or key.startswith(prefix):
            return target + key[len(prefix):]
    return None


def to_checkpoint_key(name: str) -> str:
    """Our parameter name -> the published checkpoint key (inverse of ``to_module_key``)."""
    for prefix, target in KEY_MAP:
        if name == target or name.startswith(target):
            return prefix + name[len(target):]
    raise KeyError(name)


def is_ignored(key: str) -> bool:
    return any(p.search(key) for p in IGNORED_KEYS)


# ---------------------------------------------------------------------------------------------------------
# Where a checkpoint lives


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory for a path or a Hugging Face id (downloaded into / read from the HF cache).

    HF_HUB_OFFLINE=1 is respected: an id that is not cached fails at once with a message saying how to
    point at a local copy.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError("is a file; a model is a checkpoint directory (config.json, weights, tokenizer.model)",
                              where=name)
    if not _HUB_ID.match(name):
        raise ModelNotFoundError("no such checkpoint directory (and not a Hugging Face id like org/name); give ",
                                 Opt("model", "DIR"), " or set LLAMAVID_MODEL=DIR to a local checkpoint, or use ",
                                 Opt("model", "demo"), where=name)
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    hint = (f"download it elsewhere (hf download {repo_id} --local-dir DIR) and give ", Opt("model", "DIR"),
            ", or set LLAMAVID_MODEL=DIR")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except HFValidationError:
        raise ModelNotFoundError("neither a local directory nor a valid Hugging Face model id", where=repo_id) from None
    except Exception as exc:  # offline, not cached, network down, gated repo, 404
        kind = type(exc).__name__
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = ("is not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline
               else f"could not be fetched from the Hugging Face hub ({kind})")
        raise ModelNotFoundError(f"not a local directory, and the model {why}; ", *hint, where=repo_id) from None


# ---------------------------------------------------------------------------------------------------------
# Weight files


def weight_files(ckpt: Path) -> list[Path]:
    """The weight files of a checkpoint directory: the shards named by an index, or one file."""
    for index_name in WEIGHT_INDEXES:
        index = ckpt / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"not a valid weight index ({type(exc).__name__}: {exc})", where=index) from None
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (ckpt / n).is_file()]
            if missing:
                raise CheckpointError(f"shard(s) named in {index_name} are missing: {', '.join(missing)}", where=ckpt)
            return [ckpt / n for n in names]
    for name in SINGLE_WEIGHTS:
        if (ckpt / name).is_file():
            return [ckpt / name]
    raise CheckpointError(f"no weights (expected {WEIGHT_INDEXES[1]} with shards, or {SINGLE_WEIGHTS[0]})", where=ckpt)


def read_weight_file(path: Path) -> Mapping[str, torch.Tensor]:
    """One shard as a dict of tensors: safetensors, or a torch zip file read with weights_only and mmap."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        text = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"cannot be read (truncated, corrupt, or not a weights file: {text})",
                              where=path) from None


_MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages (file pages are read again if touched; nothing is lost)


def release_file_pages(tensor: torch.Tensor) -> None:
    """Tell the kernel this process is done with the memory-mapped pages under ``tensor`` (after it was
    converted to another dtype), so that they stop counting against the process while the rest loads.

    MADV_PAGEOUT never loses data: file-backed pages are read again if touched, anonymous ones are left
    alone (or swapped). A no-op off Linux or where the call is not supported.
    """
    import ctypes
    import mmap
    import sys

    if not sys.platform.startswith("linux") or tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    global _madvise
    if _madvise is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = libc.madvise
        except (OSError, AttributeError):
            _madvise = False
    if not _madvise:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor only
    if last > first:
        _madvise(first, last - first, _MADV_PAGEOUT)


_madvise = None


def convert_tensors(sd: Mapping[str, torch.Tensor], device: torch.device | str,
                    dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Each tensor moved to ``device``/``dtype`` one at a time, the memory-mapped source pages of each one
    released as soon as its copy exists: loading never holds the file and a full copy at once.
    Tensors already in the right place and dtype are kept as they are (no copy)."""
    out: dict[str, torch.Tensor] = {}
    for key, src in sd.items():
        dst = src.to(device=device, dtype=dtype or src.dtype)
        if dst.data_ptr() != src.data_ptr():
            release_file_pages(src)
        out[key] = dst
    return out


def iter_checkpoint_tensors(ckpt: Path) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """(checkpoint key, tensor, file) for every tensor of every shard; shards are memory-mapped."""
    for path in weight_files(ckpt):
        sd = read_weight_file(path)
        if not isinstance(sd, Mapping):
            raise CheckpointError("expected a state dict of tensors", where=path)
        for key, tensor in sd.items():
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"entry {key!r} is not a tensor", where=path)
            yield key, tensor, path


def read_prefixed_tensors(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with ``prefix`` (prefix removed), opening only the shards that hold them."""
    files = weight_files(ckpt)
    for index_name in WEIGHT_INDEXES:
        index = ckpt / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            wanted = {name for key, name in weight_map.items() if key.startswith(prefix)}
            files = [f for f in files if f.name in wanted]
            break
    out: dict[str, torch.Tensor] = {}
    for path in files:
        for key, tensor in read_weight_file(path).items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = tensor
    return out


def route_checkpoint(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Group a checkpoint's tensors by component ("qformer", "tokens", "vision", "llm"), named as our modules.

    Unknown keys are an error naming them (a real mismatch must fail loudly).
    """
    groups: dict[str, dict[str, torch.Tensor]] = {"qformer": {}, "tokens": {}, "vision": {}, "llm": {}}
    unknown: list[str] = []
    for key, tensor, _ in iter_checkpoint_tensors(ckpt):
        if is_ignored(key):
            continue
        name = to_module_key(key)
        if name is None:
            unknown.append(key)
            continue
        component, rest = name.split(".", 1)
        groups[component][rest] = tensor
    if unknown:
        shown = ", ".join(sorted(unknown)[:6]) + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
        raise CheckpointError(f"unexpected keys in the checkpoint: {shown}", where=ckpt)
    return groups


# ---------------------------------------------------------------------------------------------------------
# The vision tower file


def user_cache_dir() -> Path:
    """Where llamavid caches downloads and token files: $LLAMAVID_CACHE, else $XDG_CACHE_HOME/llamavid."""
    env = os.environ.get("LLAMAVID_CACHE")
    if env:
        folder, name = Path(env).expanduser(), "LLAMAVID_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder, name = Path(base) / "llamavid", "XDG_CACHE_HOME"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{name}={env if env else base}: llamavid's cache must be a folder, and {folder} is a file")
    return folder


def vision_tower_candidates(configured: str | None, ckpt: Path) -> list[Path]:
    """Places a checkpoint's own ``eva_vit_g.pth`` may be, in order: the config's path (as given, then
    relative to the checkpoint), the checkpoint directory. (The user cache's copy is a last resort, after
    an embedded copy: see ``loading.resolve_vision_weights``.)"""
    out: list[Path] = []
    if configured:
        p = Path(configured).expanduser()
        out.append(p)
        if not p.is_absolute():
            out.append(ckpt / p)
        out.append(ckpt / p.name)
    out.append(ckpt / VISION_TOWER_NAME)
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def download_vision_tower(url: str, dest: Path) -> Path:
    """Fetch the public LAVIS file once into the user cache (atomically: a partial download is never used)."""
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError("vision-tower weights not found and HF_HUB_OFFLINE is set; give ",
                              Opt("vision_tower", "PATH"), " to eva_vit_g.pth", where=dest)
    from ..core.fileio import atomic_output
    from ..core.locking import exclusive

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(dest, on_wait=lambda _: None):  # a shared cache entry: one download, others wait for it
            if dest.is_file():
                return dest
            with urllib.request.urlopen(url, timeout=60) as resp, atomic_output(dest) as f:
                while chunk := resp.read(1 << 22):
                    f.write(chunk)
    except OSError as exc:
        raise CheckpointError(f"could not download the vision-tower weights ({exc}); give ",
                              Opt("vision_tower", "PATH"),
                              " to eva_vit_g.pth", where=url) from None
    return dest


def tensor_fingerprint(config_items: Mapping[str, object], tensors: Mapping[str, torch.Tensor]) -> str:
    """A short identity of an encoder: its sizes plus a hash of some weights rounded to bfloat16.

    Rounding to bf16 makes the fp32 public file and the bf16 copy inside full checkpoints the same
    encoder; any other encoder (another model, a tiny test encoder) differs.
    """
    h = hashlib.sha256(json.dumps(dict(config_items), sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.bfloat16).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.int16).numpy().tobytes())
    return "eva:" + h.hexdigest()[:32]
