"""Markdown and JSON reports in the layout of the LLaMA-VID paper's tables, with its 7B figures beside ours.

Why the paper's layout: the point of running these benchmarks is to compare with the published numbers,
so the zero-shot QA table (accuracy / score per dataset) and the Video-ChatGPT table (five dimensions)
put a "LLaMA-VID-7B (paper)" row directly above this run's row. Counts of unparsed verdicts and errors
are always printed: a mean over half the items is not the same claim as a mean over all of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llamavid.eval.scoring import PAPER_LLAMA_VID_7B, BenchmarkResult

from ..core import fileio

REPORT_FORMAT = "llamavid-eval-report/1"
PAPER_ROW = "LLaMA-VID-7B (paper)"
OURS_ROW = "This run"

QA_BENCHMARKS = (("msvd-qa", "MSVD-QA"), ("msrvtt-qa", "MSRVTT-QA"), ("activitynet-qa", "ActivityNet-QA"))
VCGPT_COLUMNS = (
    ("correctness", "Correctness", "videochatgpt-general"),
    ("detail", "Detail", "videochatgpt-general"),
    ("context", "Context", "videochatgpt-general"),
    ("temporal", "Temporal", "videochatgpt-temporal"),
    ("consistency", "Consistency", "videochatgpt-consistency"),
)
DASH = "–"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _by_name(results: Sequence[BenchmarkResult]) -> dict[str, BenchmarkResult]:
    """Results keyed by benchmark; a later result for the same benchmark replaces an earlier one."""
    return {result.benchmark: result for result in results}


def _qa_section(found: dict[str, BenchmarkResult]) -> list[str]:
    if not any(name in found for name, _ in QA_BENCHMARKS):
        return []
    header = ["Method"] + [f"{title} {col}" for _, title in QA_BENCHMARKS for col in ("Acc", "Score")]
    paper = [PAPER_ROW]
    ours = [OURS_ROW]
    for name, _ in QA_BENCHMARKS:
        figures = PAPER_LLAMA_VID_7B[name]
        paper += [_pct(figures["accuracy"]), _num(figures["score"], 1)]
        result = found.get(name)
        ours += [_pct(result.metrics.get("accuracy")), _num(result.metrics.get("score"))] if result else [DASH, DASH]
    return ["## Zero-shot video question answering", "", "Accuracy in %, score 0-5 (GPT judge).", "",
            *_table(header, [paper, ours]), ""]


def _vcgpt_section(found: dict[str, BenchmarkResult]) -> list[str]:
    if not any(bench in found for _, _, bench in VCGPT_COLUMNS):
        return []
    header = ["Method"] + [title for _, title, _ in VCGPT_COLUMNS]
    paper = [PAPER_ROW] + [_num(PAPER_LLAMA_VID_7B[bench][dim]) for dim, _, bench in VCGPT_COLUMNS]
    ours = [OURS_ROW]
    for dim, _, bench in VCGPT_COLUMNS:
        result = found.get(bench)
        ours.append(_num(result.metrics.get(dim)) if result else DASH)
    return ["## Video-ChatGPT generative benchmark", "", "Scores 0-5 (GPT judge).", "", *_table(header, [paper, ours]),
            ""]


def _choice_section(results: Sequence[BenchmarkResult]) -> list[str]:
    choice = [r for r in results if "no_option" in r.counts]
    if not choice:
        return []
    rows = [
        [r.title, _pct(r.metrics.get("accuracy")), str(r.counts["scored"]), str(r.counts["no_option"]),
         str(r.counts["errors"]), str(r.counts["unlabeled"])]
        for r in choice
    ]
    lines = ["## Multiple choice", "",
             *_table(["Benchmark", "Accuracy (%)", "Scored", "No option found", "Prediction errors", "Unlabeled"],
                     rows), ""]
    for r in choice:
        if r.breakdown:
            group_rows = [[name, _pct(v["accuracy"]), str(v["n"])] for name, v in r.breakdown.items()]
            lines += [f"### {r.title} by task", "", *_table(["Task", "Accuracy (%)", "n"], group_rows), ""]
    return lines


def _synthetic_section(results: Sequence[BenchmarkResult]) -> list[str]:
    lines: list[str] = []
    for r in results:
        if r.benchmark != "synthetic":
            continue
        rows = [["all", _pct(r.metrics.get("accuracy")), str(r.counts["scored"])]]
        rows += [[name, _pct(v["accuracy"]), str(v["n"])] for name, v in r.breakdown.items()]
        lines += [f"## {r.title} (normalized exact match)", "", *_table(["Question type", "Accuracy (%)", "n"], rows),
                  ""]
    return lines


def _counts_section(results: Sequence[BenchmarkResult]) -> list[str]:
    rows = []
    for r in results:
        c = r.counts
        judged = c.get("judged", c.get("scored"))
        rows.append(
            [r.title, str(c.get("total", 0)), str(judged if judged is not None else DASH), str(c.get("unparsed", 0)),
             str(c.get("errors", 0)), str(c.get("judge_errors", 0))]
        )
    lines = ["## Counts", "",
             *_table(["Benchmark", "Items", "Judged / scored", "Unparsed verdicts", "Prediction errors",
                      "Judge errors"], rows), ""]
    warnings = [
        f"- {r.title}: {r.counts.get('unparsed', 0)} unparsed verdicts, {r.counts.get('errors', 0)} prediction errors, "
        f"{r.counts.get('judge_errors', 0)} judge errors are not in the averages."
        for r in results
        if r.counts.get("unparsed", 0) or r.counts.get("errors", 0) or r.counts.get("judge_errors", 0)
    ]
    if warnings:
        lines += ["Incomplete results:", "", *warnings, ""]
    return lines


def render_markdown(results: Sequence[BenchmarkResult]) -> str:
    """The report as Markdown: paper-style tables, then per-benchmark details and counts."""
    found = _by_name(results)
    ordered = list(found.values())
    lines = ["# LLaMA-VID evaluation", ""]
    lines += _qa_section(found)
    lines += _vcgpt_section(found)
    lines += _choice_section(ordered)
    lines += _synthetic_section(ordered)
    lines += _counts_section(ordered)
    return "\n".join(lines).rstrip() + "\n"


def report_dict(results: Sequence[BenchmarkResult]) -> dict[str, Any]:
    """The report as JSON-ready data: every result in full, plus the paper's figures."""
    return {
        "format": REPORT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "paper": {"model": "LLaMA-VID-7B", "figures": PAPER_LLAMA_VID_7B},
        "results": [r.to_dict() for r in _by_name(results).values()],
    }


def write_report(results: Sequence[BenchmarkResult], md_path: str | os.PathLike[str],
                 json_path: str | os.PathLike[str]) -> None:
    """Write the Markdown and JSON reports (parent directories are created)."""
    for path, text in (
        (Path(md_path), render_markdown(results)),
        (Path(json_path), json.dumps(report_dict(results), indent=2, ensure_ascii=False) + "\n"),
    ):
        write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole file or nothing: a killed run never leaves half a report that a later step would read
    as complete. Parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text_atomic(path, text)
