"""Library search (``llamavid.search``), measured: quality on a held-out synthetic library, speed and scale.

    .venv/bin/python benchmarks/search.py make --data runs/search                    # render 5 held-out libraries
    .venv/bin/python benchmarks/search.py quality --data runs/search --model demo --out runs/search/demo.json
    .venv/bin/python benchmarks/search.py speed --work runs/search-speed              # 10 hours of demo .vidtok
    .venv/bin/python benchmarks/search.py realsize                                     # per-stretch costs, real width
    .venv/bin/python benchmarks/search.py grounding --data runs/search --model demo    # does attention find the shape?

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

``grounding``: for each visual query, the token scorer on every frame of its right video (with the query, with
the question the demo recipe grounds, "What color is the ring?", and with the check's question around the
query): the right frames' z within their video, and (with the query and the check's question) that of the
frames of the same video that show the same kind in another colour.
It tells a model whose attention finds what a query names from one whose attention does not.

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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py, realsize.py


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
            stages: tuple[str, ...], grid: int | None = None, visual_text: str | None = None,
            closer: int | None = None, stretch_score: str | None = None, closer_mix: float | None = None,
            best_runs: int | None = None) -> dict:
    import llamavid
    from llamavid.core.options import AskOptions, SearchOptions
    from llamavid.features.search_index import IndexSettings
    from llamavid.tasks.search import CHECK_PROMPT

    _threads()
    os.environ.setdefault("LLAMAVID_CACHE", str(data / "cache"))
    model = llamavid.load_model(model_name, device="cpu", dtype="float32")
    ask = AskOptions(temperature=0.0)
    more = {} if closer is None else {"closer": closer}  # how many stretches stage 1b looks at (tuning)
    settings = {"stage1": SearchOptions(top=5, closer=0, rerank=0, ask=ask),
                "closer": SearchOptions(top=5, rerank=0, ask=ask, **more),
                "rerank": SearchOptions(top=5, ask=ask, **more)}
    index_settings = IndexSettings() if grid is None else IndexSettings(grid=grid)
    # what the first stage's attention reads: "query" (as it is), "check" (CHECK_PROMPT), or a template
    named = {"query": "{query}", "check": CHECK_PROMPT}
    tuning = {} if visual_text is None else {"visual_text": named.get(visual_text, visual_text)}
    if stretch_score is not None:  # how stage 1 scores a stretch's summary, and the closer look's mix (tuning)
        tuning["stretch_score"] = stretch_score
    if closer_mix is not None:
        tuning["closer_mix"] = closer_mix
    if best_runs is not None:
        tuning["best_runs"] = best_runs
    rows = []
    folders = sorted(data.glob(f"{split}-lib*"))
    if not folders:
        raise SystemExit(f"{data}: no {split}-libNN folders: run `make` first")
    for folder in folders:
        queries = json.loads((folder / "queries.json").read_text())[:limit]
        for q in queries:
            row = {"id": q["id"], "kind": q["kind"], "text": q["text"]}
            for stage in stages:
                result = llamavid.search(model, [folder / "videos"], q["text"], settings[stage],
                                         index_settings=index_settings, **tuning)
                row[stage] = {"rank": hit_rank(result.moments, q), "seconds": result.seconds,
                              "top": [[Path(m.video).stem, m.start, m.end, round(m.score, 4)]
                                      for m in result.moments[:3]]}
            rows.append(row)
            print(json.dumps({k: row[k] if k not in stages else row[k]["rank"] for k in row}), file=sys.stderr,
                  flush=True)
    report = {"model": model_name, "split": split, "libraries": len(folders), "queries": len(rows),
              "index_settings": vars(index_settings), **tuning,
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


# -- grounding: does the model's text-guided attention find what a visual query names? --------------------


def grounding(data: Path, model_name: str, split: str, limit: int | None) -> dict:
    """For each visual query, every frame of its right video scored by the token scorer (the text-guided
    attention stage 1 reads, on whole frames), with the query and with the question the demo recipe grounds
    ("What color is the ring?"): the right frames' z within their video (> 0: above the video's mean)."""

    import llamavid
    from llamavid.core.options import AskOptions
    from llamavid.data import synthetic as syn
    from llamavid.pipeline.inputs import open_input
    from llamavid.tasks.relevance import token_scores

    _threads()
    os.environ.setdefault("LLAMAVID_CACHE", str(data / "cache"))
    model = llamavid.load_model(model_name, device="cpu", dtype="float32")
    from llamavid.tasks.search import CHECK_PROMPT

    zs: dict[str, list[float]] = {"query": [], "question": [], "check": [], "same_kind_other_colour": [],
                                  "check_same_kind_other_colour": []}
    for folder in sorted(data.glob(f"{split}-lib*")):
        clips = {c.id: c for c in syn.search_library(split, int(folder.name.rsplit("lib", 1)[1]))[0]}
        queries = [q for q in json.loads((folder / "queries.json").read_text()) if q["kind"] == "visual"][:limit]
        for q in queries:
            color, kind = q["text"].split()[-2:]
            with open_input(model, folder / "videos" / f"{q['video']}.mp4", AskOptions()) as vin:
                times = list(vin.timestamps)
                right = [i for i, t in enumerate(times) if q["start"] <= t < q["end"]]
                # frames that show the same kind in another colour (and nothing of the query's colour)
                events = clips[q["video"]].events
                others = [i for i, t in enumerate(times)
                          if any(e.shape == kind and e.color != color and e.start <= t < e.end for e in events)
                          and not any(e.color == color and e.start <= t < e.end for e in events)]
                for name, text in (("query", q["text"]), ("question", f"What color is the {kind}?"),
                                   ("check", CHECK_PROMPT.format(query=q["text"]))):
                    s = token_scores(model, vin.features, text, range(vin.num_frames), long_video=False)
                    z = (s - s.mean()) / (s.std() or 1.0)
                    zs[name] += [float(z[i]) for i in right]
                    if name != "question":
                        zs[{"query": "", "check": "check_"}[name] + "same_kind_other_colour"] += [
                            float(z[i]) for i in others]
    report = {"model": model_name, "split": split, "right_frames": len(zs["query"]),
              "same_kind_other_colour_frames": len(zs["same_kind_other_colour"]),
              **{f"{k}_z_median": statistics.median(v) for k, v in zs.items() if v},
              **{f"{k}_above_mean": sum(z > 0 for z in v) / len(v) for k, v in zs.items() if v}}
    print(json.dumps(report, indent=1))
    return report


# -- speed ---------------------------------------------------------------------------------------------------

FILE_MINUTES = 30
SPEED_QUERIES = ("the code word tiger", "a purple ring")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def write_library(work: Path, hours: float) -> list[Path]:
    """``hours`` of .vidtok of the demo encoder's width in files of FILE_MINUTES (reused when present): shots of
    2-8 s of random content (frames of one shot differ by a little noise), a subtitle line every 8-15 s, and
    "The code word is tiger." once, in the middle file."""
    import numpy as np

    import llamavid
    from llamavid.features.vidtok import VidtokWriter, open_vidtok

    model = llamavid.load_model("demo", device="cpu", dtype="float32")
    encoder = dict(model.vision_identity())
    with open_vidtok(_demo_vidtok(work, model)) as vt:
        tokens, width = vt.feature_shape
    files = []
    count = int(round(hours * 60 / FILE_MINUTES))
    frames = FILE_MINUTES * 60
    lines = ("Remember the code word.", "Watch the shapes.", "Now watch this.", "The end is near.")
    for f in range(count):
        path = work / "library" / f"part{f:03d}.vidtok"
        files.append(path)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(f)
        writer = VidtokWriter(path, encoder=encoder, fps=1.0, storage="float16", chunk_frames=64,
                              source={"content_hash": f"sha256:bench-search-{f}", "name": path.name,
                                      "duration": float(frames)})
        cuts = np.cumsum(rng.integers(2, 9, size=frames))
        shot_of = np.searchsorted(cuts, np.arange(frames), side="right")
        bases = rng.normal(size=(int(shot_of[-1]) + 1, tokens, width)).astype(np.float32)
        for start in range(0, frames, 64):
            n = min(64, frames - start)
            feats = bases[shot_of[start:start + n]] + 0.05 * rng.normal(size=(n, tokens, width)).astype(np.float32)
            writer.append(feats, [float(t) for t in range(start, start + n)])
        subs, t = [], float(rng.integers(1, 8))
        while t < frames - 3:
            subs.append((t, t + 2.0, lines[int(rng.integers(len(lines)))]))
            t += float(rng.integers(8, 16))
        if f == count // 2:
            subs = [x for x in subs if abs(x[0] - 600) > 3] + [(600.0, 602.0, "The code word is tiger.")]
        writer.finalize(subtitles=sorted(subs))
    return files


def _demo_vidtok(work: Path, model) -> Path:
    """A rendered 5-minute synthetic video encoded by the demo model (its features' shape; the encode rate)."""
    from llamavid.data import synthetic as syn

    folder = work / "encode"
    marker = folder / "encode.json"
    if not marker.exists():
        [clip] = [c for c in syn.search_library("train", 9, videos=12, seconds=(300, 300))[0]][:1]
        syn.write_split([clip], folder)
        os.environ["LLAMAVID_CACHE"] = str(folder / "cache")
        from llamavid.core.options import AskOptions
        from llamavid.pipeline.inputs import open_input

        w0, c0 = time.perf_counter(), time.process_time()
        with open_input(model, folder / "videos" / f"{clip.id}.mp4", AskOptions()) as vin:
            n = vin.num_frames
        marker.write_text(json.dumps({"frames": n, "wall": time.perf_counter() - w0,
                                      "cpu": time.process_time() - c0}) + "\n")
    return next((folder / "cache" / "vidtok").glob("*.vidtok"))


def child_index(files: list[Path]) -> dict:
    """Every file's index built afresh (old sidecars removed first)."""
    from llamavid.features.search_index import index_for, index_path_for
    from llamavid.features.vidtok import open_vidtok

    for p in files:
        index_path_for(p).unlink(missing_ok=True)
    w0, c0 = time.perf_counter(), time.process_time()
    frames = stretches = size = 0
    for p in files:
        with open_vidtok(p) as vt:
            index, _ = index_for(vt)
            frames += vt.num_frames
            stretches += len(index)
        size += index_path_for(p).stat().st_size
    return {"files": len(files), "frames": frames, "stretches": stretches, "wall": time.perf_counter() - w0,
            "cpu": time.process_time() - c0, "index_bytes": size,
            "vidtok_bytes": sum(p.stat().st_size for p in files)}


def child_query(files: list[Path], queries: tuple[str, ...], tuning: dict | None = None) -> dict:
    """Each query over ``files`` (indexes built) with the defaults (top 5, the model checks 10; ``tuning``:
    keyword arguments of ``llamavid.search`` such as ``stretch_score``), in order; the peak RSS of the searches
    above what the loaded model holds."""
    import llamavid
    from llamavid.core.options import AskOptions, SearchOptions

    _threads()
    model = llamavid.load_model("demo", device="cpu", dtype="float32")
    base = _vm("VmRSS")
    reset = _reset_peak()
    out: dict = {"files": len(files), "rss_after_load": base, "queries": []}
    for q in queries:
        w0, c0 = time.perf_counter(), time.process_time()
        result = llamavid.search(model, files, q, SearchOptions(ask=AskOptions(temperature=0.0)), **(tuning or {}))
        out["queries"].append({"query": q, "wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
                               "seconds": result.seconds, "stretches": result.stretches,
                               "indexes": result.indexes,
                               "top": [[Path(m.video).name, m.start, m.end, round(m.score, 3)]
                                       for m in result.moments[:2]]})
    out["peak_rss"] = _vm("VmHWM")
    out["peak_above_load"] = out["peak_rss"] - base if reset else None
    return out


def _child(name: str, **kwargs) -> dict:
    """A part in a fresh process (its own peak memory): this script's ``child`` command."""
    cmd = [sys.executable, __file__, "child", name, json.dumps({k: (list(map(str, v)) if isinstance(v, (list, tuple))
                                                                  else v) for k, v in kwargs.items()})]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", "1")))
    if done.returncode != 0:
        raise SystemExit(f"child {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(work: Path, hours: float, out: Path | None) -> dict:
    from machine import describe

    _threads()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = write_library(work, hours)
    print(f"library: {len(files)} files of {FILE_MINUTES} min ({time.perf_counter() - t0:.0f} s to write or find)",
          file=sys.stderr, flush=True)
    encode = json.loads((work / "encode" / "encode.json").read_text())
    index = _child("index", files=files)
    quarter = _child("query", files=files[: max(1, len(files) // 4)], queries=list(SPEED_QUERIES))
    whole = _child("query", files=files, queries=list(SPEED_QUERIES))
    # side by side: the first stage as it was before BEST_RUNS (no stretch ranked again by its best run), and
    # with twice as many ranked again
    before = _child("query", files=files, queries=list(SPEED_QUERIES), tuning={"best_runs": 0})
    more = _child("query", files=files, queries=list(SPEED_QUERIES), tuning={"best_runs": 400})
    hours_built = index["frames"] / 3600
    report = {"machine": describe(), "hours": hours_built, "encode": encode, "index": index,
              "quarter": quarter, "whole": whole, "best_runs_0": before, "best_runs_400": more,
              "encode_seconds_per_hour": encode["wall"] / encode["frames"] * 3600,
              "index_seconds_per_hour": index["wall"] / hours_built}
    report["index_share_of_encode"] = report["index_seconds_per_hour"] / report["encode_seconds_per_hour"]
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n")
    parts = ("quarter", "whole", "best_runs_0", "best_runs_400")
    print(json.dumps({k: v for k, v in report.items() if k not in parts}, indent=1))
    for name in parts:
        r = report[name]
        print(f"{name}: {r['files']} files, peak RSS {r['peak_rss'] / 1e6:.0f} MB "
              f"({(r['peak_above_load'] or 0) / 1e6:.0f} MB above the loaded model)")
        for q in r["queries"]:
            print(f"  {q['query']!r}: {q['wall']:.2f} s wall, {q['cpu']:.2f} s CPU "
                  f"({', '.join(f'{k} {v:.2f} s' for k, v in q['seconds'].items())}), {q['stretches']} stretches, "
                  f"indexes {q['indexes']}, top {q['top']}")
    return report


# -- real size ------------------------------------------------------------------------------------------------


def realsize(work: Path, stretches: int, frames: int, out: Path | None) -> dict:
    """Stage 1 per stretch and the index build per frame at real width (see the module docstring), measured on
    this CPU in float32 and bfloat16."""
    import numpy as np
    import torch
    from machine import describe
    from realsize import EVA, real_width_model, write_bert_vocab

    from llamavid.features.search_index import IndexSettings, build_index
    from llamavid.features.vidtok import VidtokWriter, open_vidtok
    from llamavid.model.qformer import load_qformer_tokenizer

    _threads()
    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    write_bert_vocab(work)
    qtok = load_qformer_tokenizer(str(work))

    model = real_width_model(qtok, torch.device("cpu"), torch.float32)
    settings = IndexSettings()
    side = 1 + settings.max_parts * settings.grid ** 2  # a 3-part stretch's summary: 1 + 3 x 16 tokens
    part = 1 + settings.grid ** 2  # one run's pooled frame, a picture of its own (STRETCH_SCORE "parts")
    report: dict = {"machine": describe(), "summary_tokens": side, "part_tokens": part, "stretches_measured": stretches}
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    class _NoModules(contextlib.nullcontext):  # (its per-module hooks need autograd; inference mode has none)
        parents = ("Global",)

    for name, tokens in (("stage1", side), ("stage1_part", part)):  # a whole 3-part summary; one run's picture
        for dtype in (torch.float32, torch.bfloat16):
            m = model.to(dtype)
            pictures = (torch.randn(stretches, tokens, EVA["width"]) * 0.5).to(dtype)
            m.context_relevance(pictures[:8], "a purple ring")  # warm-up
            w0, c0 = time.perf_counter(), time.process_time()
            m.context_relevance(pictures, "a purple ring", chunk_frames=256)
            report[f"{name}_{str(dtype).split('.')[-1]}"] = {
                "wall_per_picture": (time.perf_counter() - w0) / stretches,
                "cpu_per_picture": (time.process_time() - c0) / stretches}
        counter = FlopCounterMode(display=False)
        counter.mod_tracker = _NoModules()
        with counter:
            model.float().context_relevance(pictures[:16].float(), "a purple ring", chunk_frames=256)
        report[f"{name}_flops_per_picture"] = counter.get_total_flops() / 16
    model.float()
    # the index build per frame at real width: a .vidtok of 257 x 1408 float16 frames, shots of 5 s
    path = work / "realwidth.vidtok"
    if not path.exists():
        rng = np.random.default_rng(0)
        writer = VidtokWriter(path, encoder={"fingerprint": "sha256:bench-eva-sized"}, fps=1.0, storage="float16",
                              chunk_frames=64, source={"content_hash": "sha256:bench-rw", "name": "rw",
                                                       "duration": float(frames)})
        for start in range(0, frames, 64):
            n = min(64, frames - start)
            base = rng.normal(size=(n // 5 + 2, 1 + EVA["grid"] ** 2, EVA["width"])).astype(np.float32)
            shot = (np.arange(start, start + n) // 5) - start // 5
            writer.append(base[shot] + 0.05 * rng.normal(size=(n, 257, EVA["width"])).astype(np.float32),
                          [float(t) for t in range(start, start + n)])
        writer.finalize()
    from llamavid.features.search_index import index_path_for, read_index, write_index

    with open_vidtok(path) as vt:
        w0, c0 = time.perf_counter(), time.process_time()
        index = build_index(vt)
        report["index_build"] = {"frames": vt.num_frames, "wall_per_frame": (time.perf_counter() - w0) / vt.num_frames,
                                 "cpu_per_frame": (time.process_time() - c0) / vt.num_frames,
                                 "stretches": len(index), "index_bytes_per_frame": index.nbytes / vt.num_frames,
                                 "vidtok_bytes_per_frame": path.stat().st_size / vt.num_frames}
    # a query's host side per stretch: the sidecar read (every digest checked) and the summaries built
    write_index(index, index_path_for(path))
    walls, cpus = [], []
    for _ in range(7):
        w0, c0 = time.perf_counter(), time.process_time()
        again = read_index(index_path_for(path))
        parts = again.parts()
        for k in np.unique(parts):
            again.summaries(np.nonzero(parts == k)[0], torch.float16)  # as a GPU model takes them
        walls.append((time.perf_counter() - w0) / len(index))
        cpus.append((time.process_time() - c0) / len(index))
    report["query_host"] = {"wall_per_stretch": statistics.median(walls), "cpu_per_stretch": statistics.median(cpus),
                            "cpu_per_stretch_max": max(cpus), "frames_per_stretch": index.num_frames / len(index),
                            "parts_per_stretch": len(index.positions) / len(index)}
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report


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
    p.add_argument("--stages", default="stage1,closer,rerank")
    p.add_argument("--closer", type=int, help="stretches stage 1b looks at closer (default: SearchOptions().closer); "
                   "tuning only")
    p.add_argument("--grid", type=int, help="the index's summary grid (default: IndexSettings().grid); tuning only")
    p.add_argument("--visual-text", help="what stage 1's attention reads: query, check or a {query} template; "
                                         "tuning only (default: llamavid.tasks.search.VISUAL_TEXT)")
    p.add_argument("--stretch-score", choices=("parts", "whole"), help="how stage 1 scores a stretch's summary "
                   "(default: llamavid.tasks.search.STRETCH_SCORE); tuning only")
    p.add_argument("--closer-mix", type=float, help="the first stage's share of the closer look's score (default: "
                   "llamavid.tasks.search.CLOSER_MIX); tuning only")
    p.add_argument("--best-runs", type=int, help="stretches stage 1 ranks again by their best run (default: "
                   "llamavid.tasks.search.BEST_RUNS); tuning only")
    p = sub.add_parser("grounding")
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "search")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default="demo")
    p.add_argument("--limit", type=int, help="visual queries per library (default: all)")
    p = sub.add_parser("speed")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "search-speed")
    p.add_argument("--hours", type=float, default=10.0)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("realsize")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "search-realsize")
    p.add_argument("--stretches", type=int, default=256)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("child")
    p.add_argument("name", choices=("index", "query"))
    p.add_argument("args")
    args = parser.parse_args(argv)
    if args.part == "child":
        kw = json.loads(args.args)
        files = [Path(f) for f in kw.pop("files")]
        result = child_index(files) if args.name == "index" else child_query(files, tuple(kw["queries"]),
                                                                              kw.get("tuning"))
        print(json.dumps(result))
    elif args.part == "grounding":
        grounding(args.data, args.model, args.split, args.limit)
    elif args.part == "speed":
        speed(args.work, args.hours, args.out)
    elif args.part == "realsize":
        realsize(args.work, args.stretches, args.frames, args.out)
    elif args.part == "make":
        make(args.data, args.split, args.libraries)
    elif args.part == "quality":
        quality(args.data, args.model, args.split, args.out, args.limit, tuple(args.stages.split(",")), args.grid,
                args.visual_text, args.closer, args.stretch_score, args.closer_mix, args.best_runs)


if __name__ == "__main__":
    main()
