"""What the demo model learned: held-out accuracy per question type, token-type ablation, the needle test,
and what points into the video (evidence ranges, multiple choice, chapters; see pointing_eval.py).

    python -m llamavid.train.demo evaluate --model demo --data runs/data \\
        [--ablation context=runs/abl-context/demo content=runs/abl-content/demo both=runs/abl-both/demo] \\
        --output docs/RESULTS.md

Every question of the held-out split (``data/test/qa.json``, videos never seen in training) is asked
through the same path as ``llamavid ask`` (encode to .vidtok, then answer), greedily. An answer is
right when its first word is the expected word (the model answers in one word; nothing is fuzzy).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

SHORT_TYPES = ("color", "shape", "count", "first", "last", "pick", "check")
LONG_TYPES = ("subtitle", "needle")


def first_word(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def run_items(model, items: list[dict], root: Path, *, progress: bool = True, kv_cache: str = "auto",
              **options) -> list[dict]:
    """Answer each item (greedily, the questions of a video together); records with the answer and
    whether it is right."""
    from ..core.options import AskOptions
    from ..tasks.qa import Question, answer_about

    by_video: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_video[item["video"]].append(item)
    records = []
    t0 = time.perf_counter()
    for n, (video, group) in enumerate(by_video.items()):
        questions = [Question(_question(item),
                              AskOptions(long=bool(item.get("long")), temperature=0.0, max_new_tokens=8,
                                                     kv_cache=kv_cache, **options))
                     for item in group]
        for item, q, outcome in zip(group, questions, answer_about(model, root / video, questions)):
            if outcome.error is not None:
                raise outcome.error
            answer = outcome.answer.text
            records.append({"id": item["id"], "type": item["question_type"], "question": q.text,
                            "expected": item["answer"], "answer": answer, "frames": outcome.plan.frames,
                            "correct": first_word(answer) == first_word(item["answer"])})
        if progress and (n + 1) % 25 == 0:
            sys.stderr.write(f"  {n + 1}/{len(by_video)} videos ({time.perf_counter() - t0:.0f} s)\n")
    return records


def _question(item: dict) -> str:
    return item["conversations"][0]["value"].replace("<image>", "").strip()


def accuracy(records: list[dict]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for qtype in sorted({r["type"] for r in records}):
        rows = [r for r in records if r["type"] == qtype]
        table[qtype] = {"n": len(rows), "correct": sum(r["correct"] for r in rows),
                        "accuracy": round(100.0 * sum(r["correct"] for r in rows) / len(rows), 1)}
    return table


def evaluate(model_name: str, data: Path, *, ablation: dict[str, str] | None = None, output: Path | None = None,
             pointing: bool = True, ablation_from: Path | None = None) -> dict:
    """``ablation_from``: a previous RESULTS.json whose token-type ablation is carried over (the ablation
    models train stages 1-2 only, so a change to later stages leaves them as they were)."""
    from ..model.loading import load_model

    t0 = time.perf_counter()
    root = data / "test"
    items = json.loads((root / "qa.json").read_text())
    model = load_model(model_name, device="cpu", dtype="float32")
    short = [i for i in items if i["question_type"] in SHORT_TYPES]
    long = [i for i in items if i["question_type"] in LONG_TYPES]
    sys.stderr.write(f"held-out: {len(short)} short-video questions, {len(long)} long-prompt questions\n")
    records = run_items(model, short, root) + run_items(model, long, root)
    result = {"model": model_name, "accuracy": accuracy(records), "records": records,
              "needle_frames": sorted({r["frames"] for r in records if r["type"] == "needle"})}
    result["ablation"] = {}
    if ablation_from is not None:
        result["ablation"] = json.loads(Path(ablation_from).read_text())["ablation"]
        result["ablation_from"] = str(ablation_from)
    for kind, path in (ablation or {}).items():
        sys.stderr.write(f"ablation: {kind} ({path})\n")
        m = load_model(path, device="cpu", dtype="float32")
        result["ablation"][kind] = accuracy(run_items(m, short, root))
    if pointing:
        from .pointing_eval import evaluate_chapters, evaluate_choices, evaluate_evidence

        result["evidence"] = evaluate_evidence(model, data)
        result["choices"] = evaluate_choices(model, data)
        result["chapters"] = evaluate_chapters(model, data)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if output is not None:
        output = Path(output)
        kept = _kept_sections(output)
        output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        output.write_text(render_markdown(result) + kept)
    print(json.dumps({k: (v["summary"] if k == "evidence" else v) for k, v in result.items() if k != "records"},
                     indent=1))
    return result


KEPT_MARKER = "<!-- Below: written by hand or by other scripts (benchmarks/); evaluate keeps it as it is. -->"


def _kept_sections(output: Path) -> str:
    """What an existing results file holds below ``KEPT_MARKER`` (figures other scripts measured)."""
    if not output.is_file():
        return ""
    text = output.read_text()
    at = text.find(KEPT_MARKER)
    return "\n" + text[at:] if at >= 0 else ""


def render_markdown(result: dict) -> str:
    acc = result["accuracy"]
    lines = ["# Results of the demo model", "",
             "Regenerate with the commands in the README's *Training the demo model* section; the figures below",
             f"come from `python -m llamavid.train.demo evaluate --model {result['model']} ...` "
             f"({result['seconds']:.0f} s on the CPU).", "",
             "## Held-out synthetic questions", "",
             "Videos of the test split were never seen in training. Greedy decoding; right = first word "
             "equals the answer.",
             "", "| question type | what it asks | questions | accuracy |", "|---|---|---:|---:|"]
    meaning = {"color": "colour of the one moving shape", "shape": "kind of the one moving shape",
               "count": "how many shapes appear one after another (1-3)", "first": "colour of the first shape",
               "last": "colour of the last shape", "subtitle": "a code word said only in the subtitles (long prompt)",
               "needle": "colour of the one shape in a 1-hour video (3,600 frames, long prompt)",
               "pick": "colour of the shape of the kind the question names, among 3-12 of other kinds (some "
                       "frames with two side by side)"}
    for qtype in (*SHORT_TYPES, *LONG_TYPES):
        if qtype in acc:
            lines.append(f"| {qtype} | {meaning[qtype]} | {acc[qtype]['n']} | {acc[qtype]['accuracy']:.1f}% |")
    if result.get("ablation"):
        kinds = list(result["ablation"])
        lines += ["", "## Token-type ablation (the paper's Table 4, in miniature)", "",
                  "The same recipe trained three times, each model keeping one kind of visual token per frame "
                  "(`token_types` in config.json), evaluated on the same held-out short-video questions."
                  + (" (Carried over from an earlier evaluation and not rerun: these models ran stages 1-2 of an "
                     "earlier recipe, with three epochs of stage 2 and the earlier tokenizer.)"
                     if result.get("ablation_from") else
                     " Each ran stages 1-2 of the recipe, with the same seed, vision encoder, tokenizers and cached "
                     "features (`train --token-types context|content|both --stages 1,2 --reuse ...`)."),
                  "",
                  "| question type | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for qtype in SHORT_TYPES:
            if not any(qtype in result["ablation"][k] for k in kinds):
                continue  # a question type the ablation models were never asked
            cells = [f"{result['ablation'][k][qtype]['accuracy']:.1f}%" if qtype in result["ablation"][k] else "-"
                     for k in kinds]
            lines.append(f"| {qtype} | " + " | ".join(cells) + " |")
    from .pointing_eval import render as render_pointing

    lines += render_pointing(result)
    wrong = [r for r in result["records"] if not r["correct"]][:12]
    if wrong:
        lines += ["", "## Some wrong answers", "", "| id | question | expected | answer |", "|---|---|---|---|"]
        lines += [f"| {r['id']} | {r['question']} | {r['expected']} | {r['answer'].strip()[:40]} |" for r in wrong]
    return "\n".join(lines) + "\n"
