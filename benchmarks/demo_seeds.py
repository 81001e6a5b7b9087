"""The demo recipe over several training seeds: every held-out figure as the mean and the range.

    # one model per seed (the same data; the seed sets the initialisation, the encoder's frames, the order):
    .venv/bin/python -m llamavid.train.demo train --data runs/data --output runs/seed1 --set seed=1
    # evaluate each (the held-out figures of docs/RESULTS.md) and print the table:
    .venv/bin/python benchmarks/demo_seeds.py --data runs/data runs/seed0/demo runs/seed1/demo runs/seed2/demo \\
        [--needle runs/needle/seed0.json runs/needle/seed1.json ...] [--shipped llamavid/assets/demo]

Each model is evaluated by ``llamavid.train.demo_eval.evaluate`` (greedy, the questions of the test split,
the evidence, multiple-choice and chapter sets), its figures written beside it (``evaluation.json``, reused
when present). ``--needle``: look-closer's figures on the needle set per seed (benchmarks/needle.py run
outputs, in the same order). The shipped model is the seed whose figures lie closest to the means
(``--shipped`` names which one was shipped, to mark it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def figures(result: dict) -> dict[str, float]:
    """The held-out figures of one evaluation, by name."""
    out = {f"accuracy: {k}": v["accuracy"] for k, v in result["accuracy"].items()}
    ev = result.get("evidence", {}).get("summary", {})
    for method in ("attention",):
        for name in ("window", "first", "last"):
            if method in ev and name in ev[method]:
                out[f"evidence ({method}): {name}"] = ev[method][name]["hit"]
    ch = result.get("choices", {})
    for mode in ("generate", "likelihood"):
        if mode in ch:
            out[f"multiple choice: {mode}"] = ch[mode]["accuracy"]
    for name, chapters in result.get("chapters", {}).items():  # per set: scenes, content, joins
        out[f"chapters ({name}): changes found"] = chapters["recall"]
        out[f"chapters ({name}): exact clips"] = chapters["exact_clips"]
    return out


def needle_figures(path: Path) -> dict[str, float]:
    records = json.loads(Path(path).read_text())["records"]
    out = {}
    for what in ("plain", "uniform", "closer"):
        for m in sorted({r["minutes"] for r in records}):
            rows = [r[what]["correct"] for r in records if r["minutes"] == m]
            out[f"needle set, {what}: {m} min"] = 100.0 * sum(rows) / len(rows)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--needle", nargs="*", type=Path, default=[])
    parser.add_argument("--shipped", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from llamavid.train.demo_eval import evaluate

    torch.set_num_threads(args.threads)
    per_seed = []
    for model in args.models:
        saved = model / "evaluation.json"
        if saved.is_file():
            result = json.loads(saved.read_text())
        else:
            result = evaluate(str(model), args.data, pointing=True)
            saved.write_text(json.dumps(result, indent=1) + "\n")
        per_seed.append(figures(result))
    for k, path in enumerate(args.needle):
        per_seed[k].update(needle_figures(path))
    names = [n for n in per_seed[0] if all(n in f for f in per_seed)]
    means = {n: statistics.mean(f[n] for f in per_seed) for n in names}
    spread = {n: max(1e-9, max(f[n] for f in per_seed) - min(f[n] for f in per_seed)) for n in names}
    # the most typical seed: the smallest mean distance from the means, each figure in units of its range
    distance = [statistics.mean(abs(f[n] - means[n]) / spread[n] for n in names) for f in per_seed]
    typical = min(range(len(per_seed)), key=lambda k: distance[k])
    heads = [m.parent.name for m in args.models]
    print("| figure | " + " | ".join(heads) + " | mean | range |")
    print("|---|" + "---:|" * (len(heads) + 2))
    for n in names:
        cells = [f"{f[n]:.1f}" for f in per_seed]
        print(f"| {n} | " + " | ".join(cells) + f" | {means[n]:.1f} | {min(f[n] for f in per_seed):.1f}-"
              f"{max(f[n] for f in per_seed):.1f} |")
    print(f"\nmost typical seed: {heads[typical]} (mean distance from the means, in ranges: "
          + ", ".join(f"{h} {d:.2f}" for h, d in zip(heads, distance)) + ")")
    if args.shipped is not None:
        print(f"shipped: {args.shipped}")


if __name__ == "__main__":
    main()
