"""Decoding benchmark: every decoder available, on sampling at 1 frame/s plus the preprocessing to the
224x224 pixels the vision encoder takes, against the ffmpeg program as the anchor. Everything compared is
measured side by side in this one run, interleaved, on clips generated here; medians are reported.

    .venv/bin/python benchmarks/decode.py                 # ~10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/decode.py --repeats 3 --seconds 60

Clips: ffmpeg ``testsrc2`` at 24 fps, 1920x1080 and 640x360, ``--seconds`` long (120), H.264 from libx264
``-preset veryfast`` with x264's default GOP (a keyframe at least every 250 frames, more at scene cuts;
3 B-frames with a B-pyramid), i.e. what ``ffmpeg -i x -c:v libx264`` writes. ``--no-bframes`` adds a
1080p clip without B-frames (every frame a reference frame: nothing to skip but group tails).

(a) Decoders, each timed from the file path to the normalized (n, 3, 224, 224) tensor:
    anchor         ``ffmpeg -i clip -vf fps=1,scale=-2:224,crop=224:224 -f rawvideo -pix_fmt rgb24 -`` read
                   into memory: decode + sample + scale in one optimized program, a lower bound (its
                   swscale resize is not the published PIL one, see (c));
    pyav           llamavid's default: ``video.probe`` + ``video.sample_frames`` (one worker) +
                   ``vision.preprocess_frames``, as ``encode`` does;
    pyav-full      PyAV decoding every frame (no skipping), the planned ones kept: llamavid's PyAV path
                   before this benchmark;
    pyav-2workers  ``sample_frames(workers=2)`` + preprocessing;
    decord         ``backend="decord"`` (its batches) + preprocessing, when decord is installed;
    ffmpeg-pipe    ``backend="ffmpeg"`` (the ffmpeg program selecting the planned frames) + preprocessing;
    torchcodec     ``VideoDecoder(...).get_frames_at(...)`` + preprocessing, when it imports (else the
                   error is printed).
(b) Parallel segments: ``sample_frames`` alone (no preprocessing) with 1 worker and 2 workers, each
    with 1 decoder thread (the speed-up of segments; also as the critical path, the CPU time of the
    busiest worker), and 1 worker with the decoder's own threads (the default) against 2 workers; a
    control of GIL-free zlib work on 1 and 2 threads shows what a second thread can gain on the machine
    at the time (on a shared machine whose kernel shares CPU by session, "autogroup", next to nothing).
(c) Fidelity: max / mean absolute difference of the normalized pixels against the published
    preprocessing (PIL bicubic shortest edge 224 + centre crop) of a full PyAV decode of the same frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llamavid.media import video  # noqa: E402
from llamavid.model.vision import CLIP_MEAN, CLIP_STD, preprocess_frames  # noqa: E402

FPS = 1.0
CHUNK = 16  # frames per preprocessing call, as encode's batches (min(batch, 16))


# ---------------------------------------------------------------------------------------------------------
# clips


def make_clip(path: Path, size: str, seconds: int, *, bframes: bool = True) -> Path:
    if path.exists():
        return path
    args = ["-preset", "veryfast"] + ([] if bframes else ["-bf", "0"])
    tmp = path.with_suffix(".part.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=24", "-t",
                    str(seconds),
                    "-c:v", "libx264", *args, "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.rename(path)
    return path


def clip_facts(path: Path) -> str:
    info = video.probe(path)
    index = video._Index.of(info)
    groups = len(index.starts) if index is not None else 0
    return (f"{info.width}x{info.height}, {info.frame_count} frames, {groups} keyframes, "
            f"{path.stat().st_size / 1e6:.1f} MB")


# ---------------------------------------------------------------------------------------------------------
# contenders: each returns the normalized pixels (n, 3, 224, 224)


def _pixels(chunks) -> torch.Tensor:
    out = [preprocess_frames(c) for c in chunks]
    return torch.cat(out) if out else torch.empty(0, 3, 224, 224)


def anchor(path: Path) -> torch.Tensor:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vf",
                          f"fps={FPS:g},scale=-2:224,crop=224:224",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(-1, 224, 224, 3).copy())
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def llamavid_sampling(backend: str, workers: int | None = 1) -> Callable[[Path], torch.Tensor]:
    def run(path: Path) -> torch.Tensor:
        info = video.probe(path, backend)
        return _pixels(c.frames for c in video.sample_frames(path, FPS, chunk_size=CHUNK, info=info, workers=workers))
    return run


def pyav_full(path: Path) -> torch.Tensor:
    """Every frame decoded (frame threads, no skipping); the planned ones converted and preprocessed."""
    import av

    info = video.probe(path, "pyav")
    keep = {round(t, 6) for t in video.sample_times(info, FPS)}

    def chunks():
        buf = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if round(float(frame.pts * stream.time_base) - info.start_time, 6) in keep:
                    buf.append(frame.to_ndarray(format="rgb24"))
                    if len(buf) == CHUNK:
                        yield np.stack(buf)
                        buf = []
        if buf:
            yield np.stack(buf)

    return _pixels(chunks())


def torchcodec_probe() -> str | None:
    """None when torchcodec decodes here, else why not (one line)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        causes = [exc]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        import importlib.metadata as md

        try:
            version = md.version("torchcodec")
        except md.PackageNotFoundError:
            version = "not installed"
        return f"torchcodec {version}: " + " <- ".join(f"{type(c).__name__}: {str(c).splitlines()[0][:160]}"
                                                       for c in causes)
    return None


def torchcodec_run(path: Path) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    info = video.probe(path, "pyav")
    indices = [i for i, _ in video._plan(info, FPS)]
    decoder = VideoDecoder(str(path), device="cpu", seek_mode="exact")
    out = []
    for a in range(0, len(indices), CHUNK):
        batch = decoder.get_frames_at(indices[a : a + CHUNK]).data  # (n, 3, H, W) uint8
        out.append(preprocess_frames(batch.permute(0, 2, 3, 1).numpy()))
    return torch.cat(out)


WORKER_CPU: dict[str, float] = {}  # CPU seconds of each decoding thread in the last sampling_only run


def sampling_only(workers: int, threads: int | None) -> Callable[[Path], int]:
    """sample_frames alone (no preprocessing). ``threads``: each worker's decoder threads, forced; with 1
    the decoding runs in the worker thread itself, so that thread's CPU time is all of its work."""
    def run(path: Path) -> int:
        info = video.probe(path)
        if threads is None:
            return sum(len(c.frames)
                       for c in video.sample_frames(path, FPS, chunk_size=CHUNK, info=info, workers=workers))
        todo = [(k, i, t) for k, (i, t) in enumerate(video._plan(info, FPS))]
        segments = video._segments(info, todo, workers)
        problems = video._Problems(path.name)
        WORKER_CPU.clear()

        def decode(seg, _th, stop):
            t0 = time.thread_time()
            try:
                yield from video._decode_pyav(path, info, seg, threads, problems, stop)
            finally:
                name = threading.current_thread().name
                WORKER_CPU[name] = WORKER_CPU.get(name, 0.0) + time.thread_time() - t0

        return sum(1 for _ in video._in_order(decode, segments, workers, threads))
    return run


# ---------------------------------------------------------------------------------------------------------
# measuring


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def interleaved(contenders: dict[str, Callable[[Path], object]], path: Path,
                repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, cpu) of every contender, ``repeats`` rounds; the order rotates each round."""
    names = list(contenders)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            c0, t0 = cpu_seconds(), time.perf_counter()
            contenders[name](path)
            times[name].append((time.perf_counter() - t0, cpu_seconds() - c0))
    return times


def median(values) -> float:
    return statistics.median(list(values))


def fidelity(ref: torch.Tensor, got: torch.Tensor) -> str:
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    d = (got - ref).abs()
    return f"{d.max().item():.4f} / {d.mean().item():.6f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "llamavid-decode-bench")
    ap.add_argument("--no-bframes", action="store_true", help="also a 1080p clip without B-frames")
    ap.add_argument("--skip-360p", action="store_true")
    ap.add_argument("--sections", default="abc", help="which of (a), (b), (c) to run, e.g. 'a' or 'bc'")
    ap.add_argument("--decoders", default="",
                    help="comma-separated name prefixes for (a) and (c), e.g. 'anchor,pyav ('")
    args = ap.parse_args()
    if args.repeats < 1 or args.seconds < 10:
        ap.error("--repeats must be >= 1 and --seconds >= 10")
    if not set(args.sections) <= set("abc") or not args.sections:
        ap.error("--sections takes letters among a, b, c")
    torch.set_num_threads(1)  # preprocessing is PIL work per frame; torch threads would only contend
    args.workdir.mkdir(parents=True, exist_ok=True)
    clips = {"1080p": make_clip(args.workdir / f"testsrc2-1080p-{args.seconds}s.mp4", "1920x1080", args.seconds)}
    if args.no_bframes:
        clips["1080p, no B-frames"] = make_clip(args.workdir / f"testsrc2-1080p-{args.seconds}s-nob.mp4", "1920x1080",
                                               args.seconds, bframes=False)
    if not args.skip_360p:
        clips["360p"] = make_clip(args.workdir / f"testsrc2-360p-{args.seconds}s.mp4", "640x360", args.seconds)

    import av

    print(f"# machine: {platform.processor() or platform.machine()}, {video.available_cpus()} cores, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; python {platform.python_version()}, "
          f"torch {torch.__version__}, PyAV {av.__version__} (FFmpeg libavcodec "
          f"{'.'.join(map(str, av.library_versions['libavcodec']))}), "
          f"{subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split()[2]} ffmpeg program")
    contenders: dict[str, Callable[[Path], object]] = {
        "anchor (ffmpeg -vf fps,scale)": anchor,
        "pyav (llamavid default)": llamavid_sampling("pyav"),
        "pyav-full (no skipping)": pyav_full,
        "pyav-2workers": llamavid_sampling("pyav", workers=2),
        "ffmpeg-pipe": llamavid_sampling("ffmpeg"),
    }
    if video.decord_available():
        contenders["decord"] = llamavid_sampling("decord")
    else:
        print("# decord: not installed (pip install 'llamavid[decord]')")
    why_not = torchcodec_probe()
    if why_not is None:
        contenders["torchcodec"] = torchcodec_run
    else:
        print(f"# torchcodec unavailable: {why_not}")
    if args.decoders:
        prefixes = [p.strip() for p in args.decoders.split(",") if p.strip()]
        contenders = {n: f for n, f in contenders.items() if n.startswith("anchor")
                      or any(n.startswith(p) for p in prefixes)}

    if "a" in args.sections:
        run_a(args, clips, contenders)
    if "b" in args.sections:
        run_b(args, clips)
    if "c" in args.sections:
        run_c(clips, contenders)
    print(f"\n# load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def run_a(args, clips, contenders) -> None:
    print(f"\n## (a) sampling at {FPS:g} frame/s + preprocessing to 224x224, medians of {args.repeats} "
          "interleaved runs\n")
    print("ratio to anchor: of the medians; paired: the median over rounds of (this run / the anchor's run in the"
          " same round), less sensitive to the load drifting between rounds.\n")
    print("| clip | decoder | seconds | ratio to anchor | paired ratio | CPU seconds | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for label, path in clips.items():
        results[label] = times = interleaved(contenders, path, args.repeats)
        ref = times["anchor (ffmpeg -vf fps,scale)"]
        base, base_cpu = median(w for w, _ in ref), median(c for _, c in ref)
        for name, runs in times.items():
            wall, cpu = median(w for w, _ in runs), median(c for _, c in runs)
            paired = median(w / a for (w, _), (a, _) in zip(runs, ref))
            print(f"| {label} | {name} | {wall:.2f} | {wall / base:.3f} | {paired:.3f} | {cpu:.2f} | "
                  f"{cpu / base_cpu:.3f} |",
                  flush=True)
    for label, path in clips.items():
        print(f"\n{label}: {clip_facts(path)}; runs (wall s): " + "; ".join(
            f"{name}: {', '.join(f'{w:.2f}' for w, _ in runs)}" for name, runs in results[label].items()))


def zlib_control(threads: int) -> Callable[[Path], int]:
    """GIL-free C work (zlib releases the GIL), 2 jobs on ``threads`` threads: what parallelism this machine
    gives right now, independent of any decoder."""
    import zlib

    data = np.random.default_rng(0).integers(0, 256, 1 << 22, dtype=np.uint8).tobytes()

    def job() -> None:
        for _ in range(16):
            zlib.compress(data, 6)

    def run(_path: Path) -> int:
        if threads == 1:
            job()
            job()
        else:
            pool = [threading.Thread(target=job) for _ in range(2)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        return 2
    return run


def run_b(args, clips) -> None:
    print(f"\n## (b) parallel segments, sample_frames alone, medians of {args.repeats} interleaved runs\n")
    print("Per-worker CPU: the CPU seconds each decoding thread spent (1 decoder thread per worker, so that is all"
          " its work); the critical path is the busiest worker's, i.e. the wall time with one free core per worker."
          " The zlib control shows how much a second thread can gain on this machine at the time of the run.\n")
    par = {"1 worker x 1 thread": sampling_only(1, 1), "2 workers x 1 thread": sampling_only(2, 1),
           "1 worker, decoder threads (default)": sampling_only(1, None),
           "2 workers (auto threads)": sampling_only(2, None),
           "control: 2 zlib jobs, 1 thread": zlib_control(1), "control: 2 zlib jobs, 2 threads": zlib_control(2)}
    print("| clip | run | seconds | CPU seconds | per-worker CPU (critical path) |")
    print("|---|---|---|---|---|")
    for label, path in clips.items():
        names = list(par)
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        paths: dict[str, list[float]] = {n: [] for n in names}
        per_worker: dict[str, list[list[float]]] = {n: [] for n in names}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                WORKER_CPU.clear()
                c0, t0 = cpu_seconds(), time.perf_counter()
                par[name](path)
                times[name].append((time.perf_counter() - t0, cpu_seconds() - c0))
                if WORKER_CPU:
                    per_worker[name].append(sorted(WORKER_CPU.values(), reverse=True))
                    paths[name].append(max(WORKER_CPU.values()))
        walls = {name: median(w for w, _ in runs) for name, runs in times.items()}
        for name, runs in times.items():
            cpu_col = ""
            if paths[name]:
                last = per_worker[name][-1]
                cpu_col = f"{' + '.join(f'{c:.2f}' for c in last)} ({median(paths[name]):.2f})"
            print(f"| {label} | {name} | {walls[name]:.2f} | {median(c for _, c in runs):.2f} | {cpu_col} |")
        one, two = "1 worker x 1 thread", "2 workers x 1 thread"
        print(f"| {label} | speed-up, 2 workers x 1 thread over 1 worker x 1 thread: wall | "
              f"{walls[one] / walls[two]:.2f}x | | |")
        print(f"| {label} | speed-up, same, critical path (CPU of the busiest worker) | | | "
              f"{median(paths[one]) / median(paths[two]):.2f}x |")
        print(f"| {label} | speed-up, 2 workers over 1 worker with decoder threads: wall | "
              f"{walls['1 worker, decoder threads (default)'] / walls['2 workers (auto threads)']:.2f}x | | |")
        print(f"| {label} | control: 2 threads of GIL-free zlib over 1 thread: wall | "
              f"{walls['control: 2 zlib jobs, 1 thread'] / walls['control: 2 zlib jobs, 2 threads']:.2f}x | | |",
              flush=True)



def run_c(clips, contenders) -> None:
    print("\n## (c) fidelity: normalized pixels, max / mean absolute difference from the published preprocessing "
          "of a full PyAV decode\n")
    print("| clip | decoder | max / mean abs diff |")
    print("|---|---|---|")
    for label, path in clips.items():
        ref = pyav_full(path)
        for name, fn in contenders.items():
            if name.startswith("pyav-full"):
                continue
            print(f"| {label} | {name} | {fidelity(ref, fn(path))} |", flush=True)


if __name__ == "__main__":
    main()
