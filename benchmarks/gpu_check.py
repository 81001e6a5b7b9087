"""The GPU parts of ``benchmarks/gpu_check.sh``: vision-encoder throughput and MFU, CUDA-vs-CPU agreement on the
tiny fixture, and the one summary table. Run by the shell script; ``--device cpu`` dry-runs the logic here.

    .venv/bin/python benchmarks/gpu_check.py vision --out DIR      # frames/s and MFU at batch 16..128
    .venv/bin/python benchmarks/gpu_check.py agree --out DIR       # CUDA vs CPU features, tokens, answers
    .venv/bin/python benchmarks/gpu_check.py table --out DIR       # every step's figures in one table

FLOPs of EVA ViT-g per 224 px frame (multiply-add = 2 FLOPs), N = 257 tokens, d = 1408, MLP m = 6144, 39 blocks:
per block 2N(3d^2 + d^2 + 2dm) (qkv, proj, fc1, fc2) + 4N^2 d (scores and weighted sum); plus the patch
embedding 2 x 256 x (3 x 14 x 14) x d. That is 520.7 GFLOP per frame (``eva_flops_per_frame``).
Peak dense bf16 FLOPS: looked up by device name (NVIDIA data sheets, dense, no sparsity).
Tolerances of the agreement check: float32 CUDA (TF32 off) vs float32 CPU, relative error < 1e-3; bf16 CUDA
vs float32 CPU < 3e-2; greedy answers of float32 CUDA equal the CPU's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FP32_TOL, BF16_TOL = 1e-3, 3e-2

# Dense bf16 tensor-core peak, TFLOPS, from NVIDIA's data sheets (first matching name wins).
PEAK_BF16_TFLOPS = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
    ("B200", 2250.0), ("B100", 1750.0), ("A100", 312.0), ("A800", 312.0), ("A30", 165.0), ("A10G", 70.0),
    ("A10", 125.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("RTX 6000 Ada", 364.0), ("RTX 4090", 165.0),
    ("RTX 3090", 71.0), ("A6000", 155.0),
)


def eva_flops_per_frame(n: int = 257, d: int = 1408, m: int = 6144, depth: int = 39, patch: int = 14) -> float:
    block = 2 * n * (3 * d * d + d * d + 2 * d * m) + 4 * n * n * d
    embed = 2 * (n - 1) * (3 * patch * patch) * d
    return depth * block + embed


def peak_bf16_flops(name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def vision(args) -> dict:
    """Frames/s of the real-shape EVA ViT-g (random weights, built in bf16 on the device) per batch size."""
    import torch

    from llamavid.model.vision import EvaVisionTransformer, VisionConfig

    dev = torch.device(args.device)
    dtype = torch.bfloat16
    cfg = VisionConfig(width=args.width, depth=args.depth, heads=args.width // 88, mlp_width=args.mlp)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = EvaVisionTransformer(cfg)
    model = model.to_empty(device=dev).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.eval().requires_grad_(False)
    flops = eva_flops_per_frame(cfg.num_tokens, cfg.width, cfg.mlp_width, cfg.depth, cfg.patch_size)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = peak_bf16_flops(name) if dev.type == "cuda" else None
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, 224, 224, device=dev, dtype=dtype)
        with torch.inference_mode():
            model(x)  # warm-up (kernels, allocator)
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                model(x)
            _sync(dev)
        seconds = (time.perf_counter() - t0) / args.iters
        fps = batch / seconds
        rows.append({"batch": batch, "frames_per_s": fps, "tflops": fps * flops / 1e12,
                     "mfu": fps * flops / peak if peak else None})
        print(f"vision batch {batch}: {fps:,.1f} frames/s, {fps * flops / 1e12:.1f} TFLOPS"
              + (f", MFU {100 * fps * flops / peak:.1f}%" if peak else ""), flush=True)
    return {"device": name, "gflop_per_frame": flops / 1e9, "peak_tflops": peak / 1e12 if peak else None,
            "width": cfg.width, "depth": cfg.depth, "rows": rows}


def rel(a, b) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return ((a - b).norm() / b.norm()).item()


def agree(args) -> dict:
    """The tiny fixture on the CPU (float32, the reference) and on the device (float32 and bf16)."""
    import torch
    from checkpoint_fixture import build_tiny_checkpoint

    import llamavid

    if torch.device(args.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tmp = Path(tempfile.mkdtemp(prefix="llamavid-gpu-check-"))
    fx = build_tiny_checkpoint(tmp)
    ref = llamavid.load_model(fx.path, vision_tower=fx.vision_path, device="cpu", dtype="float32")
    pixels = torch.randn(6, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    feats = ref.encode_images(pixels)
    questions = ["What color is the shape?", "How many shapes are there?", "What happens first?",
                 "Describe the video.", "Who is Murphy?", "What shape moves?"]
    greedy = llamavid.AskOptions(temperature=0, max_new_tokens=8)
    ref_answers = [llamavid.answer_features(ref, feats, q, greedy).text for q in questions]
    ref_tokens = ref.video_tokens(feats, questions[0])
    out = {}
    for dtype, tol in (("float32", FP32_TOL), ("bfloat16", BF16_TOL)):
        model = llamavid.load_model(fx.path, vision_tower=fx.vision_path, device=args.device, dtype=dtype)
        f = model.encode_images(pixels.to(model.device))
        t = model.video_tokens(feats.to(model.device), questions[0])
        answers = [llamavid.answer_features(model, feats, q, greedy).text for q in questions]
        same = sum(a == b for a, b in zip(answers, ref_answers))
        out[dtype] = {"features_rel": rel(f, feats), "tokens_rel": rel(t, ref_tokens), "tolerance": tol,
                      "answers_identical": same, "answers": len(questions),
                      "ok": rel(f, feats) < tol and rel(t, ref_tokens) < tol
                      and (dtype != "float32" or same == len(questions))}
        print(f"agree {args.device} {dtype}: features rel {out[dtype]['features_rel']:.2e}, tokens rel "
              f"{out[dtype]['tokens_rel']:.2e} (tolerance {tol:g}); greedy answers identical {same}/{len(questions)}",
              flush=True)
    return out


def table(args) -> None:
    """Every step's status and figures, one table."""
    out = Path(args.out)
    lines = (out / "steps.jsonl").read_text().splitlines() if (out / "steps.jsonl").exists() else []
    steps = [json.loads(line) for line in lines if line.strip()]
    rows = [("step", "status", "figures")]
    for step in steps:
        rows.append((step["name"], step["status"], step.get("note", "")))
    v = _load(out / "vision.json")
    if v:
        for r in v["rows"]:
            mfu = f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") else ""
            rows.append((f"vision batch {r['batch']}", "measured", f"{r['frames_per_s']:,.1f} frames/s, "
                         f"{r['tflops']:.1f} TFLOPS{mfu} ({v['gflop_per_frame']:.1f} GFLOP/frame, peak "
                         f"{v['peak_tflops'] or 'unknown'} TFLOPS bf16, {v['device']})"))
    a = _load(out / "agree.json")
    if a:
        for dtype, r in a.items():
            rows.append((f"CUDA vs CPU, {dtype}", "pass" if r["ok"] else "FAIL",
                         f"features rel {r['features_rel']:.1e}, tokens rel {r['tokens_rel']:.1e} (< "
                         f"{r['tolerance']:g}); "
                         f"answers identical {r['answers_identical']}/{r['answers']}"))
    rs = _load(out / "realsize.json")
    if rs:
        ck = rs.get("checkpoint_bytes", 1)
        if "load" in rs and "error" not in rs["load"]:
            rows.append(("7B load", "measured", f"{rs['load']['seconds']:.1f} s, {rs['load']['dtype']}"))
        if "ask" in rs and "error" not in rs["ask"]:
            rows.append(("7B ask .vidtok", "measured", f"{rs['ask']['seconds']:.1f} s, host peak "
                         f"{rs['ask']['peak'] / ck:.2f} x checkpoint, vision built {rs['ask']['vision_built']}x"))
        if "llm" in rs and "error" not in rs["llm"]:
            rows.append(("7B LLM", "measured", f"prefill {rs['llm']['prefill_tokens_per_s']:,.0f} tokens/s, decode "
                         f"{rs['llm']['decode_tokens_per_s']:.1f} tokens/s ({rs['llm']['dtype']})"))
        for run in rs.get("kv", {}).get("runs", []):
            if "error" not in run and "cuda_peak" in run:
                rows.append((f"KV {run['mode']} depth {run['depth']} {run['tokens']:,}", "measured",
                             f"{run['cache_bytes'] / run['tokens']:,.0f} B/token, device peak "
                             f"{run['cuda_peak'] / 1e9:.2f} GB, "
                             f"prefill {run['prefill_s']:.1f} s"))
    width = [max(len(str(r[i])) for r in rows) for i in range(2)]
    for i, r in enumerate(rows):
        print(f"| {r[0]:<{width[0]}} | {r[1]:<{width[1]}} | {r[2]} |")
        if i == 0:
            print(f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|---|")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["vision", "agree", "table"])
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="16,32,64,128")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--width", type=int, default=1408)
    parser.add_argument("--depth", type=int, default=39)
    parser.add_argument("--mlp", type=int, default=6144)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.what == "table":
        table(args)
        return
    result = vision(args) if args.what == "vision" else agree(args)
    (Path(args.out) / f"{args.what}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
