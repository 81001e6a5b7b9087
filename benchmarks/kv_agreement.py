"""What a quantized KV cache costs in answers: the demo model's long-video held-out questions (subtitle and
needle) answered greedily with the full cache and with each quantized one; agreement = identical answer text.

    .venv/bin/python benchmarks/kv_agreement.py --data runs/data      # the split of `python -m llamavid.train.demo`

The held-out split is the one ``llamavid.train.demo`` writes (``data/test/qa.json``; make it alone with
``--make-data``). Every question goes through the same path as ``llamavid ask`` (``demo_eval.run_items``:
encode to .vidtok once, then answer); only the questions' ``kv_cache`` option changes between the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(root: Path) -> None:
    from llamavid.data import synthetic as syn
    from llamavid.train.demo import DemoRecipe

    r = DemoRecipe()
    test = syn.make_clips("test", n_single=r.n_test_single, n_sequence=r.n_test_sequence, n_needle=r.n_test_needle,
                          needle_seconds=r.test_needle_seconds, seed=r.data_seed)
    syn.write_split(test, root / "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/data"))
    parser.add_argument("--model", default="demo")
    parser.add_argument("--modes", default="int8,int4")
    parser.add_argument("--make-data", action="store_true", help="write the held-out split first")
    parser.add_argument("--output", type=Path, default=None, help="write the records as JSON here")
    args = parser.parse_args()
    if args.make_data:
        make_data(args.data)

    from llamavid.model.loading import load_model
    from llamavid.train.demo_eval import LONG_TYPES, run_items

    root = args.data / "test"
    items = [i for i in json.loads((root / "qa.json").read_text()) if i["question_type"] in LONG_TYPES]
    model = load_model(args.model, device="cpu", dtype="float32")
    runs: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    for mode in ["full", *args.modes.split(",")]:
        t0 = time.perf_counter()
        runs[mode] = run_items(model, items, root, progress=False, kv_cache=mode)
        seconds[mode] = time.perf_counter() - t0
        print(f"{mode}: {len(runs[mode])} questions in {seconds[mode]:.0f} s", file=sys.stderr, flush=True)

    full = {r["id"]: r for r in runs["full"]}
    print(f"model {args.model} (float32), {len(items)} long-video held-out questions, greedy, at most 8 new tokens")
    print("| cache | set | questions | answers identical to the full cache | accuracy | full-cache accuracy |")
    print("|---|---|---:|---:|---:|---:|")
    summary = {}
    for mode in runs:
        if mode == "full":
            continue
        for qtype in (*LONG_TYPES, "all"):
            rows = [r for r in runs[mode] if qtype == "all" or r["type"] == qtype]
            same = sum(r["answer"] == full[r["id"]]["answer"] for r in rows)
            acc = sum(r["correct"] for r in rows)
            ref = sum(full[r["id"]]["correct"] for r in rows)
            summary[f"{mode}/{qtype}"] = {"n": len(rows), "identical": same, "correct": acc, "full_correct": ref}
            print(f"| {mode} | {qtype} | {len(rows)} | {same} ({100 * same / len(rows):.1f}%) | "
                  f"{100 * acc / len(rows):.1f}% | {100 * ref / len(rows):.1f}% |")
    differing = [(m, r["id"], full[r["id"]]["answer"], r["answer"]) for m in runs if m != "full"
                 for r in runs[m] if r["answer"] != full[r["id"]]["answer"]]
    for mode, qid, a, b in differing[:12]:
        print(f"  differs ({mode}) {qid}: full {a!r} vs {b!r}")
    print("seconds: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
    if args.output:
        args.output.write_text(json.dumps({"summary": summary, "seconds": seconds, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
