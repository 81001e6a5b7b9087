"""Where a model runs and in which number format: the device and dtype rules, in one place.

``None``/"auto" picks the first CUDA GPU in bf16 (fp16 where bf16 is missing), else Apple's MPS in fp16,
else the CPU in float32. "stored" keeps every tensor as stored (memory-mapped, for ``llamavid info``).
"""

from __future__ import annotations

import torch

from .choices import DTYPE_CHOICES
from .errors import InputError

# Names users may give (--dtype); the first of each group is the canonical one shown in --help.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": the first CUDA GPU when there is one, else Apple's MPS, else the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device}: unknown device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def select_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The compute dtype for ``device`` (see the module docstring); None means "as stored"."""
    if str(dtype) == "stored":
        return None
    if dtype is None or str(dtype) == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            out = DTYPE_NAMES[str(dtype).lower().replace("torch.", "")]
        except KeyError:
            raise InputError(f"--dtype {dtype}: unknown (use {', '.join(DTYPE_CHOICES)})") from None
    if device.type == "cpu" and out == torch.float16:
        raise InputError("--dtype float16: not supported on the CPU (use float32 or bfloat16)")
    return out
