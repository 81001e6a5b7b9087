"""`llamavid eval`: the paper's benchmarks as restartable steps over plain files.

    llamavid eval predict msvd-qa --questions test_qa.json --videos video/ -o msvd.pred.jsonl
    llamavid eval judge msvd-qa msvd.pred.jsonl -o msvd.judged.jsonl
    llamavid eval score msvd-qa msvd.judged.jsonl -o msvd.result.json
    llamavid eval report msvd.result.json --md report.md --json report.json
    llamavid eval run msvd-qa --questions test_qa.json --videos video/ --out-dir out/     (all four)

Why separate steps: predicting costs GPU hours and judging costs money, so each writes its own file and
resumes from it; scoring and reporting cost nothing and can be redone at will. Only `predict` (and `run`)
import the model; the other steps run on any machine that has the files. See docs/EVAL.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from llamavid.core.options import AskOptions
from llamavid.eval.benchmarks import BENCHMARKS

from . import options as opt
from .output import Reporter, message, print_json, warn

JUDGED = [name for name, spec in BENCHMARKS.items() if spec.judge_dimensions]
EVAL_QUESTION = opt.QUESTION.without("start", "end", "evidence", "choices")  # a benchmark item carries its own

HELP = "Run the paper's benchmarks: predict -> judge -> score -> report (each step resumable)."
COMMANDS = ("predict", "judge", "score", "report", "run")  # `llamavid eval NAME`, registered in main.build_app

# ---------------------------------------------------------------------------------------------------------
# predict


def _paths(questions: list[Path], answers: Optional[Path]) -> list[Path]:
    from llamavid.core.errors import InputError

    if not questions:
        raise InputError("give the benchmark's question file with --questions FILE")
    return list(questions) + ([answers] if answers is not None else [])


def _load_items(benchmark: str, files: opt.BenchmarkFiles):
    from llamavid.core.errors import InputError
    from llamavid.eval import get_benchmark, load_benchmark, missing_videos

    spec = get_benchmark(benchmark)  # an unknown name fails before anything is read
    if files.limit is not None and files.limit < 0:
        raise InputError(f"--limit {files.limit}: must be at least 0")
    items = load_benchmark(spec.name, _paths(list(files.questions), files.answers), files.videos)
    if files.limit is not None:
        items = items[:files.limit]
    missing = missing_videos(items) if files.videos is not None else []
    if missing:
        warn(f"{len(missing)} of {len(items)} items have no video in {files.videos} (first: {missing[0].video}); "
             "they will be recorded as errors")
    return spec, items


def _predict(benchmark: str, files: opt.BenchmarkFiles, output_for, model: opt.ModelChoice, options,
             batch_size: int, mcq: str) -> tuple[Any, dict[str, Any]]:
    """Predict a benchmark's items into ``output_for(spec)``: (the benchmark, the run's counts)."""
    from llamavid.core.errors import InputError
    from llamavid.core.fileio import ResumableJsonl
    from llamavid.eval import run_predictions
    from llamavid.eval.answerer import check_mcq_mode, video_answerer

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    check_mcq_mode(mcq)
    spec, items = _load_items(benchmark, files)
    output = output_for(spec)
    output.parent.mkdir(parents=True, exist_ok=True)
    probe = ResumableJsonl(output, [item.id for item in items], retry_errors=False)  # refuses a foreign file
    pending = [item for item in items if not probe.done(item.id)]
    probe.close()
    if not pending:
        message(f"llamavid: all {len(items)} items already in {output}")
        stats = run_predictions(items, lambda item: "", output)  # nothing to do; returns the counts
        return spec, asdict(stats) | {"output": str(output)}
    m = model.load()
    with Reporter(f"{spec.name}: predicting", unit="items", status=False) as reporter:
        from llamavid.core.callbacks import Callbacks

        # the bar counts items; encoding a video reports only its warnings
        answer = video_answerer(m, options, callbacks=Callbacks(warning=reporter.warning),
                                questions_per_batch=batch_size, mcq=mcq)
        stats = run_predictions(items, None, output, answer_batch_fn=answer,
                                on_progress=lambda p: reporter.bar.set(p.done, p.total))
    message(f"llamavid: {spec.name}: {stats.written - stats.errors} answered, {stats.errors} failed, "
            f"{stats.skipped} already done -> {output}")
    if stats.errors:
        warn(f"{stats.errors} items failed (lines with \"error\" in {output}); delete those lines and rerun "
             "to retry them")
    return spec, asdict(stats) | {"output": str(output)}


@opt.with_groups(opt.BENCHMARK_FILES, opt.MODEL, EVAL_QUESTION)
def predict(
    benchmark: opt.Benchmark,
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Predictions JSONL (a rerun skips the items already there).")],
    batch_size: opt.QuestionsPerBatch = 8,
    mcq: opt.Mcq = "generate",
    *,
    files: opt.BenchmarkFiles,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Answer a benchmark's questions into a JSONL file; prints the run's counts as JSON."""
    print_json(_predict(benchmark, files, lambda spec: output, model, options, batch_size, mcq)[1])


# ---------------------------------------------------------------------------------------------------------
# judge


def _problems(path: Path) -> tuple[list[str], list[str]]:
    """Ids of a judged file whose verdict could not be parsed, and ids the endpoint refused."""
    from llamavid.eval import read_jsonl

    unparsed, refused = [], []
    for record in read_jsonl(path):
        if "judge_error" in record and "error" not in record:
            refused.append(str(record.get("id")))
        elif any(not j.get("parsed") for j in (record.get("judgements") or {}).values()):
            unparsed.append(str(record.get("id")))
    return unparsed, refused


def _ids(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f" ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _judge(spec, predictions: Path, output: Path, *, base_url: Optional[str], judge_model: Optional[str],
           api_key: Optional[str], cache: Optional[Path], no_cache: bool, workers: int, timeout: float,
           max_retries: int, temperature: Optional[float], consistency_q2: str) -> dict[str, Any]:
    from llamavid.core.errors import InputError
    from llamavid.eval import Judge, judge_predictions

    if not spec.judge_dimensions:
        raise InputError(f"{spec.name} is scored by exact match without a judge: run `llamavid eval score {spec.name} "
                         f"{predictions}`")
    if not predictions.is_file():
        raise InputError(f"{predictions}: prediction file not found")
    if consistency_q2 not in ("published", "fixed"):
        raise InputError(f"--consistency-q2 {consistency_q2}: expected published or fixed")
    output.parent.mkdir(parents=True, exist_ok=True)
    cache_path = None if no_cache else (cache or output.parent / "judge-cache.jsonl")
    with Judge(base_url, judge_model, api_key, timeout=timeout, max_retries=max_retries, temperature=temperature,
               cache_path=cache_path) as judge:
        message(f"llamavid: judging {predictions} with {judge.model} at {judge.base_url}")
        with Reporter(f"{spec.name}: judging", unit="items") as reporter:
            stats = judge_predictions(predictions, spec.name, judge, output, workers=workers,
                                      consistency_q2=consistency_q2,
                                      on_progress=lambda p: reporter.bar.set(p.done, p.total))
    message(f"llamavid: {spec.name}: {stats.judged} judged, {stats.skipped} already done, {stats.prediction_errors} "
            f"prediction errors, {stats.judge_errors} refused; {stats.requests} requests, {stats.cache_hits} from the "
            f"cache -> {output}")
    unparsed, refused = _problems(output)
    if unparsed:
        warn(f"{len(unparsed)} items have a verdict that could not be parsed (counted as unparsed, not scored): "
             f"{_ids(unparsed)}")
    if refused:
        warn(f"{len(refused)} items were refused by the judge (\"judge_error\" lines): {_ids(refused)}")
    return asdict(stats) | {"output": str(output), "unparsed_ids": unparsed, "refused_ids": refused}


def judge(
    benchmark: Annotated[str, typer.Argument(help=f"Benchmark name (judged ones: {', '.join(JUDGED)}).")],
    predictions: Annotated[Path, typer.Argument(
        help="Predictions JSONL from `llamavid eval predict` (or a published prediction file).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Judged JSONL (a rerun judges only what is missing).")],
    base_url: opt.BaseUrl = None,
    judge_model: opt.JudgeModel = None,
    api_key: opt.ApiKey = None,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", help="Cache of judge replies (default: judge-cache.jsonl beside the output).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep no cache of judge replies.")] = False,
    workers: opt.Workers = 4,
    timeout: opt.Timeout = 60.0,
    max_retries: opt.MaxRetries = 6,
    temperature: Annotated[Optional[float], typer.Option(
        "--judge-temperature", help="Send a temperature (the published scripts send none).")] = None,
    consistency_q2: Annotated[str, typer.Option(
        "--consistency-q2", help="published: show Q1 twice as the published consistency script does; fixed: "
                                 "the real Q2.")] = "published",
) -> None:
    """Ask an OpenAI-compatible judge the published prompts; prints the run's counts as JSON."""
    from llamavid.eval import get_benchmark

    spec = get_benchmark(benchmark)
    print_json(_judge(spec, predictions, output, base_url=base_url, judge_model=judge_model, api_key=api_key,
                      cache=cache, no_cache=no_cache, workers=workers, timeout=timeout, max_retries=max_retries,
                      temperature=temperature, consistency_q2=consistency_q2))


# ---------------------------------------------------------------------------------------------------------
# score and report


def _score(benchmark: str, path: Path, *, raw_scores: bool):
    from llamavid.eval import get_benchmark, score_file

    spec = get_benchmark(benchmark)
    result = score_file(spec.name, path, truncate_scores=not raw_scores)
    bad = {k: result.counts.get(k, 0) for k in ("errors", "judge_errors", "unparsed", "no_option")}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        warn(f"{spec.name}: {result.counts.get('total', 0)} items, "
             + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items())
             + " (errors and unparsed verdicts are left out of the averages; no-option answers count as wrong)")
    return result


def _write_json(path: Path, value: Any) -> None:
    from llamavid.eval.report import write_text_atomic

    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def score(
    benchmark: opt.Benchmark,
    path: Annotated[Path, typer.Argument(
        help="The judged JSONL (judged benchmarks) or the predictions JSONL (multiple choice, synthetic).")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Also write the result JSON here (input for `eval report`).")] = None,
    raw_scores: Annotated[bool, typer.Option(
        "--raw-scores", help="Average the judge's scores as given (the published scorer truncates each to "
                             "an integer).")] = False,
) -> None:
    """Compute accuracy / scores from a file (no model, no judge: rerun at will); prints the result as JSON."""
    result = _score(benchmark, path, raw_scores=raw_scores)
    if output is not None:
        _write_json(output, result.to_dict())
    print_json(result.to_dict())


def _read_result(spec: str):
    """A result: ``BENCH=FILE.jsonl`` is scored now; a .json file is a result (or a report) written before."""
    from llamavid.core.errors import InputError
    from llamavid.eval import BENCHMARKS, BenchmarkResult

    name, sep, rest = spec.partition("=")
    if sep and name.strip().lower() in BENCHMARKS:
        return [_score(name, Path(rest), raw_scores=False)]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: no such file (give a result .json from `llamavid eval score -o`, or "
                         "BENCH=FILE.jsonl)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{spec}: not JSON ({exc})") from None
    records = data.get("results") if isinstance(data, dict) and "results" in data else [data]
    fields = set(BenchmarkResult.__dataclass_fields__)
    results = []
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict) or not {"benchmark", "metrics", "counts"} <= set(record):
            raise InputError(f"{spec}: not a benchmark result (expected the JSON of `llamavid eval score`)")
        results.append(BenchmarkResult(**{k: v for k, v in record.items() if k in fields}))
    if not results:
        raise InputError(f"{spec}: no results in this file")
    return results


def report(
    inputs: Annotated[List[str], typer.Argument(
        help="Result .json files from `eval score -o` (or reports), or BENCH=FILE.jsonl to score now.")],
    md: Annotated[Optional[Path], typer.Option("--md", help="Write the Markdown report here.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
) -> None:
    """Tables in the paper's layout with LLaMA-VID-7B's published figures beside ours (Markdown on stdout by default)."""  # noqa: E501
    import sys

    from llamavid.eval import render_markdown, report_dict
    from llamavid.eval.report import write_text_atomic

    results = [r for spec in inputs for r in _read_result(spec)]
    if md is not None:
        write_text_atomic(md, render_markdown(results))
    if json_path is not None:
        _write_json(json_path, report_dict(results))
    if md is None and json_path is None:
        sys.stdout.write(render_markdown(results))
    else:
        message(f"llamavid: report on {len(results)} benchmark(s) -> "
                + ", ".join(str(p) for p in (md, json_path) if p))


# ---------------------------------------------------------------------------------------------------------
# run: all steps


@opt.with_groups(opt.BENCHMARK_FILES, opt.MODEL, EVAL_QUESTION)
def run(
    benchmark: opt.Benchmark,
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", help="Folder for BENCH.pred.jsonl, BENCH.judged.jsonl, BENCH.result.json and report.md/.json (a "
                          "rerun resumes).")],
    batch_size: opt.QuestionsPerBatch = 8,
    mcq: opt.Mcq = "generate",
    base_url: opt.BaseUrl = None,
    judge_model: opt.JudgeModel = None,
    api_key: opt.ApiKey = None,
    workers: opt.Workers = 4,
    timeout: opt.Timeout = 60.0,
    max_retries: opt.MaxRetries = 6,
    *,
    files: opt.BenchmarkFiles,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Predict, judge (when the benchmark needs it), score and report in one go; prints the result as JSON."""
    from llamavid.eval import write_report

    spec, _ = _predict(benchmark, files, lambda spec: out_dir / f"{spec.name}.pred.jsonl", model, options, batch_size,
                       mcq)
    pred_path = out_dir / f"{spec.name}.pred.jsonl"
    scored_path = pred_path
    if spec.judge_dimensions:
        scored_path = out_dir / f"{spec.name}.judged.jsonl"
        _judge(spec, pred_path, scored_path, base_url=base_url, judge_model=judge_model, api_key=api_key, cache=None,
               no_cache=False, workers=workers, timeout=timeout, max_retries=max_retries, temperature=None,
               consistency_q2="published")
    result = _score(spec.name, scored_path, raw_scores=False)
    _write_json(out_dir / f"{spec.name}.result.json", result.to_dict())
    # The report covers every benchmark run into this folder so far, so one folder accumulates the tables.
    results = [r for p in sorted(out_dir.glob("*.result.json")) for r in _read_result(str(p))]
    write_report(results, out_dir / "report.md", out_dir / "report.json")
    message(f"llamavid: report -> {out_dir / 'report.md'}")
    print_json(result.to_dict())
