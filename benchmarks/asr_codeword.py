"""The demo model's code-word questions answered from SPEECH instead of subtitles.

    .venv/bin/python benchmarks/asr_codeword.py [--model-dir DIR] [--limit N]

The held-out split of the demo recipe (``llamavid.train.demo``, 50 single + 50 sequence clips) holds 100
questions "What is the code word?" whose answer is said only in a subtitle line ("The code word is
rocket."). Each such clip is made again with that line SPOKEN (espeak-ng, at the subtitle's time, on the
video's sound track) and without its .srt, and asked through the usual path with ``asr=True``: the speech is
transcribed (faster-whisper, the test model tiny.en by default, VAD on), kept with the features, and the
transcript attached to the frames as the subtitles were. The same questions are asked with the .srt files,
and the two accuracies are printed side by side, with the transcripts' word error rate on the lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import asr_media  # noqa: E402  (tests/asr_media.py: espeak-ng speech, WER)

from llamavid.data import synthetic as syn  # noqa: E402
from llamavid.model.loading import load_model  # noqa: E402
from llamavid.train.demo import DemoRecipe  # noqa: E402
from llamavid.train.demo_eval import accuracy, run_items  # noqa: E402


def spoken_copy(clip: Path, srt: Path, out: Path, work: Path) -> str:
    """``clip`` again with its subtitle lines spoken at their times (and no .srt); the text spoken."""
    from llamavid.media.subtitles import load_srt

    lines = load_srt(srt)
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                                       str(clip)], capture_output=True, text=True, check=True).stdout)
    seconds = float(probe["format"]["duration"])
    rate = 22050
    track = np.zeros(int((seconds + 3.0) * rate), np.float32)  # room for a line said near the end
    for line in lines:
        data, got = asr_media.spoken(line.text, work)
        assert got == rate, got
        at = int(line.start * rate)
        track[at:at + data.size] += data[: max(0, track.size - at)]
    wav = asr_media.write_wav(work / (clip.stem + ".wav"), track, rate)
    # the sound runs on past the picture where a line is said near the end (it is not cut mid-word)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-i", str(wav), "-map",
                    "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", str(out)], check=True)
    return " ".join(line.text for line in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=None, help="the speech recognizer (default: the test model, tiny.en)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N code-word questions")
    args = ap.parse_args()
    recognizer = args.model_dir or str(asr_media.model_dir())
    with tempfile.TemporaryDirectory(prefix="llamavid-codeword-") as tmp:
        root = Path(tmp)
        os.environ["LLAMAVID_CACHE"] = str(root / "cache")
        r = DemoRecipe()
        clips = syn.make_clips("test", n_single=r.n_test_single, n_sequence=r.n_test_sequence, n_needle=0,
                               seed=r.data_seed)
        syn.write_split(clips, root / "test")
        items = [i for i in json.loads((root / "test" / "qa.json").read_text()) if i["question_type"] == "subtitle"]
        if args.limit:
            items = items[: args.limit]
        spoken_root = root / "spoken"
        spoken_root.mkdir()
        work = root / "work"
        work.mkdir()
        said: dict[str, str] = {}
        for item in items:
            clip = root / "test" / item["video"]
            if item["video"] not in said:
                (spoken_root / item["video"]).parent.mkdir(parents=True, exist_ok=True)
                said[item["video"]] = spoken_copy(clip, clip.with_suffix(".srt"), spoken_root / item["video"], work)
        model = load_model("demo", device="cpu", dtype="float32")
        t0 = time.perf_counter()
        from_srt = run_items(model, items, root / "test", progress=False)
        t_srt = time.perf_counter() - t0
        t0 = time.perf_counter()
        from_speech = run_items(model, items, spoken_root, progress=False, asr=True, asr_model=recognizer,
                                language="en")
        t_speech = time.perf_counter() - t0
        # the transcripts, as the features keep them: how close to what was said
        from llamavid.features.vidtok import open_vidtok

        wers = []
        for entry in (root / "cache" / "vidtok").glob("*-asr*.vidtok"):
            with open_vidtok(entry) as vt:
                name = "videos/" + vt.source["name"] if f"videos/{vt.source['name']}" in said else vt.source["name"]
                heard = " ".join(text for _, _, text in vt.transcript["lines"])
            wers.append(asr_media.word_error_rate(said[name], heard))
        a_srt, a_speech = accuracy(from_srt)["subtitle"], accuracy(from_speech)["subtitle"]
        print(f"code-word questions: {len(items)} (clips: {len(said)}); recognizer {Path(recognizer).name}")
        print("| subtitles from | correct | accuracy | seconds |")
        print("|---|---:|---:|---:|")
        print(f"| .srt files | {a_srt['correct']} | {a_srt['accuracy']}% | {t_srt:.0f} |")
        print(f"| speech (asr) | {a_speech['correct']} | {a_speech['accuracy']}% | {t_speech:.0f} |")
        print(f"transcripts: {len(wers)}, mean word error rate {np.mean(wers):.1%}, "
              f"exact {sum(w == 0 for w in wers)}")
        wrong = [(a["question"], a["expected"], a["answer"]) for a in from_speech if not a["correct"]][:10]
        for q, want, got in wrong:
            print(f"  wrong: {want!r} -> {got!r}")
        shutil.rmtree(root / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
