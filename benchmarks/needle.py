"""Look closer, measured: a needle in a haystack that cannot be found without the question.

    .venv/bin/python benchmarks/needle.py make --data runs/needle              # render the held-out set
    .venv/bin/python benchmarks/needle.py run --data runs/needle --model demo --out runs/needle/demo.json
    .venv/bin/python benchmarks/needle.py report runs/needle/demo.json --png docs/needle.png
    # tuning pass 2 on a set of its own:
    .venv/bin/python benchmarks/needle.py make --data runs/needle-dev --split dev --per-cell 2
    .venv/bin/python benchmarks/needle.py run --data runs/needle-dev --split dev --model demo --out runs/dev.json \
        --variant '1 range, no pad={"ranges": 1, "pad": 0.0}'

The set (``llamavid.data.synthetic.haystack_clips("test")``): videos of 5, 15, 30 and 60 minutes full of
distractor shapes of every colour and of every kind but one, all the way through; ONE shape of that kind
(the needle) for one second at 10, 30, 50, 70 or 90% of the video; five videos per length x depth (100
held-out questions). The question names the needle's kind and asks its colour ("What color is the
ring?"), with the long-video prompt, greedily, at 1 frame/s (the videos are 4 frames/s, so pass 2 can take
more frames from the video).

``--split dev`` is another set of the same design drawn from the training split with a seed training does
not use (``make --split dev --per-cell 2``): look-closer's settings are chosen on it (``--variant``), never on
the held-out set.

``--ask first|last`` asks instead for the colour of the first (last) shape of the video, a question about
the whole video's order that look-closer must not lose when it turns on by itself.

``run`` answers every question three ways, each on the same cached features, side by side:

* ``plain``: the plain answer (every frame that fits the context; at 8,192 tokens all 3,600 of an hour);
* ``uniform``: the plain answer with frames spread evenly at the same visual-token budget as look-closer's
  pass 2 (``max_frames``);
* ``closer``: look-closer (``look_closer=True``, the default settings);

and, with ``--variants``, look-closer with one setting changed at a time (pass 1's scorer, the rest of the
video kept, no detail tokens, no frames from the video), and pass 1's ranking by every scorer (the needle's
rank among the scored frames; whether the ranges hold it). ``--context N`` cuts the model's context to N
tokens for planning (the demo model at a short model's ratio: a 3-hour video in a 4K context keeps about
2,000 of 10,800 frames, 18.5%; N = 1,450 keeps 667 of an hour's 3,600 frames). Cost: CPU seconds of this
process (both threads) per answer, look-closer's pass 1 + pass 2 (decoding and encoding the extra frames
included) against the plain answer's; the ratio's median per length.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MINUTES = (5, 15, 30, 60)
DEPTHS = (10, 30, 50, 70, 90)


SPLITS = {"test": ("test", 0), "dev": ("train", 1)}  # dev: for tuning pass 2 (the training split, another seed)


def designs(split: str, per_cell: int = 5) -> list:
    """The set's clips (deterministic): ``test`` is the held-out set; ``dev`` is drawn from the training split
    with a seed training never uses, for tuning look-closer's settings without touching ``test``. Fewer per
    cell are the first of the five (the same videos, whatever is rendered)."""
    from llamavid.data import synthetic as syn

    name, seed = SPLITS[split]
    return [c for c in syn.haystack_clips(name, per_cell=5, seed=seed) if int(c.id.rsplit("-", 1)[1]) < per_cell]


def make(data: Path, per_cell: int, split: str = "test") -> None:
    from llamavid.data import synthetic as syn

    clips = designs(split, per_cell)
    t0 = time.perf_counter()
    syn.write_split(clips, data, on_progress=lambda i, n: print(f"{i}/{n} ({time.perf_counter() - t0:.0f} s)",
                                                                 file=sys.stderr, flush=True))


def cases(data: Path, minutes: tuple[int, ...], per_cell: int | None, ask: str = "needle",
          split: str = "test") -> list[dict]:
    from dataclasses import asdict

    from llamavid.data import synthetic as syn

    clips = [asdict(c) for c in designs(split)]  # the designs (deterministic), as clips.json holds them
    out = []
    for clip in clips:
        m, d, k = clip["id"].split("-")[2:5]
        m, d, k = int(m[:-1]), int(d[1:]), int(k)
        if m not in minutes or (per_cell is not None and k >= per_cell):
            continue
        _, question, answer = clip["qa"][0]
        kind = question.split(" the ")[1].split()[0].rstrip("?")
        needle = next(e for e in clip["events"] if e["shape"] == kind)
        video = data / "videos" / f"{clip['id']}.mp4"
        if not video.is_file():
            raise SystemExit(f"{video}: not rendered yet (benchmarks/needle.py make)")
        if ask in ("first", "last"):  # a question about the whole video's order: the needle does not matter
            event = min(clip["events"], key=lambda e: e["start"]) if ask == "first" else \
                max(clip["events"], key=lambda e: e["start"])
            question, answer = syn.QUESTIONS[ask][0], event["color"]
            needle = event
        out.append({"id": clip["id"], "video": str(video), "minutes": m, "depth": d,
                    "question": question, "answer": answer, "needle": (needle["start"], needle["end"])})
    return out


def first_word(text: str) -> str:
    import re

    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def run(args) -> None:
    import dataclasses

    import torch

    import llamavid
    from llamavid.core.options import AskOptions
    from llamavid.pipeline.inputs import open_input
    from llamavid.pipeline.planning import CloserSettings, closer_ranges, plan_question
    from llamavid.tasks.qa import Question, answer_questions
    from llamavid.tasks.relevance import attention_scores, token_scores

    default = CloserSettings()
    variants = {}
    if args.variants or args.variant:  # one setting changed at a time (``--variant NAME=JSON`` adds more)
        changes = {"scorer=attention": {"scorer": "attention"}, "rest=keep": {"rest": "keep"}, "grid=0": {"grid": 0},
                   "fps=1 (stored frames only)": {"fps": 1.0}, "ranges=1, pad=0": {"ranges": 1, "pad": 0.0},
                   "ranges=2, pad=1": {"ranges": 2, "pad": 1.0}} if args.variants else {}
        for extra in args.variant:
            at = extra.find("={")  # the name may hold "=" itself ("ranges=2, pad=0={...}")
            if at < 1:
                raise SystemExit(f"--variant {extra!r}: expected NAME={{\"field\": value}}")
            try:
                changes[extra[:at]] = json.loads(extra[at + 1:])
            except json.JSONDecodeError as e:
                raise SystemExit(f"--variant {extra!r}: not JSON after the name ({e.msg})") from None
        for name, change in changes.items():
            try:
                variants[name] = dataclasses.replace(default, **change)
            except (TypeError, ValueError) as e:
                raise SystemExit(f"--variant {name!r}: {e}") from None
    torch.set_num_threads(args.threads)
    model = llamavid.load_model(args.model, device="cpu", dtype="float32")
    if args.context:
        model.config.llm["max_position_embeddings"] = args.context  # planning's context (the weights are as they were)
    todo = cases(Path(args.data), tuple(int(m) for m in args.minutes.split(",")), args.per_cell, args.ask,
                 args.split)
    out_path = Path(args.out)
    done = {}
    if out_path.is_file():
        done = {r["id"]: r for r in json.loads(out_path.read_text())["records"]}
    base = AskOptions(temperature=0.0, max_new_tokens=8, long=True)
    records = list(done.values())
    t_start = time.perf_counter()
    for n, case in enumerate(todo):
        if case["id"] in done:
            continue
        rec = dict(case, model=args.model, context=model.context_length)
        with open_input(model, case["video"], base) as vin:
            q = Question(case["question"], base)

            def answer(plan, what):
                c0, w0 = time.process_time(), time.perf_counter()
                [res] = answer_questions(model, vin, [q], plans=[plan])
                if res.error is not None:
                    raise res.error
                p = res.plan
                visual = sum(p.prompt.frame_tokens) if p.prompt.frame_tokens else p.prompt.n_frames * \
                    model.tokens_per_frame
                hit = None
                if p.looked_at is not None:
                    a, b = case["needle"]
                    hit = any(r.start < b and r.end > a for r in p.looked_at)
                return {"answer": res.answer.text, "correct": first_word(res.answer.text) == case["answer"],
                        "cpu": round(time.process_time() - c0, 3), "wall": round(time.perf_counter() - w0, 3),
                        "frames": p.frames, "visual_tokens": int(visual), "prompt_tokens": p.prompt.tokens,
                        "ranges": [r.to_json() for r in p.looked_at] if p.looked_at else None, "hit": hit,
                        "what": what}

            plain_plan = plan_question(model, vin, q.text, base.replace(look_closer=False))
            closer_plan = plan_question(model, vin, q.text, base.replace(look_closer=True), closer=default)
            rec["plain"] = answer(plain_plan, "plain")
            rec["closer"] = answer(closer_plan, "closer")
            budget = max(1, rec["closer"]["visual_tokens"] // model.tokens_per_frame)
            uni = plan_question(model, vin, q.text, base.replace(look_closer=False, max_frames=budget))
            rec["uniform"] = answer(uni, "uniform")
            rec["plain_again"] = answer(plain_plan, "plain")  # interleaved repeat: the cost's noise
            rec["variants"] = {}
            for name, settings in variants.items():
                plan = plan_question(model, vin, q.text, base.replace(look_closer=True), closer=settings)
                rec["variants"][name] = answer(plan, name)
            if args.variants:
                rec["ranking"] = ranking(model, vin, q, base, case, {
                    "tokens (lse)": lambda: token_scores(model, vin.features, q.text, range(len(vin.timestamps)),
                                                         long_video=True),
                    "tokens (max)": lambda: token_scores(model, vin.features, q.text, range(len(vin.timestamps)),
                                                         long_video=True, statistic="max"),
                    "tokens (peak)": lambda: token_scores(model, vin.features, q.text, range(len(vin.timestamps)),
                                                          long_video=True, statistic="peak"),
                    "attention": lambda: attention_scores(model, vin, q.text, list(range(len(vin.timestamps))),
                                                          base)[1],
                }, closer_ranges, default)
        records.append(rec)
        out_path.write_text(json.dumps({"records": records}, indent=1) + "\n")
        print(f"{n + 1}/{len(todo)} {case['id']}: plain {rec['plain']['answer']!r} closer {rec['closer']['answer']!r} "
              f"({case['answer']}; hit {rec['closer']['hit']}) uniform {rec['uniform']['answer']!r}; "
              f"cpu {rec['closer']['cpu']:.1f}/{rec['plain']['cpu']:.1f} s ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)


def ranking(model, vin, q, base, case, scorers: dict, closer_ranges, settings) -> dict:
    """Per scorer: the needle's best rank among the scored frames (1 = first), whether the default ranges
    hold it, and the scorer's CPU seconds."""
    times = np.asarray(vin.timestamps)
    a, b = case["needle"]
    needle = np.nonzero((times >= a - 1e-6) & (times < b - 1e-6))[0]
    out = {}
    for name, fn in scorers.items():
        c0 = time.process_time()
        scores = np.asarray(fn(), dtype=np.float64)
        cpu = time.process_time() - c0
        order = np.argsort(-scores, kind="stable")
        rank = int(min(np.nonzero(np.isin(order, needle))[0])) + 1 if len(needle) else None
        ranges = closer_ranges(scores, times, settings, step=vin.step, duration=vin.duration)
        out[name] = {"rank": rank, "hit": any(r.start < b and r.end > a for r in ranges), "cpu": round(cpu, 3)}
    return out


# ---------------------------------------------------------------------------------------------------------
# report


def pct(rows: list[bool]) -> float | None:
    return round(100.0 * sum(rows) / len(rows), 1) if rows else None


def report(paths: list[Path], png: Path | None) -> None:
    records = [r for p in paths for r in json.loads(Path(p).read_text())["records"]]
    answers = ("plain", "uniform", "closer")
    minutes = sorted({r["minutes"] for r in records})
    print(f"{len(records)} questions; model {records[0]['model']}, context {records[0]['context']}\n")
    for what in answers:
        print(f"### {what}\n\n| length | " + " | ".join(f"{d}%" for d in DEPTHS) + " | all |")
        print("|---|" + "---:|" * (len(DEPTHS) + 1))
        for m in minutes:
            cells = [pct([r[what]["correct"] for r in records if r["minutes"] == m and r["depth"] == d])
                     for d in DEPTHS]
            total = pct([r[what]["correct"] for r in records if r["minutes"] == m])
            print(f"| {m} min | " + " | ".join("-" if c is None else f"{c:.0f}%" for c in cells) + f" | {total}% |")
        print("| all | " + " | ".join(f"{pct([r[what]['correct'] for r in records if r['depth'] == d])}%"
                                       for d in DEPTHS) + f" | {pct([r[what]['correct'] for r in records])}% |\n")
    print("| length | plain | uniform (same budget) | look-closer | needle in the ranges | pass-2 visual tokens "
          "(median) | CPU look-closer / plain (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in minutes + ["all"]:
        rows = [r for r in records if m == "all" or r["minutes"] == m]
        ratio = statistics.median(r["closer"]["cpu"] / max(1e-9, min(r["plain"]["cpu"], r.get("plain_again",
                                  r["plain"])["cpu"])) for r in rows)
        print(f"| {m if m == 'all' else f'{m} min'} | {pct([r['plain']['correct'] for r in rows])}% | "
              f"{pct([r['uniform']['correct'] for r in rows])}% | {pct([r['closer']['correct'] for r in rows])}% | "
              f"{pct([bool(r['closer']['hit']) for r in rows])}% | "
              f"{statistics.median(r['closer']['visual_tokens'] for r in rows):.0f} | {ratio:.2f}x |")
    variants = sorted({v for r in records for v in r.get("variants", {})})
    if variants:
        print("\n| look-closer setting | " + " | ".join(f"{m} min" for m in minutes) + " | all | CPU / plain |")
        print("|---|" + "---:|" * (len(minutes) + 2))
        for name in ["default"] + variants:
            get = (lambda r: r["closer"]) if name == "default" else (lambda r, n=name: r["variants"].get(n))
            rows = [r for r in records if get(r) is not None]
            cells = [pct([get(r)["correct"] for r in rows if r["minutes"] == m]) for m in minutes]
            ratio = statistics.median(get(r)["cpu"] / max(1e-9, r["plain"]["cpu"]) for r in rows)
            print(f"| {name} | " + " | ".join(f"{c}%" for c in cells) + f" | {pct([get(r)['correct'] for r in rows])}% "
                  f"| {ratio:.2f}x |")
    scorers = sorted({s for r in records for s in r.get("ranking", {})})
    if scorers:
        print("\n| pass-1 scorer | needle ranked first | in the top 10 | in the ranges | median rank "
              "| CPU s (median) |")
        print("|---|---:|---:|---:|---:|---:|")
        for s in scorers:
            rows = [r["ranking"][s] for r in records if s in r.get("ranking", {})]
            print(f"| {s} | {pct([x['rank'] == 1 for x in rows])}% | {pct([x['rank'] <= 10 for x in rows])}% | "
                  f"{pct([x['hit'] for x in rows])}% | {statistics.median(x['rank'] for x in rows):.0f} | "
                  f"{statistics.median(x['cpu'] for x in rows):.2f} |")
    if png is not None:
        heatmap(records, minutes, png)


def heatmap(records: list[dict], minutes: list[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"plain": "plain answer", "uniform": "frames spread evenly,\nsame token budget", "closer": "look-closer"}
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for ax, what in zip(axes, titles):
        grid = np.array([[np.mean([r[what]["correct"] for r in records if r["minutes"] == m and r["depth"] == d])
                          * 100 for d in DEPTHS] for m in minutes])
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        for i in range(len(minutes)):
            for j in range(len(DEPTHS)):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(DEPTHS)), [f"{d}%" for d in DEPTHS])
        ax.set_yticks(range(len(minutes)), [f"{m} min" for m in minutes])
        ax.set_xlabel("needle depth")
        ax.set_title(titles[what], fontsize=10)
    fig.colorbar(im, ax=axes, label="accuracy (%)", shrink=0.8)
    fig.savefig(png, dpi=110)
    print(f"\nwrote {png}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--data", type=Path, required=True)
    m.add_argument("--per-cell", type=int, default=5)
    m.add_argument("--split", default="test", choices=sorted(SPLITS))
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--model", default="demo")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", default=",".join(map(str, MINUTES)))
    r.add_argument("--per-cell", type=int, default=None)
    r.add_argument("--split", default="test", choices=sorted(SPLITS),
                   help="test: the held-out set; dev: for tuning look-closer's settings")
    r.add_argument("--variants", action="store_true")
    r.add_argument("--variant", action="append", default=[], metavar='NAME={"field": value}',
                   help="one more look-closer setting to compare (alone: only these, without --variants' list)")
    r.add_argument("--context", type=int, default=None)
    r.add_argument("--ask", default="needle", choices=["needle", "first", "last"],
                   help="the question: the needle's colour, or the first / last shape's (whole-video order)")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine two threads each wait for the other)")
    p = sub.add_parser("report")
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.data, args.per_cell, args.split)
    elif args.command == "run":
        os.environ.setdefault("LLAMAVID_CACHE", str(Path(args.data) / "cache"))
        run(args)
    else:
        report(args.results, args.png)


if __name__ == "__main__":
    main()
