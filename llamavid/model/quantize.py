"""4- and 8-bit LLM weights through bitsandbytes (``--quantize 8bit|4bit``).

Only the decoder layers' Linear modules are swapped; embeddings, norms and the output head stay in the
compute dtype. The weights are quantized when a module moves to its device (CUDA, or the CPU with
bitsandbytes >= 0.45).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ..core.choices import QUANTIZE_CHOICES
from ..core.errors import InputError, Opt, OptionError
from .checkpoint import release_file_pages


def parse_quantize(value: str | None) -> int | None:
    """``--quantize`` -> bits (None: no quantization)."""
    if value is None:
        return None
    if value not in QUANTIZE_CHOICES:
        raise OptionError("quantize", value, f"expected {' or '.join(QUANTIZE_CHOICES)}")
    return int(value[0])


class _OncePerKind(logging.Filter):
    """Lets each kind of library log line through once (bitsandbytes logs one warning per matmul call)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, object]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _route_library_log() -> None:
    """bitsandbytes' log lines reach stderr once per kind, marked as warnings from it, not per call."""
    logger = logging.getLogger("bitsandbytes")
    if any(getattr(h, "_llamavid", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler._llamavid = True  # type: ignore[attr-defined]
    handler.addFilter(_OncePerKind())
    handler.setFormatter(logging.Formatter("llamavid: warning: bitsandbytes: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def quantize_llm(llm: nn.Module, bits: int, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    """Swap the decoder layers' Linear modules for bitsandbytes 8-bit (LLM.int8) or 4-bit (NF4) ones."""
    _route_library_log()
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise InputError(f"{bits}-bit loading needs bitsandbytes: pip install 'llamavid[quant]'") from None
    for parent in list(llm.model.layers.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            weight = child.weight.data.to("cpu")
            has_bias = child.bias is not None
            if bits == 8:
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=has_bias,
                                          has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=has_bias,
                                        compute_dtype=compute_dtype, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
            if has_bias:
                new.bias = nn.Parameter(child.bias.data.to("cpu", compute_dtype), requires_grad=False)
            setattr(parent, child_name, new.to(device))
            release_file_pages(child.weight.data)  # the mapped checkpoint pages of this weight are no longer needed
    llm = llm.to(device).eval()  # the new layers too: some kernels repack weights on their first eval forward
    check_quantized_layers(llm, bits, device, compute_dtype)
    return llm


def check_quantized_layers(llm: nn.Module, bits: int, device: torch.device, compute_dtype: torch.dtype) -> None:
    """Run every shape of quantized layer once, at load, on one token and on a few: bitsandbytes' kernels
    refuse some shapes on some devices (its 4-bit CPU kernel asserts "N must be divisible by block_n" in the
    middle of an answer), and a model that cannot answer must be refused when it loads, saying what works."""
    seen: set[tuple[int, int]] = set()
    for module in llm.model.layers.modules():
        shape = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if not _is_quantized(module) or shape in seen:
            continue
        seen.add(shape)
        try:
            with torch.inference_mode():
                for tokens in (1, 3):
                    module(torch.zeros(1, tokens, shape[0], dtype=compute_dtype, device=device))
        except Exception as exc:  # noqa: BLE001 - a kernel's refusal, whatever its type
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            instead: list = [Opt("quantize", "8bit")] if bits == 4 else []
            instead += [" or " if instead else "", Opt("dtype", "bfloat16"), " without quantizing"]
            raise InputError(f"{bits}-bit layers of shape {shape[0]} x {shape[1]} do not run on {device.type} in "
                             f"{str(compute_dtype).replace('torch.', '')} with this bitsandbytes ({reason}); use ",
                             *instead) from None


def _is_quantized(module: nn.Module) -> bool:
    name = type(module).__name__
    return name in ("Linear4bit", "Linear8bitLt")
