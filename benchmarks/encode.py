"""Encoding benchmark: overlap of decoding with the vision forward, flat memory, bytes per frame, int8
effect on tokens, and lazy opening of a long .vidtok. Everything compared is measured side by side in
this one run, on videos generated here with ffmpeg and random EVA-layout vision towers saved as
``eva_vit_g.pth`` files and loaded through the real loader (no downloads).

    .venv/bin/python benchmarks/encode.py            # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/encode.py --device cuda

(a) encode wall time (``encode_file``: decode + preprocess + forward + write) over the pure vision-forward
    time of the same frames, and over decode + forward run one after the other (what no overlap costs);
(b) peak RSS (VmHWM) of a fresh process encoding a 1-minute and a 60-minute video at 1 frame/s;
(c) bytes per frame of float16 and int8 (--compact) files, measured and for the real 257 x 1408 shape;
    the int8 error on features and on the context/content tokens of a tiny LLaMA-VID model;
(d) time to open a 10,800-frame .vidtok (3 hours at 1 frame/s) and read one 64-frame range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe as describe_machine  # benchmarks/machine.py (this script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llamavid import load_vision_encoder  # noqa: E402
from llamavid.features.encode import EncodeOptions, encode_file  # noqa: E402
from llamavid.features.vidtok import VidtokWriter, open_vidtok  # noqa: E402
from llamavid.media import video  # noqa: E402
from llamavid.model.vision import preprocess_frames  # noqa: E402

REAL_SHAPE = (257, 1408)


# ---------------------------------------------------------------------------------------------------------
# inputs made here


def make_tower(path: Path, *, width: int, blocks: int, mlp: int, seed: int = 0) -> Path:
    """A random EVA ViT in the LAVIS key layout of eva_vit_g.pth (224 px, patch 14, 16x16 grid)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, std=0.02: torch.randn(*shape, generator=g) * std  # noqa: E731
    sd = {"cls_token": r(1, 1, width, std=0.5), "pos_embed": r(1, 257, width, std=0.5),
          "patch_embed.proj.weight": r(width, 3, 14, 14, std=0.05), "patch_embed.proj.bias": r(width, std=0.05)}
    for i in range(blocks):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[b + norm + ".weight"], sd[b + norm + ".bias"] = 1 + r(width, std=0.1), r(width, std=0.1)
        sd[b + "attn.qkv.weight"] = r(3 * width, width, std=0.08)
        sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = r(width, std=0.1), r(width, std=0.1)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r(width, width, std=0.05), r(width, std=0.05)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r(mlp, width, std=0.05), r(mlp, std=0.05)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r(width, mlp, std=0.05), r(width, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def make_clip(path: Path, *, seconds: int, size: str, rate: int, gop: int = 250) -> Path:
    """A synthetic test-pattern video (moving content, so frames differ), H.264 ultrafast."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop),
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def sampled_pixels(path: Path, fps: float, image_size: int) -> tuple[torch.Tensor, float]:
    """All sampled frames, decoded and preprocessed serially (no overlap): (pixels, seconds taken)."""
    t0 = time.perf_counter()
    info = video.probe(path)
    parts = [preprocess_frames(c.frames, image_size) for c in video.sample_frames(path, fps, chunk_size=16, info=info)]
    return torch.cat(parts), time.perf_counter() - t0


def forward_seconds(encoder, pixels: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = torch.cat([encoder.encode_pixels(pixels[i : i + batch], batch_size=batch).float().cpu()
                     for i in range(0, len(pixels), batch)])
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------
# (b) runs in a fresh process so that its peak RSS is its own


def vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_child(video_path: str, tower: str, out: str, device: str) -> None:
    encoder = load_vision_encoder(vision_tower=tower, device=device, dtype="float32")
    encoder.encode_pixels(torch.zeros(8, 3, 224, 224), batch_size=8)  # build the module before the baseline
    before = vm_kb("VmRSS")
    trace: dict[int, int] = {}  # RSS (kB) after every 600 frames: flat means it stops growing

    def on_progress(done: int, total: int) -> None:
        if done // 600 * 600 not in trace and done >= 600:
            trace[done // 600 * 600] = vm_kb("VmRSS")

    t0 = time.perf_counter()
    result = encode_file(encoder, video_path, out, EncodeOptions(fps=1.0, force=True), on_progress=on_progress)
    print(json.dumps({"frames": result.frames, "seconds": time.perf_counter() - t0, "rss_before_kb": before,
                      "peak_kb": vm_kb("VmHWM"), "out_bytes": Path(out).stat().st_size, "trace": trace}))


def run_rss_child(video_path: Path, tower: Path, out: Path, device: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--rss-child", str(video_path), str(tower), str(out), device],
                          capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# (c) int8 through a tiny model


def int8_effect_on_tokens(work: Path, clip: Path) -> dict:
    """Tokens from float32 features (the reference), from a float16 .vidtok and from an int8 one."""
    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoint_fixture import build_tiny_checkpoint

    import llamavid

    tiny = build_tiny_checkpoint(work / "tiny")
    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    encoder = model.vision_encoder
    pixels, _ = sampled_pixels(clip, 1.0, encoder.image_size)
    reference = encoder.encode_pixels(pixels, batch_size=8).float()
    question = "What happens in the video?"
    ref_tokens = model.video_tokens(reference, question)
    out = {}
    for storage in ("float16", "int8"):
        path = work / f"tiny-{storage}.vidtok"
        encode_file(encoder, clip, path, EncodeOptions(fps=1.0, storage=storage, batch_size=8, force=True))
        with open_vidtok(path) as vt:
            feats = vt.features()
            tokens = model.video_tokens(vt, question)
        ctx, ref_ctx = tokens[:, 0], ref_tokens[:, 0]
        cnt, ref_cnt = tokens[:, 1:], ref_tokens[:, 1:]
        out[storage] = {
            "feature_max_abs": float((feats - reference).abs().max()),
            "feature_rel": float((feats - reference).abs().mean() / reference.abs().mean()),
            "context_max_abs": float((ctx - ref_ctx).abs().max()),
            "context_rel": float((ctx - ref_ctx).abs().mean() / ref_ctx.abs().mean()),
            "content_max_abs": float((cnt - ref_cnt).abs().max()),
            "content_rel": float((cnt - ref_cnt).abs().mean() / ref_cnt.abs().mean()),
            "token_scale": float(ref_tokens.abs().mean()),
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# (d) a 3-hour .vidtok


def long_vidtok(work: Path, frames: int, shape: tuple[int, int]) -> dict:
    path = work / "movie.vidtok"
    t0 = time.perf_counter()
    writer = VidtokWriter(path, encoder={"fingerprint": "bench:random"}, fps=1.0,
                          source={"name": "movie.mkv", "content_hash": "s1:bench"}, chunk_frames=64)
    g = torch.Generator().manual_seed(0)
    for start in range(0, frames, 64):
        n = min(64, frames - start)
        writer.append(torch.randn(n, *shape, generator=g), np.arange(start, start + n, dtype=np.float64))
    writer.finalize()
    write_s = time.perf_counter() - t0
    opens, reads = [], []
    mid = frames // 2 // 64 * 64
    for _ in range(5):
        t0 = time.perf_counter()
        vt = open_vidtok(path)
        t1 = time.perf_counter()
        part = vt.features(mid, mid + 64)
        t2 = time.perf_counter()
        vt.close()
        opens.append(t1 - t0)
        reads.append(t2 - t1)
        assert part.shape == (64, *shape)
    return {"frames": frames, "shape": list(shape), "range": [mid, mid + 63], "bytes": path.stat().st_size,
            "write_s": write_s,
            "open_s": statistics.median(opens), "read64_s": statistics.median(reads)}


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=352, help="mid-size encoder width (multiple of 88)")
    parser.add_argument("--blocks", type=int, default=6, help="blocks in the mid-size encoder's file")
    parser.add_argument("--long-minutes", type=int, default=60)
    parser.add_argument("--movie-frames", type=int, default=10_800)
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    work = Path(tempfile.mkdtemp(prefix="llamavid-bench-encode-"))
    t_start = time.perf_counter()
    try:
        print(f"machine: {describe_machine()}; device {args.device}; load average "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        mid = make_tower(work / "mid" / "eva_vit_g.pth", width=args.width, blocks=args.blocks, mlp=4 * args.width)
        small = make_tower(work / "small" / "eva_vit_g.pth", width=88, blocks=2, mlp=352, seed=1)
        clip = make_clip(work / "clip.mp4", seconds=60, size="640x360", rate=30)
        short = make_clip(work / "one-minute.mp4", seconds=60, size="160x90", rate=2)
        long = make_clip(work / "long.mp4", seconds=60 * args.long_minutes, size="160x90", rate=2)

        # (a) overlap
        encoder = load_vision_encoder(vision_tower=mid, device=args.device, dtype="float32")
        ident = encoder.identity()
        batch = 8 if args.device == "cpu" else 32
        encoder.encode_pixels(torch.zeros(batch, 3, 224, 224), batch_size=batch)  # build + warm up
        # The machine may be shared: alternate the two measurements and keep each one's best of 3.
        encodes, forwards = [], []
        pixels, t_decode = sampled_pixels(clip, 1.0, encoder.image_size)
        for _ in range(3):
            t0 = time.perf_counter()
            enc = encode_file(encoder, clip, work / "clip-f16.vidtok",
                              EncodeOptions(fps=1.0, batch_size=batch, force=True))
            encodes.append(time.perf_counter() - t0)
            reference, t = forward_seconds(encoder, pixels, batch)
            forwards.append(t)
        t_encode, t_forward = min(encodes), min(forwards)
        print(f"(a) mid encoder width {ident['width']} depth {ident['depth']}, {enc.frames} frames of a 60 s "
              f"640x360 30 fps clip at 1 frame/s, batch {batch} (best of 3, alternated):", flush=True)
        print(f"    encode (decode||forward + write) {t_encode:7.2f} s | pure forward {t_forward:7.2f} s | "
              f"decode+preprocess alone {t_decode:6.2f} s | serial sum {t_decode + t_forward:7.2f} s", flush=True)
        print(f"    runs: encode {', '.join(f'{x:.2f}' for x in encodes)} s; forward "
              f"{', '.join(f'{x:.2f}' for x in forwards)} s", flush=True)
        print(f"    encode / forward = {t_encode / t_forward:.3f}   encode / (decode + forward) = "
              f"{t_encode / (t_decode + t_forward):.3f}", flush=True)

        # (c) bytes per frame and int8 error
        encode_file(encoder, clip, work / "clip-i8.vidtok",
                    EncodeOptions(fps=1.0, storage="int8", batch_size=batch, force=True))
        with open_vidtok(work / "clip-f16.vidtok") as a, open_vidtok(work / "clip-i8.vidtok") as b:
            fa, fb, n = a.features(), b.features(), a.num_frames
        sizes = {m: (work / f"clip-{m}.vidtok").stat().st_size for m in ("f16", "i8")}
        tokens, channels = fa.shape[1:]
        real_f16 = REAL_SHAPE[0] * REAL_SHAPE[1] * 2 + 8
        real_i8 = REAL_SHAPE[0] * REAL_SHAPE[1] + REAL_SHAPE[0] * 4 + 8
        print(f"(c) bytes/frame ({tokens}x{channels}, file incl. header): float16 {sizes['f16'] / n:,.0f} | "
              f"int8 {sizes['i8'] / n:,.0f} (ratio {sizes['i8'] / sizes['f16']:.3f}); real {REAL_SHAPE[0]}x"
              f"{REAL_SHAPE[1]}: float16 {real_f16:,} | int8 {real_i8:,} "
              f"(3 h at 1 fps: {real_f16 * 10800 / 1e9:.2f} GB | {real_i8 * 10800 / 1e9:.2f} GB)", flush=True)
        for name, feats in (("float16", fa), ("int8", fb)):
            err = (feats - reference).abs()
            print(f"    mid encoder {name:7s} vs float32 features: max abs {float(err.max()):.4g}, mean abs "
                  f"{float(err.mean()):.4g} (mean |x| {float(reference.abs().mean()):.4g}, rel "
                  f"{float(err.mean() / reference.abs().mean()):.3%})", flush=True)
        del encoder, pixels, reference, fa, fb
        effect = int8_effect_on_tokens(work, short)
        for name, e in effect.items():
            print(f"    tiny model {name:7s} vs float32: features rel {e['feature_rel']:.3%} | context token max abs "
                  f"{e['context_max_abs']:.4g} rel {e['context_rel']:.3%} | content tokens max abs "
                  f"{e['content_max_abs']:.4g} rel {e['content_rel']:.3%} (token mean |x| {e['token_scale']:.4g})",
                  flush=True)

        # (b) flat memory
        ten = make_clip(work / "ten.mp4", seconds=600, size="160x90", rate=2)
        runs = [("1 min", run_rss_child(short, small, work / "one.vidtok", args.device)),
                ("10 min", run_rss_child(ten, small, work / "ten.vidtok", args.device)),
                (f"{args.long_minutes} min", run_rss_child(long, small, work / "long.vidtok", args.device)),
                (f"{args.long_minutes} min*", run_rss_child(long, small, work / "long.vidtok", args.device,
                                                             {"MALLOC_MMAP_THRESHOLD_": "65536"}))]
        print("(b) small encoder (width 88, depth 2), 160x90 2 fps sources at 1 frame/s, fresh process each "
              "(* = glibc MALLOC_MMAP_THRESHOLD_=65536):", flush=True)
        for label, r in runs:
            print(f"    {label:8s} {r['frames']:5d} frames: peak RSS {r['peak_kb'] / 1024:7.1f} MiB (after load "
                  f"{r['rss_before_kb'] / 1024:6.1f} MiB, +{(r['peak_kb'] - r['rss_before_kb']) / 1024:5.1f}), "
                  f"{r['seconds']:6.1f} s, {r['frames'] / r['seconds']:5.1f} frames/s, output "
                  f"{r['out_bytes'] / 1e6:.1f} MB", flush=True)
        for label, r in runs[2:]:
            print(f"    {label:8s} RSS after frames " + ", ".join(f"{k}: {v / 1024:.0f}" for k, v in r["trace"].items())
                  + " MiB", flush=True)
        print(f"    peak {runs[2][0]} / 10 min = {runs[2][1]['peak_kb'] / runs[1][1]['peak_kb']:.3f}; "
              f"/ 1 min = {runs[2][1]['peak_kb'] / runs[0][1]['peak_kb']:.3f}", flush=True)

        # (d) a 3-hour file
        shape = (257, 176)
        d = long_vidtok(work, args.movie_frames, shape)
        print(f"(d) {d['frames']:,} frames x {shape[0]}x{shape[1]} float16 ({d['bytes'] / 1e9:.2f} GB, written in "
              f"{d['write_s']:.1f} s): open {d['open_s'] * 1e3:.2f} ms | read frames {d['range'][0]}-{d['range'][1]} "
              f"{d['read64_s'] * 1e3:.2f} ms ({d['read64_s'] / 64 * 1e6:.0f} us/frame, "
              f"{d['bytes'] / d['frames'] / 1e3:.1f} kB/frame; real shape is "
              f"{real_f16 / (d['bytes'] / d['frames']):.1f}x "
              f"the bytes per frame)", flush=True)
        print(f"total benchmark time {time.perf_counter() - t_start:.0f} s; load average now "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine perturbs timings)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
