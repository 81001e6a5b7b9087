"""Library search (``llamavid.search``), measured: quality on a held-out synthetic library, speed and scale.

    .venv/bin/python benchmarks/search.py make --data runs/search                    # render 5 held-out libraries
    .venv/bin/python benchmarks/search.py quality --data runs/search --model demo --out runs/search/demo.json
    .venv/bin/python benchmarks/search.py speed --work runs/search-speed              # 10 hours of demo .vidtok
    .venv/bin/python benchmarks/search.py realsize                                     # per-stretch costs, real width

``make``: ``llamavid.data.synthetic.search_library(split, i)`` for i < ``--libraries`` (default: the held-out
split ``test``, libraries 0-4; each 50 clips of 20-240 s, 20 queries with one right moment each: 12 visual,
"a purple ring", and 8 spoken, "the code word tiger", said in a subtitle line), rendered into
``DATA/SPLIT-libNN/videos`` (videos and their .srt) with ``queries.json``. Tune on another split (``--split
train``), never on the held-out one.

``quality``: every query searched over its library's folder (50 videos, encoded once through the cache at 1
frame/s, the default; the first query of a library builds the indexes), twice: stage 1 alone (``--rerank 0``)
and with the model's check (the default: the best ``max(10, 2 * top)`` checked). A hit at K: one of the first
K moments is in the right video and overlaps the right moment. R@1 and R@5, per kind of query and in all.

``speed``: ``--hours`` (10) of ``.vidtok`` of the demo encoder's width (257 x 176 float16 per frame at 1
frame/s) written from synthetic features (shots of 2-8 s of random content, so the index cuts them as it
would a real video; no video is decoded or encoded), in files of 30 minutes. Measured, each in a fresh
process: building every index (s, and per hour against the demo encoder's measured encode time of an hour,
from a rendered video); one query over the whole library with reranking (cold, indexes built) and its
parts; the peak RSS (VmHWM) of a query over 1/4 of the library and over all of it.

``realsize``: the per-stretch cost of stage 1 at real width (QFormer BERT-base 12 layers, 257 x 1408
features: the summaries of a stretch are 1 + 3 x 16 tokens of width 1408) and the per-frame cost of the
index build (reading + pooling 257 x 1408 float16), measured here on the CPU, and the rerank's cost at real
size (``realsize.py``'s measured 7B prefill rates), extrapolated to 100 hours (see ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


# -- make ---------------------------------------------------------------------------------------------------


def make(data: Path, split: str, libraries: int) -> None:
    from dataclasses import asdict

    from llamavid.data import synthetic as syn

    t0 = time.perf_counter()
    for i in range(libraries):
        clips, queries = syn.search_library(split, i)
        folder = data / f"{split}-lib{i:02d}"
        syn.write_split(clips, folder)
        (folder / "queries.json").write_text(json.dumps([asdict(q) for q in queries], indent=1) + "\n")
        print(f"{folder.name}: {len(clips)} videos, {sum(c.seconds for c in clips) / 3600:.2f} h, "
              f"{len(queries)} queries ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


# -- quality ------------------------------------------------------------------------------------------------


def hit_rank(moments, q) -> int | None:
    """The 1-based rank of the first moment that overlaps the query's right moment, or None."""
    for rank, m in enumerate(moments, 1):
        if Path(m.video).stem == q["video"] and m.start < q["end"] and m.end > q["start"]:
            return rank
    return None


def quality(data: Path, model_name: str, split: str, out: Path | None, limit: int | None,
            stages: tuple[str, ...]) -> dict:
    import llamavid
    from llamavid.core.options import AskOptions, SearchOptions

    _threads()
    os.environ.setdefault("LLAMAVID_CACHE", str(data / "cache"))
    model = llamavid.load_model(model_name, device="cpu", dtype="float32")
    ask = AskOptions(temperature=0.0)
    settings = {"stage1": SearchOptions(top=5, rerank=0, ask=ask), "rerank": SearchOptions(top=5, ask=ask)}
    rows = []
    folders = sorted(data.glob(f"{split}-lib*"))
    if not folders:
        raise SystemExit(f"{data}: no {split}-libNN folders: run `make` first")
    for folder in folders:
        queries = json.loads((folder / "queries.json").read_text())[:limit]
        for q in queries:
            row = {"id": q["id"], "kind": q["kind"], "text": q["text"]}
            for stage in stages:
                result = llamavid.search(model, [folder / "videos"], q["text"], settings[stage])
                row[stage] = {"rank": hit_rank(result.moments, q), "seconds": result.seconds,
                              "top": [[Path(m.video).stem, m.start, m.end, round(m.score, 4)]
                                      for m in result.moments[:3]]}
            rows.append(row)
            print(json.dumps({k: row[k] if k not in stages else row[k]["rank"] for k in row}), file=sys.stderr,
                  flush=True)
    report = {"model": model_name, "split": split, "libraries": len(folders), "queries": len(rows),
              "recall": summarize(rows, stages), "rows": rows}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report, stages))
    return report


def summarize(rows: list[dict], stages: tuple[str, ...]) -> dict:
    out = {}
    for stage in stages:
        for kind in ("visual", "spoken", "all"):
            chosen = [r for r in rows if kind == "all" or r["kind"] == kind]
            if not chosen:
                continue
            ranks = [r[stage]["rank"] for r in chosen]
            out[f"{stage}/{kind}"] = {"n": len(chosen),
                                      "R@1": sum(r == 1 for r in ranks) / len(chosen),
                                      "R@5": sum(r is not None and r <= 5 for r in ranks) / len(chosen),
                                      "seconds_median": statistics.median(
                                          sum(r[stage]["seconds"].values()) for r in chosen)}
    return out


def table(report: dict, stages: tuple[str, ...]) -> str:
    lines = [f"model {report['model']}, {report['queries']} queries over {report['libraries']} libraries "
             f"of split {report['split']}",
             "| stage | kind | queries | R@1 | R@5 | median s/query |", "|---|---|---|---|---|---|"]
    for key, v in report["recall"].items():
        stage, kind = key.split("/")
        lines.append(f"| {stage} | {kind} | {v['n']} | {v['R@1']:.1%} | {v['R@5']:.1%} | {v['seconds_median']:.2f} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("make")
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "search")
    p.add_argument("--split", default="test")
    p.add_argument("--libraries", type=int, default=5)
    p = sub.add_parser("quality")
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "search")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default="demo")
    p.add_argument("--out", type=Path)
    p.add_argument("--limit", type=int, help="queries per library (default: all)")
    p.add_argument("--stages", default="stage1,rerank")
    args = parser.parse_args(argv)
    if args.part == "make":
        make(args.data, args.split, args.libraries)
    elif args.part == "quality":
        quality(args.data, args.model, args.split, args.out, args.limit, tuple(args.stages.split(",")))


if __name__ == "__main__":
    main()
