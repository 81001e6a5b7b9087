"""Held-out measurements of what points into the video: evidence ranges, multiple choice, chapters.

Part of ``python -m llamavid.train.demo evaluate`` (docs/RESULTS.md). The sets are rendered from the test
split's seeds on first use (``<data>/test-window``, ``<data>/test-scenes``, ``<data>/test-content``,
``<data>/test-content-joins``, ``<data>/test/mc.json``), so the generator knows when each shape is on screen
and where each scene changes:

* **evidence, window**: a quiet 12-24 s video with ONE shape on screen for 2-4 s; "what colour is the
  shape?". Right when the top-1 range overlaps the seconds the shape is on screen.
* **evidence, first / last**: the sequence clips with two or three shapes; "what colour is the first
  (last) shape?". Right when the top-1 range overlaps the first (last) shape's seconds.
* **multiple choice**: the held-out colour, shape, count, first and last questions with four options
  (three for counts), answered by generation (the reply's letter or option text) and by likelihood.
* **chapters**: boundary finding alone, from the features, on three held-out sets of 3-6 parts of 12-24 s
  (changes at any tenth of a second): *scenes* (each part its own backdrop and shape, ``<data>/test-scenes``),
  *content* (ONE backdrop, each part a new shape of any size and place, ``<data>/test-content``) and
  *content, joins and leaves* (ONE backdrop; a shape also joins another or leaves,
  ``<data>/test-content-joins``). A true change is found when a boundary lies within 1 s of it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data import synthetic as syn

N_WINDOW = 50
N_SCENES = 30
TOLERANCE = 1.0  # seconds, for chapter boundaries
# the chapter sets: name -> (folder under <data>, clip design, its parameters, what the table calls it)
CHAPTER_SETS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "scenes": ("test-scenes", "scenes", {"scene_seconds": (12.0, 24.0)}, "scenes (backdrop changes)"),
    "content": ("test-content", "content", {"part_seconds": (12.0, 24.0)}, "content (one backdrop, a new shape)"),
    "joins": ("test-content-joins", "content",
              {"seed": 1, "part_seconds": (12.0, 24.0), "changes": syn.CONTENT_CHANGES},
              "content, joins and leaves too (watched, not a goal)"),
}


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _ensure(folder: Path, kind: str, n: int, **design) -> list[dict]:
    """The clips of an extra design, rendered once (deterministic), as dicts from clips.json."""
    if not (folder / "clips.json").is_file():
        syn.write_split(syn.make_extra_clips("test", kind, n, **design), folder)
    return json.loads((folder / "clips.json").read_text())


def _overlaps(r: dict | None, start: float, end: float) -> bool:
    return r is not None and r["start"] < end and r["end"] > start


# ---------------------------------------------------------------------------------------------------------
# evidence


def evidence_cases(data: Path) -> list[dict]:
    """(video, question, answer, the seconds that hold the answer, set) for the two evidence sets."""
    cases = []
    root = data / "test-window"
    for clip in _ensure(root, "window", N_WINDOW):
        ev = clip["events"][0]
        qtype, question, answer = clip["qa"][0]
        cases.append({"set": "window", "video": str(root / "videos" / f"{clip['id']}.mp4"), "question": question,
                      "expected": answer, "window": (ev["start"], ev["end"]), "seconds": clip["seconds"]})
    root = data / "test"
    for clip in json.loads((root / "clips.json").read_text()):
        if clip["kind"] != "sequence" or len(clip["events"]) < 2:
            continue
        for qtype, question, answer in clip["qa"]:
            if qtype in ("first", "last"):
                ev = clip["events"][0 if qtype == "first" else -1]
                cases.append({"set": qtype, "video": str(root / "videos" / f"{clip['id']}.mp4"), "question": question,
                              "expected": answer, "window": (ev["start"], ev["end"]), "seconds": clip["seconds"]})
    return cases


def evaluate_evidence(model, data: Path, methods: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every method on every case, through ``qa.answer_questions`` (greedy), timed side by side with the
    plain answer of the same question on the same token file (best of two runs each, to damp noise
    from other processes)."""
    from ..core.options import AskOptions
    from ..pipeline.inputs import open_input
    from ..tasks.evidence import METHODS
    from ..tasks.qa import Question, answer_questions
    from .demo_eval import first_word

    methods = methods or METHODS
    cases = evidence_cases(data)
    _log(f"evidence: {len(cases)} questions x {len(methods)} methods")
    options = AskOptions(temperature=0.0, max_new_tokens=8)
    records = []
    t0 = time.perf_counter()
    for n, case in enumerate(cases):
        with open_input(model, case["video"], options) as vin:
            def run(method: str | None):
                opts = options if method is None else options.replace(evidence=True)
                best, result = None, None
                for _ in range(2):
                    start = time.perf_counter()
                    [result] = answer_questions(model, vin, [Question(case["question"], opts)],
                                                evidence_method=method or "attention")
                    took = time.perf_counter() - start
                    best = took if best is None else min(best, took)
                if result.error is not None:
                    raise result.error
                return result.answer, best

            plain, plain_s = run(None)
            record = {"set": case["set"], "question": case["question"], "expected": case["expected"],
                      "answer": plain.text, "correct": first_word(plain.text) == case["expected"],
                      "window": case["window"], "seconds": case["seconds"], "plain_s": plain_s, "methods": {}}
            for method in methods:
                answer, took = run(method)
                top = answer.evidence[0].to_json() if answer.evidence else None
                record["methods"][method] = {"top": top, "hit": _overlaps(top, *case["window"]), "s": took,
                                             "ranges": len(answer.evidence)}
        records.append(record)
        if (n + 1) % 25 == 0:
            _log(f"  {n + 1}/{len(cases)} ({time.perf_counter() - t0:.0f} s)")
    return {"records": records, "summary": summarize_evidence(records, methods)}


def summarize_evidence(records: list[dict], methods) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in methods:
        row: dict[str, Any] = {}
        for name in ("window", "first", "last"):
            rows = [r for r in records if r["set"] == name]
            if not rows:
                continue
            hits = [r["methods"][method]["hit"] for r in rows]
            right = [r["methods"][method]["hit"] for r in rows if r["correct"]]
            tops = [r["methods"][method]["top"] for r in rows]
            lengths = [t["end"] - t["start"] for t in tops if t is not None]
            row[name] = {"n": len(rows), "hit": 100.0 * sum(hits) / len(rows),
                         "hit_when_right": 100.0 * sum(right) / len(right) if right else None, "right": len(right),
                         "top_seconds": statistics.mean(lengths) if lengths else None,
                         "none": sum(t is None for t in tops)}
        ratios = [r["methods"][method]["s"] / r["plain_s"] for r in records]
        row["cost_ratio"] = statistics.median(ratios)
        row["seconds"] = statistics.median(r["methods"][method]["s"] for r in records)
        out[method] = row
    out["plain_seconds"] = statistics.median(r["plain_s"] for r in records)
    out["answer_accuracy"] = {name: 100.0 * statistics.mean(r["correct"] for r in records if r["set"] == name)
                              for name in ("window", "first", "last") if any(r["set"] == name for r in records)}
    return out


# ---------------------------------------------------------------------------------------------------------
# multiple choice


def evaluate_choices(model, data: Path) -> dict[str, Any]:
    """The held-out multiple-choice set answered by generation and by likelihood (``llamavid eval``'s
    two ``--mcq`` modes), scored by the multiple-choice scorer."""
    import tempfile

    from ..core.options import AskOptions
    from ..eval import load_benchmark, run_predictions, score_file
    from ..eval.answerer import video_answerer

    root = data / "test"
    mc = root / "mc.json"
    if not mc.is_file():
        mc.write_text(json.dumps(syn.choice_items(json.loads((root / "qa.json").read_text()))) + "\n")
    items = load_benchmark("synthetic-mc", mc, root)
    out: dict[str, Any] = {"n": len(items)}
    with tempfile.TemporaryDirectory(prefix="llamavid-mc-") as tmp:
        for mode in ("generate", "likelihood"):
            answer = video_answerer(model, AskOptions(temperature=0.0, max_new_tokens=8), mcq=mode)
            t0 = time.perf_counter()
            path = Path(tmp) / f"{mode}.jsonl"
            run_predictions(items, None, path, answer_batch_fn=answer)
            result = score_file("synthetic-mc", path)
            out[mode] = {"accuracy": 100.0 * (result.metrics["accuracy"] or 0.0), "seconds": time.perf_counter() - t0,
                         "no_option": result.counts.get("no_option", 0), "errors": result.counts.get("errors", 0),
                         "by_type": {k: 100.0 * v["accuracy"] for k, v in result.breakdown.items()}}
            _log(f"multiple choice ({mode}): {out[mode]['accuracy']:.1f}%")
    return out


# ---------------------------------------------------------------------------------------------------------
# chapters


def evaluate_chapters(model, data: Path, sets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Boundaries found in the features vs the true changes, for each chapter set (``CHAPTER_SETS``):
    {set name: {"clips", "changes", "boundaries", "recall", "precision", "exact_clips", "mean_error",
    "seconds_per_clip"}}."""
    return {name: _chapter_set(model, data, name) for name in (sets or tuple(CHAPTER_SETS))}


def true_changes(clip: dict) -> list[float]:
    """Where a clip (a dict from clips.json) changes: its scene starts, or where a shape appears or leaves."""
    if clip["scenes"]:
        return [float(start) for start, _ in clip["scenes"][1:]]
    return syn.content_changes(clip)


def _chapter_set(model, data: Path, name: str) -> dict[str, Any]:
    from ..core.options import AskOptions
    from ..pipeline.inputs import open_input
    from ..tasks.chapters import find_boundaries, frame_vectors

    folder, kind, design, _ = CHAPTER_SETS[name]
    root = data / folder
    clips = _ensure(root, kind, N_SCENES, **design)
    found = matched = truths = recalled = exact = 0
    errors, seconds = [], []
    for clip in clips:
        cuts = true_changes(clip)
        with open_input(model, root / "videos" / f"{clip['id']}.mp4", AskOptions()) as vin:
            t0 = time.perf_counter()
            stamps = vin.timestamps
            bounds = find_boundaries(stamps, frame_vectors(vin.features))
            seconds.append(time.perf_counter() - t0)
        times = [float((stamps[i - 1] + stamps[i]) / 2) for i in bounds]
        truths += len(cuts)
        found += len(times)
        near = [min((abs(t - c) for t in times), default=np.inf) for c in cuts]
        recalled += sum(d <= TOLERANCE for d in near)
        errors += [d for d in near if d <= TOLERANCE]
        matched += sum(min((abs(t - c) for c in cuts), default=np.inf) <= TOLERANCE for t in times)
        exact += len(times) == len(cuts) and all(d <= TOLERANCE for d in near)
    out = {"clips": len(clips), "changes": truths, "boundaries": found,
           "recall": 100.0 * recalled / max(1, truths), "precision": 100.0 * matched / max(1, found),
           "exact_clips": 100.0 * exact / len(clips), "mean_error": statistics.mean(errors) if errors else None,
           "seconds_per_clip": statistics.median(seconds)}
    _log(f"chapters ({name}): {out['recall']:.1f}% of {truths} changes found, {out['precision']:.1f}% of {found} "
         f"boundaries real")
    return out


# ---------------------------------------------------------------------------------------------------------
# report


def render(result: dict[str, Any]) -> list[str]:
    """Markdown sections for docs/RESULTS.md."""
    from ..tasks.evidence import DEFAULT_METHOD

    lines: list[str] = []
    ev = result.get("evidence")
    if ev:
        s = ev["summary"]
        methods = [m for m in s if m not in ("plain_seconds", "answer_accuracy")]
        n = {name: s[methods[0]][name]["n"] for name in ("window", "first", "last") if name in s[methods[0]]}
        acc = s["answer_accuracy"]
        lines += ["", "## Evidence: where the answer is", "",
                  "`ask --evidence` on held-out clips whose generator knows when each shape is on screen. A question "
                  "counts as localised when the top-1 range overlaps the seconds the answer is shown. *window*: one "
                  f"shape on screen for 2-4 s of a quiet 12-24 s video ({n.get('window', 0)} clips); *first*/*last*: "
                  f"sequences of two or three shapes ({n.get('first', 0)} clips). Cost: time of an answer with "
                  "evidence "
                  "divided by the plain answer's, same question and token file, medians (best of two runs each).", "",
                  "| method | window | first | last | top-1 range (s, window) | time with evidence / plain answer |",
                  "|---|---:|---:|---:|---:|---:|"]
        for m in methods:
            row = s[m]
            cells = [f"{row[k]['hit']:.1f}%" if k in row else "-" for k in ("window", "first", "last")]
            top = row.get("window", {}).get("top_seconds")
            shown = "-" if top is None else f"{top:.1f}"
            name = f"{m} (default)" if m == DEFAULT_METHOD else m
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {shown} | {row['cost_ratio']:.2f}x |")
        lines += ["", f"The answers themselves (greedy) were right in {acc.get('window', 0):.0f}% (window), "
                  f"{acc.get('first', 0):.0f}% (first) and {acc.get('last', 0):.0f}% (last) of these questions. "
                  f"A plain answer took {1000 * s['plain_seconds']:.0f} ms (median)."]
        lines += ["", "Localised among the questions answered right:", "", "| method | window | first | last |",
                  "|---|---:|---:|---:|"]
        for m in methods:
            row = s[m]
            cells = []
            for k in ("window", "first", "last"):
                v = row.get(k, {}).get("hit_when_right")
                cells.append("-" if v is None else f"{v:.1f}% of {row[k]['right']}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    mc = result.get("choices")
    if mc:
        types = sorted(mc["generate"]["by_type"])
        lines += ["", "## Multiple choice: generation vs likelihood", "",
                  "The held-out colour, shape, count, first and last questions as a multiple-choice set "
                  f"({mc['n']} items, "
                  "four options, three for counts; `llamavid eval predict synthetic-mc -q mc.json --videos ... "
                  "--mcq generate|likelihood`). *generate*: the options are listed in the question and the letter "
                  "(or the option's text) is read from the reply; *likelihood*: each option is scored as the answer "
                  "to the bare question (mean log-probability per token, end token included) and the best one is "
                  "the answer.", "",
                  "| mode | accuracy | " + " | ".join(types) + " | no option found | seconds |",
                  "|---|---:|" + "---:|" * len(types) + "---:|---:|"]
        for mode in ("generate", "likelihood"):
            r = mc[mode]
            lines.append(f"| {mode} | {r['accuracy']:.1f}% | "
                         + " | ".join(f"{r['by_type'].get(t, 0):.1f}%" for t in types)
                         + f" | {r['no_option']} | {r['seconds']:.0f} |")
    ch = result.get("chapters")
    if ch:
        if "recall" in ch:  # a results file from before the content sets: scene clips only
            ch = {"scenes": ch}
        lines += ["", "## Chapters: boundaries from the features", "",
                  "`summarize --chapters` boundary finding (from the stored features alone) on held-out clips of 3-6 "
                  "parts of 12-24 s, changes at any tenth of a second, sampled at 1 frame/s: *scenes*, each part its "
                  "own backdrop and shape; *content*, ONE backdrop, each part a new shape of any size and place; "
                  "*joins and leaves too*, ONE backdrop, where a shape may also join the one on screen or one of two "
                  f"leave. A change is found when a boundary lies within {TOLERANCE:g} s of it.", "",
                  "| set | clips, changes | changes found (within 1 s) | boundaries that are real changes | clips "
                  "with exactly the right boundaries | mean error of found changes | boundary finding per clip |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, row in ch.items():
            label = CHAPTER_SETS[name][3] if name in CHAPTER_SETS else name
            error = "-" if row["mean_error"] is None else f"{row['mean_error']:.2f} s"
            lines.append(f"| {label} | {row['clips']}, {row['changes']} | {row['recall']:.1f}% "
                         f"| {row['precision']:.1f}% | {row['exact_clips']:.1f}% | {error} "
                         f"| {1000 * row['seconds_per_clip']:.1f} ms |")
    return lines
