"""Asking benchmark: what tokenizing a video once saves, and what batching questions on one video saves.

Everything compared is measured side by side in this one run with the same mid-size random model
(written in the published layout by ``llamavid.train.scratch.init_checkpoint`` and loaded through the
real loader) on a generated 10-minute video at low resolution; no downloads.

    .venv/bin/python benchmarks/ask.py              # about 10 minutes on 2 busy CPU cores
    .venv/bin/python benchmarks/ask.py --questions 8 --separate inprocess   # quicker

(a) time to answer one question on the video's ``.vidtok`` vs on the raw video (encode + answer), both
    through ``llamavid.qa.ask`` in one process with the model already loaded (``--no-cache`` for the raw
    video, so it is encoded every time);
(b) N questions on that video: one ``llamavid ask --batch`` process vs N separate ``llamavid ask
    VIDEO.vidtok Q`` processes (``--separate subprocess``, the default: each pays Python start-up and
    model loading, as a shell loop would) or N separate load + answer calls in this process
    (``--separate inprocess``: loading only).
All answers are greedy (temperature 0) with a fixed number of new tokens' room, so both sides of each
comparison generate the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import llamavid  # noqa: E402
from llamavid import qa  # noqa: E402
from llamavid.decoding import SamplingOptions  # noqa: E402
from llamavid.train.scratch import ModelSizes, init_checkpoint  # noqa: E402

from checkpoint_fixture import make_eva_state_dict, train_sentencepiece, write_bert_vocab  # noqa: E402
from media import make_video  # noqa: E402

LLAMAVID = ROOT / ".venv" / "bin" / "llamavid"
QUESTIONS = [f"What happens {when}?" for when in ("first", "last", "in the middle", "after the dog appears")] + [
    f"What color is shape number {i}?" for i in range(1, 29)]


def build_model(root: Path, args) -> Path:
    """A mid-size random LLaMA-VID: LLaMA 6 x 384 by default, QFormer 2 x 128, EVA 4 x 264 (the published layout)."""
    gen = torch.Generator().manual_seed(0)
    tower = root / "eva_vit_g.pth"
    torch.save(make_eva_state_dict(gen, width=264, blocks=5, mlp=1056), tower)  # one block more than used, as LAVIS
    train_sentencepiece(root / "tokenizer.model")
    write_bert_vocab(root / "bert")
    sizes = ModelSizes(llm_hidden=args.llm_hidden, llm_layers=args.llm_layers, llm_heads=args.llm_hidden // 64,
                       llm_intermediate=args.llm_hidden * 11 // 4, max_positions=4096)
    return init_checkpoint(root / "model", sizes=sizes, vision_tower=tower, text_tokenizer=root / "tokenizer.model",
                           qformer_tokenizer=root / "bert")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=0.5, help="frames sampled per second (0.5: 300 frames for 10 min)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--separate", choices=["subprocess", "inprocess"], default="subprocess")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--llm-hidden", type=int, default=384)
    ap.add_argument("--llm-layers", type=int, default=6)
    args = ap.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="llamavid-bench-ask-") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        os.environ["LLAMAVID_CACHE"] = str(cache)
        t, ckpt = timed(lambda: build_model(root, args))
        print(f"model: {ckpt} (built in {t:.1f} s)", flush=True)
        t, clip = timed(lambda: make_video(root / "ten_minutes.mp4", seconds=args.minutes * 60, fps=2, width=96, height=64))
        print(f"video: {args.minutes:g} min, 96x64, 2 fps, sampled at {args.fps:g} frame/s ({clip.stat().st_size / 1e6:.1f} MB, made in {t:.1f} s)", flush=True)
        load = lambda: llamavid.load_model(ckpt, device="cpu", dtype="float32")  # noqa: E731
        t_load, model = timed(load)
        sampling = SamplingOptions(max_new_tokens=args.max_new_tokens, temperature=0.0)
        question = QUESTIONS[0]

        # (a) raw video (encode + answer, nothing cached) vs its .vidtok
        t_raw, raw = timed(lambda: qa.ask(model, clip, question, fps=args.fps, sampling=sampling, cache=False))
        t_first, _ = timed(lambda: qa.ask(model, clip, question, fps=args.fps, sampling=sampling, cache=True))  # fills the cache
        [vidtok] = (cache / "vidtok").glob("*.vidtok")
        t_tok, tok = timed(lambda: qa.ask(model, vidtok, question, sampling=sampling))
        t_cached, cached = timed(lambda: qa.ask(model, clip, question, fps=args.fps, sampling=sampling, cache=True))
        assert raw.answer == tok.answer == cached.answer, "the same tokens must give the same greedy answer"

        # (b) N questions on one video: one batch vs N separate invocations
        n = args.questions
        questions = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})") for i in range(n)]
        qfile = root / "questions.jsonl"
        qfile.write_text("".join(json.dumps({"id": str(i), "video": str(vidtok), "question": q}) + "\n"
                                 for i, q in enumerate(questions)))
        common = ["--model", str(ckpt), "--temperature", "0", "--max-new-tokens", str(args.max_new_tokens)]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        t_batch, proc = timed(lambda: subprocess.run([str(LLAMAVID), "ask", "--batch", str(qfile), *common],
                                                     env=env, capture_output=True, text=True, check=True))
        batch_answers = [json.loads(line)["answer"] for line in proc.stdout.splitlines()]
        if args.separate == "subprocess":
            def separate():
                return [subprocess.run([str(LLAMAVID), "ask", str(vidtok), q, *common], env=env, capture_output=True,
                                       text=True, check=True).stdout.rstrip("\n") for q in questions]
        else:
            def separate():
                return [qa.ask(load(), vidtok, q, sampling=sampling).answer for q in questions]
        t_sep, sep_answers = timed(separate)
        same = sum(a == b for a, b in zip(batch_answers, sep_answers))

    frames = raw.frames
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model LLaMA {args.llm_layers} x {args.llm_hidden}, EVA 4 x 264; "
          f"load {t_load:.2f} s")
    print(f"(a) one question, {frames} frames ({frames * model.tokens_per_frame} visual tokens, "
          f"{raw.prompt_tokens} prompt tokens):")
    print(f"    raw video, encode + answer   {t_raw:8.2f} s")
    print(f"    .vidtok, answer only         {t_tok:8.2f} s    raw / .vidtok = {t_raw / t_tok:.1f}x")
    print(f"    same video again (cache hit) {t_cached:8.2f} s    raw / cached  = {t_raw / t_cached:.1f}x")
    print(f"(b) {n} questions on the .vidtok ({args.separate} for the separate side):")
    print(f"    one --batch process          {t_batch:8.2f} s   ({t_batch / n:.2f} s a question)")
    print(f"    {n} separate invocations     {t_sep:8.2f} s   ({t_sep / n:.2f} s a question)   "
          f"separate / batch = {t_sep / t_batch:.1f}x")
    print(f"    identical answers: {same}/{n}")


# ---------------------------------------------------------------------------------------------------------
# Evidence: what `ask --evidence` costs on top of a plain answer, on the same .vidtok (self-contained section:
#     .venv/bin/python benchmarks/ask.py evidence [--repeats 5] [--hour]
# (a) the mid-size random model of this file's main benchmark layout, 300 frames of a 10-minute video at 0.5
#     frame/s, greedy, 16 new tokens; (b) the shipped demo model on a held-out synthetic clip (12-24 s, one shape
#     on screen for a few seconds), greedy; (c) with --hour, the demo model on a one-hour synthetic video
#     (3,600 frames, the long-video prompt). Each method is timed side by side with the plain answer, interleaved,
#     median of --repeats runs; wall time and CPU time (user + sys of this process) are both reported.


def _evidence_model(root: Path, llm_hidden: int, llm_layers: int) -> Path:
    gen = torch.Generator().manual_seed(0)
    tower = root / "eva_vit_g.pth"
    torch.save(make_eva_state_dict(gen, width=264, blocks=5, mlp=1056), tower)
    train_sentencepiece(root / "tokenizer.model")
    write_bert_vocab(root / "bert")
    sizes = ModelSizes(llm_hidden=llm_hidden, llm_layers=llm_layers, llm_heads=llm_hidden // 64,
                       llm_intermediate=llm_hidden * 11 // 4, max_positions=4096)
    return init_checkpoint(root / "model", sizes=sizes, vision_tower=tower, text_tokenizer=root / "tokenizer.model",
                           qformer_tokenizer=root / "bert")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _evidence_rows(model, vidtok: Path, question: str, repeats: int, **options) -> dict:
    """Median wall and CPU seconds of a plain answer and of each evidence method (interleaved runs)."""
    import statistics

    from llamavid.evidence import METHODS

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
        ckpt = _evidence_model(root, args.llm_hidden, args.llm_layers)
        model = llamavid.load_model(ckpt, device="cpu", dtype="float32")
        clip = make_video(root / "video.mp4", seconds=args.minutes * 60, fps=2, width=96, height=64)
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
