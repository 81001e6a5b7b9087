"""Evaluation harness: published benchmark files -> resumable predictions -> GPT judge -> scores -> report.

The four steps are separate functions over JSONL files so that each can be rerun or resumed alone:

    items = load_benchmark("msvd-qa", "test_qa.json", video_dir="videos/")
    run_predictions(items, answer_fn, "pred.jsonl")
    judge_predictions("pred.jsonl", "msvd-qa", Judge(cache_path="judge-cache.jsonl"), "judged.jsonl")
    write_report([score_file("msvd-qa", "judged.jsonl")], "report.md", "report.json")

Nothing here imports torch: the harness runs on any machine that has the files. See docs/EVAL.md.
"""

from __future__ import annotations

from llamavid.core.fileio import read_jsonl
from llamavid.eval.benchmarks import (
    BENCHMARKS,
    CHOICE_INSTRUCTION,
    VIDEO_EXTENSIONS,
    BenchmarkSpec,
    EvalItem,
    format_choice_question,
    get_benchmark,
    load_benchmark,
    missing_videos,
)
from llamavid.eval.judge import Judge, JudgeError, JudgeStats, Verdict, judge_predictions, parse_verdict
from llamavid.eval.predict import PredictionStats, Progress, group_by_video, run_predictions
from llamavid.eval.prompts import PUBLISHED_PROMPTS, build_messages
from llamavid.eval.report import render_markdown, report_dict, write_report
from llamavid.eval.scoring import (
    PAPER_LLAMA_VID_7B,
    BenchmarkResult,
    extract_option,
    normalize_answer,
    score_choice,
    score_file,
    score_generative,
    score_open,
    score_synthetic,
)

__all__ = [
    "BENCHMARKS",
    "CHOICE_INSTRUCTION",
    "PAPER_LLAMA_VID_7B",
    "PUBLISHED_PROMPTS",
    "VIDEO_EXTENSIONS",
    "BenchmarkResult",
    "BenchmarkSpec",
    "EvalItem",
    "Judge",
    "JudgeError",
    "JudgeStats",
    "PredictionStats",
    "Progress",
    "Verdict",
    "build_messages",
    "extract_option",
    "format_choice_question",
    "get_benchmark",
    "group_by_video",
    "judge_predictions",
    "load_benchmark",
    "missing_videos",
    "normalize_answer",
    "parse_verdict",
    "read_jsonl",
    "render_markdown",
    "report_dict",
    "run_predictions",
    "score_choice",
    "score_file",
    "score_generative",
    "score_open",
    "score_synthetic",
    "write_report",
]
