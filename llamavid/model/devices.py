"""Where a model runs and in which number format: the device and dtype rules, in one place.

Device: ``None``/"auto" picks the first CUDA GPU, else Apple's MPS, else the CPU.

Dtype, ``None``/"auto" (``choose_dtype``):
* CUDA: bfloat16 (float16 where the GPU lacks bf16); MPS: float16;
* CPU: bfloat16 where the CPU computes it natively (AVX512-BF16, AMX-BF16, Arm BF16), or whenever the
  float32 weights would not fit the memory available (``llamavid.model.memory``); float32 otherwise. When the
  CPU gets bfloat16 this way, the choice and its reason are reported in one line.
An explicit dtype is kept as given. "stored" keeps every tensor as stored (memory-mapped, for ``llamavid info``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.choices import DTYPE_CHOICES
from ..core.errors import OptionError
from .memory import RUNTIME_OVERHEAD, SYSTEM, Probes, format_gb

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
        raise OptionError("device", device, "unknown device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", device, "CUDA is not available on this machine (use the CPU: cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OptionError("device", device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


@dataclass(frozen=True)
class DtypeChoice:
    """The compute dtype (None: as stored) and, when it was chosen automatically for a reason worth
    telling, that reason in one line (``note``)."""

    dtype: torch.dtype | None
    note: str | None = None


def choose_dtype(dtype: str | torch.dtype | None, device: torch.device, *,
                 weight_bytes: Callable[[torch.dtype], int] | None = None, probes: Probes = SYSTEM,
                 what: str = "weights") -> DtypeChoice:
    """The dtype rule (module docstring). ``weight_bytes(dtype)`` tells what the weights take in a dtype."""
    if dtype is not None and str(dtype) != "auto":
        return DtypeChoice(select_dtype(dtype, device))
    if device.type == "cuda":
        return DtypeChoice(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if device.type != "cpu":
        return DtypeChoice(torch.float16)
    native = probes.cpu_bf16()
    if native:
        return DtypeChoice(torch.bfloat16, f"loading in bfloat16: this CPU computes it natively ({native}); "
                                           "ask for float32 to override")
    if weight_bytes is not None:
        available = probes.available(device)
        fp32 = weight_bytes(torch.float32)
        if available is not None and fp32 + RUNTIME_OVERHEAD > available:
            return DtypeChoice(torch.bfloat16, f"loading in bfloat16: float32 {what} ({format_gb(fp32)}) would not fit "
                                               f"the {format_gb(available)} available; ask for float32 to override")
    return DtypeChoice(torch.float32)


def select_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """An explicit dtype name (or torch dtype) checked for ``device``; None means "as stored".

    ``None``/"auto" resolves without looking at the weights or the memory; loading uses ``choose_dtype``."""
    if str(dtype) == "stored":
        return None
    if dtype is None or str(dtype) == "auto":
        return choose_dtype(None, device).dtype
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            out = DTYPE_NAMES[str(dtype).lower().replace("torch.", "")]
        except KeyError:
            raise OptionError("dtype", dtype, f"unknown (use {', '.join(DTYPE_CHOICES)})") from None
    if device.type == "cpu" and out == torch.float16:
        raise OptionError("dtype", "float16", "not supported on the CPU (use float32 or bfloat16)")
    return out


def check_device_dtype(device: str | None, dtype: str | None) -> None:
    """What can be said of a ``device``/``dtype`` pair before anything loads: the device exists, and the
    dtype is known and runs on it (the one check the command line makes at once)."""
    if device is None and (dtype is None or str(dtype) == "auto"):
        return
    dev = select_device(device)
    if dtype is not None and str(dtype) != "auto":
        select_dtype(dtype, dev)
