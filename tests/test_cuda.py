"""On a CUDA GPU: bf16 loading and answering, encoding, and agreement with the CPU on the tiny fixture.

Skipped on machines without CUDA; ``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda``). Tolerances:
float32 on CUDA (TF32 off) vs float32 on the CPU: relative error < 1e-3 on features and tokens; bfloat16 on
CUDA vs float32 on the CPU: < 3e-2 (bf16 keeps 8 bits of mantissa: ~0.4% per rounding, over a few layers).
"""

from __future__ import annotations

import pytest
import torch

import llamavid

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

FP32_TOL, BF16_TOL = 1e-3, 3e-2


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_default_load_on_cuda_is_bf16_and_answers(tiny):
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path)
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    feats = torch.randn(4, 257, 176, generator=torch.Generator().manual_seed(0))
    answer = model.answer(feats, "What color?", sampling=llamavid.SamplingOptions(temperature=0, max_new_tokens=6))
    assert answer.frames == 4 and answer.new_tokens <= 6


def test_encode_and_tokens_on_cuda_agree_with_the_cpu(tiny, tiny_model):
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cpu = tiny_model.encode_images(pixels)
    for dtype, tol in (("float32", FP32_TOL), ("bfloat16", BF16_TOL)):
        model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cuda", dtype=dtype)
        feats = model.encode_images(pixels.cuda())
        assert feats.device.type == "cuda"
        assert rel(feats, cpu) < tol, (dtype, rel(feats, cpu))
        tokens = model.video_tokens(cpu.cuda(), "What color is the shape?")
        ref = tiny_model.video_tokens(cpu, "What color is the shape?")
        assert rel(tokens, ref) < tol, (dtype, rel(tokens, ref))


def test_greedy_answers_on_cuda_float32_equal_the_cpu(tiny, tiny_model):
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cuda", dtype="float32")
    feats = torch.randn(5, 257, 176, generator=torch.Generator().manual_seed(2))
    greedy = llamavid.SamplingOptions(temperature=0, max_new_tokens=8)
    for q in ("What color?", "How many shapes are there?", "Describe the video."):
        assert model.answer(feats, q, sampling=greedy).text == tiny_model.answer(feats, q, sampling=greedy).text


@pytest.mark.parametrize("mode", ["int8", "int4", "offload"])
def test_kv_cache_modes_on_cuda(tiny, mode):
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cuda", dtype="float32", kv_cache=mode)
    ref = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cuda", dtype="float32", kv_cache="full")
    feats = torch.randn(6, 257, 176, generator=torch.Generator().manual_seed(3))
    greedy = llamavid.SamplingOptions(temperature=0, max_new_tokens=6)
    got = model.answer(feats, "What color?", sampling=greedy)
    assert got.new_tokens >= 0
    if mode in ("int8", "offload"):  # offload keeps full precision; int8 stays within rounding of it here
        assert got.text == ref.answer(feats, "What color?", sampling=greedy).text
