"""Asking benchmark: what the ask path costs on top of the model, measured side by side in one run.

    python benchmarks/ask.py                       # 1-hour 25 fps video, 3 repeats (about 15 minutes on 2 cores)
    python benchmarks/ask.py --minutes 10 --repeats 5

One process, one mid-size random model in the published layout (``llamavid.train.scratch.init_checkpoint``,
loaded through the real loader), one generated video (ffmpeg testsrc2, H.264), sampled at 1 frame/s.
Greedy answers with a fixed room of new tokens, so every side generates the same text. Each repeat runs
the sides one after the other (interleaved), and the table gives medians of wall time and of this
process's CPU time (the cost of the work, robust to other jobs sharing the machine):

(a) ``llamavid.ask`` on the VIDEO whose features are in the cache (hash, cache lookup, plan, answer)
(b) ``llamavid.ask`` on its ``.vidtok`` file
(c) ``answer_features`` on the same features (the opened ``.vidtok``): planning and answering, no input
    resolution, no records
(d) ``answer_features`` on the same features already in memory (a tensor: no file reading at all)

Goals (issue "One straight path"): (a)/(b) <= 1.05 and (b)/(c) <= 1.10.
With ``--questions N`` it also compares N questions in one ``ask --batch`` process with N separate
``llamavid ask FILE.vidtok Q`` processes.
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
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from checkpoint_fixture import make_eva_state_dict, train_sentencepiece, write_bert_vocab  # noqa: E402

import llamavid  # noqa: E402
from llamavid.features.vidtok import open_vidtok  # noqa: E402
from llamavid.tasks import qa  # noqa: E402
from llamavid.train.scratch import ModelSizes, init_checkpoint  # noqa: E402

LLAMAVID = [sys.executable, "-m", "llamavid_cli"]
QUESTION = "What happens in the middle of the video?"


def build_model(root: Path, args) -> Path:
    """A mid-size random LLaMA-VID: LLaMA 6 x 384 by default, QFormer 2 x 128, EVA 4 x 264 (the published layout)."""
    gen = torch.Generator().manual_seed(0)
    tower = root / "eva_vit_g.pth"
    torch.save(make_eva_state_dict(gen, width=264, blocks=5, mlp=1056), tower)  # one block more than used, as LAVIS
    train_sentencepiece(root / "tokenizer.model")
    write_bert_vocab(root / "bert")
    sizes = ModelSizes(llm_hidden=args.llm_hidden, llm_layers=args.llm_layers, llm_heads=args.llm_hidden // 64,
                       llm_intermediate=args.llm_hidden * 11 // 4, max_positions=args.context)
    return init_checkpoint(root / "model", sizes=sizes, vision_tower=tower, text_tokenizer=root / "tokenizer.model",
                           qformer_tokenizer=root / "bert")


def make_clip(path: Path, minutes: float, fps: int) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=96x64:rate={fps}",
                    "-t", str(minutes * 60), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps * 10),
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_both(fn):
    """(wall seconds, CPU seconds of this process, result): CPU time is what the work costs, and it stays
    meaningful on a machine other jobs share, where wall time is inflated by waiting for a core."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--native-fps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--llm-hidden", type=int, default=384)
    ap.add_argument("--llm-layers", type=int, default=6)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--questions", type=int, default=0, help="also compare N questions: one batch vs N processes")
    args = ap.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="llamavid-bench-ask-") as tmp:
        root = Path(tmp)
        os.environ["LLAMAVID_CACHE"] = str(root / "cache")
        t, ckpt = timed(lambda: build_model(root, args))
        print(f"model: {ckpt} (built in {t:.1f} s)", flush=True)
        t, clip = timed(lambda: make_clip(root / "clip.mp4", args.minutes, args.native_fps))
        print(f"video: {args.minutes:g} min at {args.native_fps} fps, 96x64 H.264, {clip.stat().st_size / 1e6:.1f} MB "
              f"(made in {t:.1f} s)", flush=True)
        model = llamavid.load_model(ckpt, device="cpu", dtype="float32")
        greedy = llamavid.AskOptions(temperature=0.0, max_new_tokens=args.max_new_tokens)
        t_encode, first = timed(lambda: llamavid.ask(model, clip, QUESTION, greedy))  # encodes into the cache
        [vidtok] = (root / "cache" / "vidtok").glob("*.vidtok")
        print(f"encoded {first.frames} frames in {t_encode:.1f} s; {first.prompt_tokens} prompt tokens", flush=True)
        in_memory = open_vidtok(vidtok).features(dtype=model.dtype)

        def bare_file():
            with open_vidtok(vidtok) as features:
                return llamavid.answer_features(model, features, QUESTION, greedy).text

        sides = {
            "(a) ask: the video, features cached": lambda: llamavid.ask(model, clip, QUESTION, greedy).answer,
            "(b) ask: its .vidtok": lambda: llamavid.ask(model, vidtok, QUESTION, greedy).answer,
            "(c) answer_features on the opened .vidtok": bare_file,
            "(d) answer_features on features in memory":
                lambda: llamavid.answer_features(model, in_memory, QUESTION, greedy).text,
        }
        # Time inside the model's own work (LlamaVid.prompt_embeddings: the QFormer and the splice; generate:
        # LLM prefill and decoding), so that what each side adds around it can be read apart from the model's
        # (noisy) share.
        inside: list[float] = []
        embeddings, generate = type(model).prompt_embeddings, qa.generate

        def measured(fn):
            def run(*a, **k):
                t0 = time.process_time()
                try:
                    return fn(*a, **k)
                finally:
                    inside.append(time.process_time() - t0)
            return run

        type(model).prompt_embeddings, qa.generate = measured(embeddings), measured(generate)
        outside: dict[str, list[float]] = {name: [] for name in sides}
        times: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        answers: dict[str, set[str]] = {name: set() for name in sides}
        for r in range(args.repeats):
            for name, fn in sides.items():
                inside.clear()
                wall, used, answer = timed_both(fn)
                outside[name].append(used - sum(inside))
                times[name].append(wall)
                cpu[name].append(used)
                answers[name].add(answer)
            print(f"repeat {r + 1}: " + ", ".join(f"{times[n][-1]:.2f}/{cpu[n][-1]:.2f}" for n in sides), flush=True)
        assert len(set().union(*answers.values())) == 1, f"the sides answered differently: {answers}"
        med = {name: statistics.median(v) for name, v in times.items()}
        med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
        med_out = {name: statistics.median(v) for name, v in outside.items()}
        type(model).prompt_embeddings, qa.generate = embeddings, generate

        batch_line = None
        if args.questions:
            batch_line = compare_batch(root, ckpt, vidtok, args)

    a, b, c, d = (med[n] for n in sides)
    ca, cb, cc, cd = (med_cpu[n] for n in sides)
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; model LLaMA {args.llm_layers} x {args.llm_hidden}, EVA 4 x 264")
    print(f"video: {args.minutes:g} min at {args.native_fps} fps -> {first.frames} frames, "
          f"{first.prompt_tokens} prompt "
          f"tokens; greedy, {args.max_new_tokens} new tokens; medians of {args.repeats} interleaved repeats")
    print()
    print("| side | wall s (median) | CPU s (median) | wall runs |")
    print("|---|---:|---:|---|")
    for name in sides:
        print(f"| {name} | {med[name]:.3f} | {med_cpu[name]:.3f} | {', '.join(f'{t:.3f}' for t in times[name])} |")
    print()
    print("CPU seconds spent outside the model's own work (the path itself), median:")
    for name in sides:
        print(f"    {name:45s} {med_out[name]:.3f}")
    model_cpu = statistics.median([med_cpu[n] - med_out[n] for n in sides])
    oa, ob, oc = (med_out[n] for n in list(sides)[:3])
    print(f"the model's own CPU time (median over sides): {model_cpu:.3f} s; with it, the path's cost as ratios:")
    print(f"    (a)/(b) = {(model_cpu + oa) / (model_cpu + ob):.3f}    (b)/(c) = "
          f"{(model_cpu + ob) / (model_cpu + oc):.3f}")
    print()
    print("ratio        wall   CPU")
    print(f"(a)/(b)   {a / b:7.3f} {ca / cb:6.3f}   goal <= 1.05: asking about a cached video costs what asking its "
          ".vidtok does")
    print(f"(b)/(c)   {b / c:7.3f} {cb / cc:6.3f}   goal <= 1.10: the ask path adds little to the model's own work")
    print(f"(c)/(d)   {c / d:7.3f} {cc / cd:6.3f}   reading and checking the features from the file")
    if batch_line:
        print(batch_line)


def compare_batch(root: Path, ckpt: Path, vidtok: Path, args) -> str:
    """N questions: one ``ask --batch`` process vs N separate ``ask`` processes (each loads the model)."""
    n = args.questions
    questions = [f"What color is shape number {i}?" for i in range(n)]
    qfile = root / "questions.jsonl"
    qfile.write_text("".join(json.dumps({"id": str(i), "video": str(vidtok), "question": q}) + "\n"
                             for i, q in enumerate(questions)))
    common = ["--model", str(ckpt), "--temperature", "0", "--max-new-tokens", str(args.max_new_tokens)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t_batch, proc = timed(lambda: subprocess.run([*LLAMAVID, "ask", "--batch", str(qfile), *common], env=env,
                                                 capture_output=True, text=True, check=True))
    batch = [json.loads(line)["answer"] for line in proc.stdout.splitlines()]
    t_sep, separate = timed(lambda: [subprocess.run([*LLAMAVID, "ask", str(vidtok), q, *common], env=env,
                                                    capture_output=True, text=True, check=True).stdout.rstrip("\n")
                                     for q in questions])
    same = sum(x == y for x, y in zip(batch, separate))
    return (f"{n} questions on the .vidtok: one --batch process {t_batch:.1f} s, {n} separate processes {t_sep:.1f} s, "
            f"separate / batch = {t_sep / t_batch:.1f}x; identical answers {same}/{n}")


# ---------------------------------------------------------------------------------------------------------
# Evidence: what `ask --evidence` costs on top of a plain answer, on the same .vidtok (self-contained section:
#     .venv/bin/python benchmarks/ask.py evidence [--repeats 5] [--hour]
# (a) the mid-size random model of this file's main benchmark layout, 300 frames of a 10-minute video at 0.5
#     frame/s, greedy, 16 new tokens; (b) the shipped demo model on a held-out synthetic clip (12-24 s, one shape
#     on screen for a few seconds), greedy; (c) with --hour, the demo model on a one-hour synthetic video
#     (3,600 frames, the long-video prompt). Each method is timed side by side with the plain answer, interleaved,
#     median of --repeats runs; wall time and CPU time (user + sys of this process) are both reported.


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _evidence_rows(model, vidtok: Path, question: str, repeats: int, **options) -> dict:
    """Median wall and CPU seconds of a plain answer and of each evidence method (interleaved runs)."""
    import statistics

    from llamavid.tasks.evidence import METHODS

    kinds = ("plain", *METHODS)
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    qa.ask(model, vidtok, question, temperature=0, **options)  # warm-up: file pages, allocator
    answer = None
    for _ in range(repeats):
        for kind in kinds:
            w0, c0 = time.perf_counter(), _cpu()
            if kind == "plain":
                result = qa.ask(model, vidtok, question, temperature=0, **options)
                answer = result
            else:
                result = qa.ask(model, vidtok, question, temperature=0, evidence=True, evidence_method=kind, **options)
                assert result.answer == answer.answer, "evidence must not change the answer"
            wall[kind].append(time.perf_counter() - w0)
            cpu[kind].append(_cpu() - c0)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in kinds}
    return {"frames": answer.frames, "prompt_tokens": answer.prompt_tokens, "answer": answer.answer, "median": med}


def _print_evidence(title: str, rows: dict) -> None:
    plain_w, plain_c = rows["median"]["plain"]
    print(f"{title}: {rows['frames']} frames, {rows['prompt_tokens']} prompt tokens")
    print(f"    {'':12} {'wall s':>8} {'cpu s':>8} {'wall / plain':>13} {'cpu / plain':>12}")
    for kind, (w, c) in rows["median"].items():
        print(f"    {kind:12} {w:8.3f} {c:8.3f} {w / plain_w:12.2f}x {c / plain_c:11.2f}x")


def evidence_main(argv: list[str]) -> None:
    from llamavid.data import synthetic as syn

    ap = argparse.ArgumentParser(prog="benchmarks/ask.py evidence", description="the cost of ask --evidence")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=0.5)
    ap.add_argument("--llm-hidden", type=int, default=384)
    ap.add_argument("--llm-layers", type=int, default=6)
    ap.add_argument("--hour", action="store_true", help="also the demo model on a one-hour video")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="llamavid-bench-evidence-") as tmp:
        root = Path(tmp)
        os.environ["LLAMAVID_CACHE"] = str(root / "cache")
        ckpt = build_model(root, argparse.Namespace(llm_hidden=args.llm_hidden, llm_layers=args.llm_layers,
                                                    context=4096))
        model = llamavid.load_model(ckpt, device="cpu", dtype="float32")
        clip = make_clip(root / "video.mp4", args.minutes, 2)
        qa.ask(model, clip, "What happens first?", fps=args.fps, temperature=0, max_new_tokens=1)  # fills the cache
        [vidtok] = (root / "cache" / "vidtok").glob("*.vidtok")
        rows = _evidence_rows(model, vidtok, "What happens first?", args.repeats, max_new_tokens=16)
        _print_evidence(f"(a) random LLaMA {args.llm_layers} x {args.llm_hidden}, {args.minutes:g} min at "
                        f"{args.fps:g} frame/s", rows)

        demo = llamavid.load_model("demo", device="cpu", dtype="float32")
        [window] = syn.make_extra_clips("test", "window", 1, seed=5)
        syn.write_split([window], root / "window")
        video = root / "window" / "videos" / f"{window.id}.mp4"
        qa.ask(demo, video, "What color is the shape?", max_new_tokens=1)
        tok = sorted((root / "cache" / "vidtok").glob("*.vidtok"), key=lambda p: p.stat().st_mtime)[-1]
        rows = _evidence_rows(demo, tok, "What color is the shape?", args.repeats, max_new_tokens=8)
        _print_evidence(f"(b) demo model, held-out window clip ({window.seconds:g} s, shape at "
                        f"{window.events[0].start:g}-{window.events[0].end:g} s), answer {rows['answer']!r}", rows)
        if args.hour:
            [hour] = syn.make_extra_clips("test", "scenes", 1, seed=99, scenes=(12, 12), scene_seconds=(290.0, 310.0))
            hour.fps = 1.0
            syn.write_split([hour], root / "hour")
            video = root / "hour" / "videos" / f"{hour.id}.mp4"
            qa.ask(demo, video, "What color is the shape?", max_new_tokens=1, long=True)
            tok = sorted((root / "cache" / "vidtok").glob("*.vidtok"), key=lambda p: p.stat().st_mtime)[-1]
            rows = _evidence_rows(demo, tok, "What color is the shape?", max(1, args.repeats // 2), max_new_tokens=8,
                                  long=True)
            _print_evidence(f"(c) demo model, one-hour synthetic video ({hour.seconds:g} s), long-video prompt", rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["evidence"]:
        evidence_main(sys.argv[2:])
    else:
        main()
