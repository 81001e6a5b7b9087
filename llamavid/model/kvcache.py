"""How generation keeps the keys and values of the prompt (the KV cache), and how much memory that takes.

Modes (the ``kv_cache`` option of a question; planning picks the mode, llamavid.pipeline.planning):

* ``full``: the model's dtype (a transformers ``DynamicCache``): 2 x layers x kv_heads x head_dim x 2 bytes
  per token in bf16, 512 KiB for LLaMA-7B, so 32 GiB for a 64K-token movie prompt;
* ``int8``: 8-bit codes per (token, head) with one float32 scale (symmetric), 0.52 x the bf16 bytes;
* ``int4``: 4-bit codes in groups of 32 values (or the head width if smaller) with a bfloat16 scale and a uint8 zero
  point (asymmetric),
  two codes per byte, 0.30 x the bf16 bytes;
* ``offload`` (CUDA only): full precision, kept in host memory and brought to the GPU one layer at a time
  (transformers' offloaded ``DynamicCache``);
* ``auto`` (default): ``full`` when the prompt's cache fits the memory left, else the first of ``int8``,
  ``int4`` (on a GPU: then ``offload``) that does; a prompt that fits no mode is refused before any work,
  naming how many tokens would fit.

Quantization is torchao's (``choose_qparams_affine``/``quantize_affine``/``dequantize_affine``). Codes are
appended as tokens arrive (no re-quantization of what is stored); each forward dequantizes the layer it
needs into one transient buffer, and the tokens of the current step attend to their own exact keys and
values. Measured agreement with the full cache: docs/RESULTS.md ("Quantized KV cache").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import InputError, MemoryLimitError, OptionError
from .memory import format_gb

INT4_GROUP = 32
PREFILL_ACTIVATION_FACTOR = 14  # bytes per (prompt-chunk token x hidden unit) for one layer's activations, measured


@dataclass(frozen=True)
class CacheShape:
    """What sizes a model's KV cache: layers, key/value heads and head width, and the compute dtype."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    hidden: int = 0
    intermediate: int = 0

    @classmethod
    def of(cls, llm_config: Any, dtype: torch.dtype) -> "CacheShape":
        heads = int(llm_config.num_attention_heads)
        kv_heads = int(getattr(llm_config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(llm_config, "head_dim", None) or llm_config.hidden_size // heads)
        return cls(int(llm_config.num_hidden_layers), kv_heads, head_dim, dtype, int(llm_config.hidden_size),
                   int(getattr(llm_config, "intermediate_size", 0) or 0))

    @property
    def element(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def bytes_per_token(self, mode: str) -> float:
        """Bytes the cache holds per prompt token (all layers, keys and values) in ``mode``, where it lives."""
        per_head = {
            "full": self.head_dim * self.element,
            "offload": self.head_dim * self.element,  # in host memory
            "int8": self.head_dim + 4,
            "int4": self.head_dim / 2 + (self.head_dim / min(INT4_GROUP, self.head_dim)) * 3,
        }[mode]
        return 2 * self.layers * self.kv_heads * per_head

    def working_bytes(self, mode: str, tokens: int, chunk: int, batch: int) -> float:
        """Transient memory beside the stored cache while a prompt of ``tokens`` is prefilled in chunks of
        ``chunk``: one layer's keys and values in the compute dtype (the concatenation, or the dequantized
        copy), the attention mask of a chunk, and one layer's activations on a chunk."""
        transient = 2 * tokens * self.kv_heads * self.head_dim * self.element * batch
        step = min(chunk, tokens)
        mask = step * tokens * batch  # one byte per (query, key) of a chunk
        activations = PREFILL_ACTIVATION_FACTOR * step * max(self.hidden, self.intermediate) * batch
        return transient + mask + activations

    def need(self, mode: str, tokens: int, chunk: int, batch: int) -> tuple[float, float]:
        """(bytes on the compute device, bytes in host memory) for a prompt of ``tokens`` in ``mode``."""
        work = self.working_bytes(mode, tokens, chunk, batch)
        stored = self.bytes_per_token(mode) * tokens * batch
        if mode == "offload":
            return work + 2 * stored / self.layers, stored  # two layers on the device at a time
        return stored + work, 0.0


def plan_cache(shape: CacheShape, mode: str, *, tokens: int, batch: int, chunk: int, device: torch.device,
               available: int | None, host_available: int | None = None) -> tuple[str, str | None]:
    """The mode to use for this prompt and a one-line note when ``auto`` chose a smaller cache.

    Refuses (``MemoryLimitError``) a prompt that fits no allowed mode; the message says how many prompt
    tokens would fit with the smallest one, for the caller to turn into a number of frames."""
    candidates = ["full", "int8", "int4"] + (["offload"] if device.type == "cuda" else [])
    if mode == "offload" and device.type != "cuda":
        raise OptionError("kv_cache", "offload", "keeps a GPU's cache in host memory; on the CPU use int8 or int4")
    allowed = candidates if mode == "auto" else [mode]

    def fits(m: str, n: int) -> bool:
        dev_need, host_need = shape.need(m, n, chunk, batch)
        return (available is None or dev_need <= available) and (
            host_need == 0 or host_available is None or host_need <= host_available)

    for m in allowed:
        if fits(m, tokens):
            if mode == "auto" and m != "full":
                full = shape.bytes_per_token("full") * tokens * batch
                return m, (f"KV cache in {m}: the {tokens:,}-token prompt's full cache ({format_gb(full)}) "
                           "would not fit "
                           f"the {format_gb(available or 0)} left; ask for a full KV cache to insist")
            return m, None
    smallest = allowed[-1]
    lo, hi = 0, tokens
    while hi - lo > 1:  # the longest prompt the smallest mode holds
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(smallest, mid) else (lo, mid)
    dev_need, host_need = shape.need(smallest, tokens, chunk, batch)
    raise MemoryLimitError(
        f"the {tokens:,}-token prompt needs {format_gb(dev_need + host_need)} for its KV cache in {smallest} "
        f"(and working memory) but {format_gb(available or 0)} is left after the weights; at most {lo:,} prompt "
        f"tokens fit", needed=dev_need + host_need, available=available, fit_tokens=lo)


# ---------------------------------------------------------------------------------------------------------
# The quantized cache


def _torchao():
    """torchao's affine quantization primitives (imported on first use; llamavid/__init__ quiets its start-up logs)."""
    try:
        from torchao.quantization import quant_primitives as qp
    except ImportError:
        raise InputError("a quantized KV cache needs torchao: pip install torchao") from None
    return qp


def _layer_base():
    from transformers.cache_utils import CacheLayerMixin

    return CacheLayerMixin


class QuantizedKVLayer(_layer_base()):
    """One layer's keys and values as int8 or int4 codes, appended as tokens arrive (see the module docstring)."""

    is_compileable = False
    is_sliding = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, bits: int):
        super().__init__()  # .keys/.values (empty here) tell transformers the device and dtype
        self.bits = bits
        self.length = 0
        self._k: list[tuple[torch.Tensor, ...]] = []
        self._v: list[tuple[torch.Tensor, ...]] = []
        self._qp = _torchao()

    # -- quantization ----------------------------------------------------------------------------------------
    def _block(self, x: torch.Tensor) -> tuple[int, ...]:
        return (1, 1, 1, x.shape[-1] if self.bits == 8 else min(INT4_GROUP, x.shape[-1]))

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qp = self._qp
        block = self._block(x)
        if self.bits == 8:
            scale, zero = qp.choose_qparams_affine(x, qp.MappingType.SYMMETRIC, block, torch.int8, quant_min=-127,
                                                   quant_max=127, eps=1e-12, scale_dtype=torch.float32)
            # symmetric: the zero point is 0 everywhere and is not stored
            return (qp.quantize_affine(x, block, scale, zero, torch.int8, quant_min=-127, quant_max=127), scale)
        scale, zero = qp.choose_qparams_affine(x, qp.MappingType.ASYMMETRIC, block, torch.uint8, quant_min=0,
                                               quant_max=15, eps=1e-12, scale_dtype=torch.bfloat16,
                                               zero_point_dtype=torch.uint8)
        codes = qp.quantize_affine(x, block, scale, zero, torch.uint8, quant_min=0, quant_max=15)
        return (codes[..., 0::2] | (codes[..., 1::2] << 4), scale, zero)

    def _dequantize(self, parts: tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
        qp = self._qp
        if self.bits == 8:
            codes, scale = parts
            zero = torch.zeros((), dtype=torch.int32, device=scale.device).expand(scale.shape)
            return qp.dequantize_affine(codes, self._block(codes), scale, zero, torch.int8, quant_min=-127,
                                        quant_max=127, output_dtype=dtype)
        packed, scale, zero = parts
        codes = torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)
        return qp.dequantize_affine(codes, self._block(codes), scale, zero, torch.uint8, quant_min=0, quant_max=15,
                                    output_dtype=dtype)

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for parts in (*self._k, *self._v) for t in parts)

    # -- the cache-layer interface transformers calls -----------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.keys = torch.empty(0, dtype=key_states.dtype, device=self.device)
        self.values = torch.empty(0, dtype=value_states.dtype, device=self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old, new = self.length, key_states.shape[-2]
        b, h, _, d = key_states.shape
        keys = torch.empty(b, h, old + new, d, dtype=key_states.dtype, device=key_states.device)
        values = torch.empty_like(keys)
        pos = 0
        for kp, vp in zip(self._k, self._v):
            n = kp[0].shape[-2]
            keys[:, :, pos:pos + n] = self._dequantize(kp, keys.dtype)
            values[:, :, pos:pos + n] = self._dequantize(vp, values.dtype)
            pos += n
        keys[:, :, old:] = key_states  # this step's own tokens attend to their exact keys and values
        values[:, :, old:] = value_states
        self._k.append(self._quantize(key_states.contiguous()))
        self._v.append(self._quantize(value_states.contiguous()))
        self.length = old + new
        if len(self._k) > 64:  # many one-token steps: merge them into one block (codes are unchanged)
            self._k = [tuple(torch.cat(ts, dim=-2) for ts in zip(*self._k))]
            self._v = [tuple(torch.cat(ts, dim=-2) for ts in zip(*self._v))]
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self._k, self._v, self.length, self.is_initialized = [], [], 0, False


def make_cache(llm: Any, mode: str):
    """A transformers ``Cache`` for ``mode`` (full, int8, int4, offload)."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    if mode == "full":
        return DynamicCache(config=llm.config)
    if mode == "offload":
        return DynamicCache(config=llm.config, offloading=True)
    bits = 8 if mode == "int8" else 4
    return Cache(layers=[QuantizedKVLayer(bits) for _ in range(llm.config.num_hidden_layers)])


def cache_bytes(cache: Any) -> int:
    """Bytes a filled cache holds (what the benchmark reports per token)."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, QuantizedKVLayer):
            total += layer.stored_bytes()
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            total += layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
    return total
