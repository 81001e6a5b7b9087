"""Chapters benchmark: boundary finding and per-chapter answers on one-hour token files.

    .venv/bin/python benchmarks/chapters.py            # a few minutes (renders and encodes a one-hour video)
    .venv/bin/python benchmarks/chapters.py --no-eva   # skip the 2.6 GB published-encoder-sized file

(a) The shipped demo model on a one-hour synthetic video (12 scenes of about 5 minutes, rendered at 1 frame/s,
    encoded once into a .vidtok): `summarize --chapters` through the library, i.e. boundary finding (reading
    every frame's features, checksums included) and then a title and a summary per chapter. The boundaries
    are compared with the true scene changes.
(b) A one-hour .vidtok of the published EVA encoder's size (3,600 x 257 x 1,408 float16 features, 2.6 GB;
    features made up with a change every 5 minutes, written with the real writer): boundary finding only,
    from a cold reader (checksums verified as blocks are read).
Wall time and CPU time (user + sys of this process) are reported for each step.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llamavid  # noqa: E402
from llamavid.core.options import AskOptions  # noqa: E402
from llamavid.data import synthetic as syn  # noqa: E402
from llamavid.features.vidtok import VidtokWriter, open_vidtok  # noqa: E402
from llamavid.pipeline.inputs import open_input  # noqa: E402
from llamavid.tasks.chapters import find_boundaries, frame_vectors, make_chapters  # noqa: E402


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(fn):
    w0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return time.perf_counter() - w0, _cpu() - c0, out


def demo_hour(root: Path) -> None:
    model = llamavid.load_model("demo", device="cpu", dtype="float32")
    [clip] = syn.make_extra_clips("test", "scenes", 1, seed=99, scenes=(12, 12), scene_seconds=(290.0, 310.0))
    clip.fps = 1.0
    w, c, _ = timed(lambda: syn.write_split([clip], root / "hour"))
    video = root / "hour" / "videos" / f"{clip.id}.mp4"
    print(f"(a) rendered {clip.seconds:g} s of video in {w:.1f} s", flush=True)
    w, c, vin = timed(lambda: open_input(model, video, AskOptions()))
    print(f"    encoded {vin.num_frames} frames with the demo encoder in {w:.1f} s wall, {c:.1f} s CPU", flush=True)
    vin.close()
    [tok] = (root / "cache" / "vidtok").glob("*.vidtok")
    with open_input(model, tok, AskOptions()) as vin:
        w, c, bounds = timed(lambda: find_boundaries(vin.timestamps, frame_vectors(vin.features)))
        times = [float((vin.timestamps[i - 1] + vin.timestamps[i]) / 2) for i in bounds]
        truth = [start for start, _ in clip.scenes[1:]]
        found = sum(min(abs(t - x) for t in times) <= 1.0 for x in truth) if times else 0
        false = sum(min(abs(t - x) for x in truth) > 1.0 for t in times)
        print(f"    boundary finding on the .vidtok ({tok.stat().st_size / 1e6:.0f} MB): {w:.2f} s wall, "
              f"{c:.2f} s CPU; "
              f"{len(times)} boundaries, {found}/{len(truth)} true changes within 1 s, {false} false "
              "(farther than 1 s from every true change)", flush=True)
    with open_input(model, tok, AskOptions()) as vin:
        w, c, result = timed(lambda: make_chapters(model, vin, AskOptions(temperature=0.0, max_new_tokens=16)))
    print(f"    summarize --chapters (cold reader): {w:.2f} s wall, {c:.2f} s CPU in all; boundary finding "
          f"{result.boundary_seconds:.2f} s of it; {len(result.chapters)} chapters", flush=True)


def eva_hour(root: Path, frames: int = 3600, change_every: int = 300) -> None:
    path = root / "eva-hour.vidtok"
    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(frames // change_every + 1, 1408)).astype(np.float32)
    writer = VidtokWriter(path, encoder={"fingerprint": "sha256:bench-eva-sized"}, fps=1.0,
                          source={"content_hash": "sha256:bench", "name": "hour", "duration": float(frames)},
                          storage="float16", chunk_frames=64)
    t0 = time.perf_counter()
    for start in range(0, frames, 64):
        n = min(64, frames - start)
        base = scenes[(np.arange(start, start + n) // change_every)]
        feats = base[:, None, :] + 0.5 * rng.normal(size=(n, 257, 1408)).astype(np.float32)
        writer.append(feats, [float(t) for t in range(start, start + n)])
    writer.finalize()
    print(f"(b) wrote {path.stat().st_size / 1e9:.2f} GB ({frames} x 257 x 1408 float16) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    with open_vidtok(path) as vt:
        w, c, bounds = timed(lambda: find_boundaries(vt.timestamps, frame_vectors(vt)))
    expected = list(range(change_every, frames, change_every))
    print(f"    boundary finding from a cold reader: {w:.2f} s wall, {c:.2f} s CPU; boundaries at the "
          f"{change_every}-s changes: {bounds == expected}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-eva", action="store_true", help="skip (b), which writes a 2.6 GB file")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="llamavid-bench-chapters-") as tmp:
        root = Path(tmp)
        os.environ["LLAMAVID_CACHE"] = str(root / "cache")
        demo_hour(root)
        if not args.no_eva:
            eva_hour(root)


if __name__ == "__main__":
    main()
