"""What speech costs an encode: `encode --asr` against a plain encode and a transcription alone, side by side.

    .venv/bin/python benchmarks/asr_encode.py [--minutes 10] [--asr-model DIR] [--repeats 2]

A talking video (espeak-ng sentences looped under a moving picture, 25 fps) is encoded with the demo
model's vision encoder (a) without speech, (b) with `--asr` (the transcription runs in a thread beside the
vision forward), and (c) transcribed alone. Printed: each median wall time, the share of (b) spent on
speech ((b) - (a)) / (b), and the overlap gain ((a) + (c)) / (b) (1.0: no overlap at all; 2.0: perfect).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import asr_media  # noqa: E402

from llamavid.features.encode import EncodeOptions, encode_file  # noqa: E402
from llamavid.media import asr  # noqa: E402
from llamavid.model.loading import load_vision_encoder  # noqa: E402


def talking_video(folder: Path, minutes: float) -> Path:
    sentences = [f"Sentence number {i}: the code word is {w}." for i, w in
                 enumerate(["rocket", "apple", "river", "candle", "window", "pencil"])]
    track = asr_media.speech_track(folder / "speech.wav", sentences, gap=2.0)
    seconds = minutes * 60.0
    out = folder / "talking.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=160x120:rate=25:duration={seconds:.0f}", "-stream_loop", "-1", "-i",
                    str(track.path), "-t", f"{seconds:.0f}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                    "yuv420p", "-c:a", "aac", "-b:a", "64k", str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--asr-model", default=str(asr_media.model_dir()))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llamavid-asr-encode-") as tmp:
        root = Path(tmp)
        video = talking_video(root, args.minutes)
        encoder = load_vision_encoder("demo", device="cpu", dtype="float32")
        recognizer = asr.recognizer(args.asr_model, "en")
        times: dict[str, list[float]] = {"(a) encode": [], "(b) encode --asr": [], "(c) transcribe alone": []}
        for r in range(args.repeats):
            for name in times:
                out = root / f"out-{r}-{len(times[name])}.vidtok"
                t0 = time.perf_counter()
                if name.startswith("(a)"):
                    encode_file(encoder, video, out, EncodeOptions(force=True))
                elif name.startswith("(b)"):
                    encode_file(encoder, video, out, EncodeOptions(force=True, asr=recognizer))
                else:
                    asr.Transcriber(recognizer).transcribe(video)
                times[name].append(time.perf_counter() - t0)
                out.unlink(missing_ok=True)
            print(f"repeat {r + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in times.values()), flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        a, b, c = med.values()
        print(f"\nvideo: {args.minutes:g} min, 25 fps, 160x120, sampled at 1 frame/s; vision: the demo encoder on "
              f"the CPU; speech: {Path(args.asr_model).name}; {os.cpu_count()} CPUs; medians of {args.repeats}")
        print("| side | wall s |")
        print("|---|---:|")
        for name, value in med.items():
            print(f"| {name} | {value:.1f} |")
        print(f"share of `encode --asr` spent on speech ((b) - (a)) / (b): {(b - a) / b:.0%}")
        print(f"overlap gain ((a) + (c)) / (b): {(a + c) / b:.2f}x")


if __name__ == "__main__":
    main()
