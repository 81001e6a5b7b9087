"""Scores from prediction and judged JSONL files: a separate, rerunnable, offline step.

Why separate: judging costs money and predicting costs GPU hours; computing numbers from their files
costs nothing, so it can be redone (other averaging, other report) without touching either.

Averaging follows the published scripts where they exist:
- open-ended QA: accuracy = yes / (yes + no) over parsed verdicts; score = mean of the verdict scores,
  each truncated to an integer first (the published code does ``int(score)``; ``truncate_scores=False``
  averages the raw numbers instead);
- Video-ChatGPT: per dimension, mean of the (truncated) scores of parsed verdicts.
Unparsed verdicts, prediction errors and judge errors are not in the averages but are counted in every
result, so an incomplete run shows as incomplete.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamavid.core.errors import InputError
from llamavid.core.fileio import read_jsonl
from llamavid.eval.benchmarks import OPTION_LETTERS, get_benchmark

#: LLaMA-VID-7B as published (paper tables); accuracies as fractions.
PAPER_LLAMA_VID_7B: dict[str, dict[str, float]] = {
    "msvd-qa": {"accuracy": 0.697, "score": 3.7},
    "msrvtt-qa": {"accuracy": 0.577, "score": 3.2},
    "activitynet-qa": {"accuracy": 0.474, "score": 3.3},
    "videochatgpt-general": {"correctness": 2.96, "detail": 3.00, "context": 3.53},
    "videochatgpt-temporal": {"temporal": 2.46},
    "videochatgpt-consistency": {"consistency": 2.51},
}


@dataclass
class BenchmarkResult:
    """The numbers for one benchmark run, with the counts needed to judge whether to trust them.

    ``metrics``: "accuracy" (a fraction) and/or "score", or one entry per Video-ChatGPT dimension.
    ``counts``: at least total, errors (prediction errors), and for judged benchmarks judged, unparsed,
    judge_errors; for choice benchmarks no_option and unlabeled. ``breakdown``: per question type
    (synthetic), per task (choice), per dimension (Video-ChatGPT). ``paper``: LLaMA-VID-7B's figures.
    """

    benchmark: str
    title: str
    metrics: dict[str, float | None]
    counts: dict[str, int]
    breakdown: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score_value(score: float, truncate: bool) -> float:
    return float(math.trunc(score)) if truncate else float(score)


def _read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{os.fspath(p)}: file not found")
    return read_jsonl(p)


def _result(benchmark: str, metrics: dict[str, float | None], counts: dict[str, int], path: str | os.PathLike[str],
            **kw: Any) -> BenchmarkResult:
    spec = get_benchmark(benchmark)
    return BenchmarkResult(
        benchmark=spec.name,
        title=spec.title,
        metrics=metrics,
        counts=counts,
        paper=dict(PAPER_LLAMA_VID_7B.get(spec.name, {})),
        source=os.fspath(path),
        **kw,
    )


# ----------------------------------------------------------------------------------------------------
# Judged benchmarks


def _judged_counts(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> dict[str, int]:
    """Item counts of a judged file; a line that is neither judged nor an error means the wrong file."""
    counts = {"total": 0, "errors": 0, "judge_errors": 0}
    for index, record in enumerate(records):
        if not any(key in record for key in ("judgements", "error", "judge_error")):
            raise InputError(
                f"{os.fspath(path)}: line {index + 1}: no 'judgements' (pass the file judge_predictions wrote, not the "
                "predictions)"
            )
        counts["total"] += 1
        counts["errors"] += "error" in record
        counts["judge_errors"] += "judge_error" in record and "error" not in record
    return counts


def score_open(judged_path: str | os.PathLike[str], benchmark: str = "msvd-qa", *,
               truncate_scores: bool = True) -> BenchmarkResult:
    """Accuracy (share of "yes") and mean score of a judged open-ended QA file."""
    records = _read(judged_path)
    counts = _judged_counts(records, judged_path) | {"judged": 0, "unparsed": 0, "yes": 0, "no": 0}
    scores: list[float] = []
    for record in records:
        verdict = record.get("judgements", {}).get("qa")
        if verdict is None:
            continue
        if not verdict.get("parsed") or verdict.get("score") is None or verdict.get("pred") not in ("yes", "no"):
            counts["unparsed"] += 1
            continue
        counts["judged"] += 1
        counts[verdict["pred"]] += 1
        scores.append(_score_value(verdict["score"], truncate_scores))
    accuracy = counts["yes"] / counts["judged"] if counts["judged"] else None
    return _result(benchmark, {"accuracy": accuracy, "score": _mean(scores)}, counts, judged_path)


def score_generative(
    judged_path: str | os.PathLike[str], benchmark: str = "videochatgpt-general", *, truncate_scores: bool = True
) -> BenchmarkResult:
    """Mean score per Video-ChatGPT dimension (correctness, detail, context / temporal / consistency)."""
    spec = get_benchmark(benchmark)
    records = _read(judged_path)
    counts = _judged_counts(records, judged_path) | {"judged": 0, "unparsed": 0}
    per_dim: dict[str, list[float]] = {d: [] for d in spec.judge_dimensions}
    unparsed: dict[str, int] = {d: 0 for d in spec.judge_dimensions}
    for record in records:
        judgements = record.get("judgements", {})
        for dimension in spec.judge_dimensions:
            verdict = judgements.get(dimension)
            if verdict is None:
                continue
            if verdict.get("parsed") and verdict.get("score") is not None:
                per_dim[dimension].append(_score_value(verdict["score"], truncate_scores))
                counts["judged"] += 1
            else:
                unparsed[dimension] += 1
                counts["unparsed"] += 1
    metrics = {d: _mean(v) for d, v in per_dim.items()}
    breakdown = {d: {"mean": metrics[d], "judged": len(per_dim[d]), "unparsed": unparsed[d]} for d in per_dim}
    return _result(spec.name, metrics, counts, judged_path, breakdown=breakdown)


# ----------------------------------------------------------------------------------------------------
# Multiple choice

_PUNCT = re.compile(r"[^\w\s]")


def _plain(text: str) -> str:
    """Lowercase words without punctuation or articles, for comparing a reply with option texts."""
    return " ".join(w for w in _PUNCT.sub(" ", text.lower()).split() if w not in ("a", "an", "the"))


def extract_option(pred: str, options: Sequence[str]) -> str | None:
    """The option letter a free-text prediction chose, or None when it cannot be told.

    Tried in order: the whole reply is a letter ("B", "(B)", "B.", "[B]"); "Answer: B" / "the answer is
    (B)" / "Option B"; a reply starting "B." / "B)" / "(B)"; exactly one distinct "(X)" anywhere; the
    reply equals one option's text, or contains exactly one option's text (case and punctuation ignored).
    Only letters of existing options count, and only in these shapes, so "A man is walking" is not read
    as option A; a lower-case letter counts only when it is the whole reply.
    """
    text = (pred or "").strip()
    if not text or not options:
        return None
    letters = OPTION_LETTERS[: len(options)]
    cls = f"[{letters}]"
    match = re.fullmatch(rf"[\(\[]?\s*({cls}|[{letters.lower()}])\s*[\)\]]?\s*[.:]?", text)
    if match:
        return match.group(1).upper()
    match = re.search(rf"(?i:answer|option|choice)\s*(?:(?i:is)\s*)?[:\-]?\s*[\(\[]?({cls})(?![\w'])", text)
    if match:
        return match.group(1)
    match = re.match(rf"[\(\[]\s*({cls})\s*[\)\]]|({cls})\s*[.):](?!\w)", text)
    if match:
        return match.group(1) or match.group(2)
    bracketed = set(re.findall(rf"\(({cls})\)", text))
    if len(bracketed) == 1:
        return bracketed.pop()
    return _option_by_text(text, options)


def _option_by_text(text: str, options: Sequence[str]) -> str | None:
    plain = _plain(text)
    plain_options = [_plain(option) for option in options]
    for index, option in enumerate(plain_options):
        if option and plain == option:
            return OPTION_LETTERS[index]
    contained = [i for i, option in enumerate(plain_options) if option and f" {option} " in f" {plain} "]
    # One option mentioned, or several where one contains all the others ("red" in "red car").
    if len(contained) == 1:
        return OPTION_LETTERS[contained[0]]
    longest = max(contained, key=lambda i: len(plain_options[i]), default=None)
    if longest is not None and all(plain_options[i] in plain_options[longest] for i in contained):
        return OPTION_LETTERS[longest]
    return None


def _group_of(record: dict[str, Any]) -> str | None:
    extra = record.get("extra") or {}
    for key in ("task", "task_type", "question_type"):
        if extra.get(key) is not None:
            return str(extra[key])
    return None


def score_choice(pred_path: str | os.PathLike[str], benchmark: str = "videomme") -> BenchmarkResult:
    """Accuracy by exact option-letter match; replies with no extractable option count as wrong."""
    records = _read(pred_path)
    counts = {"total": 0, "errors": 0, "scored": 0, "correct": 0, "no_option": 0, "unlabeled": 0}
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        counts["total"] += 1
        if "error" in record:
            counts["errors"] += 1
            continue
        if record.get("answer") is None:
            counts["unlabeled"] += 1
            continue
        options = record.get("options")
        if not isinstance(options, list):
            raise InputError(f"{os.fspath(pred_path)}: line {index + 1}: no 'options' (not a multiple-choice "
                             "prediction file)")
        letter = extract_option(str(record.get("pred", "")), options)
        counts["scored"] += 1
        counts["no_option"] += letter is None
        correct = letter is not None and letter == str(record["answer"]).strip().upper()
        counts["correct"] += correct
        group = _group_of(record)
        if group is not None:
            groups.setdefault(group, []).append(int(correct))
    accuracy = counts["correct"] / counts["scored"] if counts["scored"] else None
    breakdown = {g: {"accuracy": sum(v) / len(v), "n": len(v)} for g, v in sorted(groups.items())}
    return _result(benchmark, {"accuracy": accuracy}, counts, pred_path, breakdown=breakdown)


# ----------------------------------------------------------------------------------------------------
# Synthetic: normalized exact match

_ARTICLES = frozenset({"a", "an", "the"})
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    """"two" -> "2", "twenty one" / "twenty-one" -> "21", "hundred" alone stays a word."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _TENS:
            value = _TENS[token]
            if i + 1 < len(tokens) and tokens[i + 1] in _UNITS and 0 < _UNITS[tokens[i + 1]] < 10:
                value += _UNITS[tokens[i + 1]]
                i += 1
            out.append(str(value))
        elif token in _UNITS:
            out.append(str(_UNITS[token]))
        else:
            out.append(token)
        i += 1
    return out


def normalize_answer(text: str) -> str:
    """Lowercase; drop punctuation (keeping decimal points) and the articles a/an/the; number words -> digits."""
    text = str(text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_", " ", text)
    tokens = [t for t in text.split() if t not in _ARTICLES]
    return " ".join(_numbers_to_digits(tokens))


def score_synthetic(pred_path: str | os.PathLike[str], benchmark: str = "synthetic") -> BenchmarkResult:
    """Normalized exact-match accuracy, overall and per question_type."""
    records = _read(pred_path)
    counts = {"total": 0, "errors": 0, "scored": 0, "correct": 0}
    per_type: dict[str, list[int]] = {}
    for record in records:
        counts["total"] += 1
        if "error" in record:
            counts["errors"] += 1
            continue
        correct = int(normalize_answer(record.get("pred", "")) == normalize_answer(record.get("answer", "")))
        counts["scored"] += 1
        counts["correct"] += correct
        qtype = record.get("question_type") or (record.get("extra") or {}).get("question_type") or "unknown"
        per_type.setdefault(str(qtype), []).append(correct)
    accuracy = counts["correct"] / counts["scored"] if counts["scored"] else None
    breakdown = {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(per_type.items())}
    return _result(benchmark, {"accuracy": accuracy}, counts, pred_path, breakdown=breakdown)


def score_file(benchmark: str, path: str | os.PathLike[str], *, truncate_scores: bool = True) -> BenchmarkResult:
    """Score one benchmark from its file: the judged JSONL for judged benchmarks, else the predictions."""
    spec = get_benchmark(benchmark)
    if spec.kind == "open":
        return score_open(path, spec.name, truncate_scores=truncate_scores)
    if spec.kind in ("generative", "consistency"):
        return score_generative(path, spec.name, truncate_scores=truncate_scores)
    if spec.kind == "choice":
        return score_choice(path, spec.name)
    return score_synthetic(path, spec.name)
