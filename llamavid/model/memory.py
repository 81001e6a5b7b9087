"""What the machine has and what fits in it: the memory and CPU probes, and the arithmetic of weights.

Probes are plain functions gathered in a ``Probes`` value, so that a library user or a test can pretend to
be another machine (``Probes(available=lambda device: 4 << 30)``). ``LLAMAVID_MEMORY_LIMIT`` (e.g. ``16GB``)
caps the memory llamavid plans for, to leave room for other programs.

* Available memory on the CPU: the smallest of MemAvailable (/proc/meminfo), the room left under the
  process's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) and ``LLAMAVID_MEMORY_LIMIT``.
  On a CUDA device: the free device memory (``torch.cuda.mem_get_info``). Unknown (None) elsewhere.
* Native bfloat16 on the CPU: AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on Arm (torch's own CPU
  feature probe, else /proc/cpuinfo). Without it bfloat16 matmuls are emulated and slower than float32.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from ..core.errors import InputError

GB = 1e9
RUNTIME_OVERHEAD = 600 * 2**20  # bytes beside the weights to run at all: interpreter, torch, tokenizers, buffers


def format_gb(n: float) -> str:
    """Bytes for people: "27.0 GB", or MB / kB below a gigabyte."""
    for unit, size in (("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str, *, what: str = "LLAMAVID_MEMORY_LIMIT") -> int:
    """``"16GB"``, ``"512MiB"``, ``"2e9"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(text))
    if not m:
        raise InputError(f"{what} {text!r}: expected a size such as 16GB or 512MiB")
    try:
        value = float(m.group(1))
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a size such as 16GB or 512MiB") from None
    power = "kmgt".find(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(value * (1024 if m.group(3) else 1000) ** power)


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under this process's cgroup memory limit (None: no limit found)."""
    base = Path(root)
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":  # cgroup v2
            group = base / parts[2].lstrip("/")
            limit, used = _read_int(group / "memory.max"), _read_int(group / "memory.current")
            if limit is None:  # "max", or not visible from inside: try the root of the mount
                limit, used = _read_int(base / "memory.max"), _read_int(base / "memory.current")
            if limit is not None and used is not None:
                return max(0, limit - used)
        elif "memory" in parts[1].split(","):  # cgroup v1
            group = base / "memory" / parts[2].lstrip("/")
            for g in (group, base / "memory"):
                limit = _read_int(g / "memory.limit_in_bytes")
                used = _read_int(g / "memory.usage_in_bytes")
                if limit is not None and used is not None and limit < 1 << 60:
                    return max(0, limit - used)
    return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes this process can still use on ``device`` (see the module docstring); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        found: list[int] = [int(free)]
    elif device.type == "cpu":
        found = [x for x in (_meminfo_available(), _cgroup_room()) if x is not None]
    else:
        found = []
    env = os.environ.get("LLAMAVID_MEMORY_LIMIT")
    if env:
        found.append(parse_size(env))
    return min(found) if found else None


_CPU_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}


def cpu_bf16_support() -> str | None:
    """The CPU feature that computes bfloat16 natively (e.g. "AVX512-BF16"), or None."""
    try:
        caps = torch._C._cpu._get_cpu_capability()  # dict of feature flags (torch >= 2.5)
        for flag in ("amx_bf16", "avx512_bf16"):
            if caps.get(flag):
                return _CPU_BF16_FLAGS[flag]
    except (AttributeError, RuntimeError, TypeError):
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    for flag in ("amx_bf16", "avx512_bf16", "bf16"):
        if flag in flags:
            return _CPU_BF16_FLAGS[flag]
    return None


@dataclass(frozen=True)
class Probes:
    """How llamavid looks at the machine; replace a field to pretend to be another one."""

    # looked up when called, so that patching this module's functions reaches the default probes too
    available: Callable[[torch.device], int | None] = field(default=lambda device: available_memory(device))
    cpu_bf16: Callable[[], str | None] = field(default=lambda: cpu_bf16_support())


SYSTEM = Probes()


def tensor_bytes(tensors: Iterable[torch.Tensor] | Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> int:
    """Bytes ``tensors`` take once converted to ``dtype`` (None: as stored); integer buffers stay as they are."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    total = 0
    for t in values:
        size = t.element_size()
        if dtype is not None and t.is_floating_point():
            size = torch.empty((), dtype=dtype).element_size()
        total += t.numel() * size
    return total


def require_memory(source: str, what: str, need: int, available: int | None,
                   alternatives: Iterable[tuple[tuple, int]] = ()) -> None:
    """Refuse (``MemoryLimitError``, one line) when ``need`` bytes exceed ``available``; name the
    ``alternatives`` (the settings as message parts, bytes they would need) that fit, smallest change first."""
    from ..core.errors import MemoryLimitError

    if available is None or need <= available:
        return
    fitting = [(*setting, f" ({format_gb(n)})") for setting, n in alternatives if n <= available]
    hint: list = []
    for k, parts in enumerate(fitting):
        hint += ["; this fits: " if k == 0 else ", or ", *parts]
    if not fitting:
        hint = ["; nothing smaller fits either: free memory or use a larger machine"]
    raise MemoryLimitError(f"{what} need {format_gb(need)} but only {format_gb(available)} of memory is available",
                           *hint, where=source, needed=need, available=available)
