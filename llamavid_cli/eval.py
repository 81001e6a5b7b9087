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
from typing import Any, Optional

import typer

from .main import app
from .output import message, print_json, progress_bar, warn

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Run the paper's benchmarks: predict -> judge -> score -> report (each step resumable).",
)
app.add_typer(eval_app, name="eval")

# Options shared by `predict` and `run` / `judge` and `run` (Typer needs them spelled out per command).
QUESTIONS_HELP = "The benchmark's question file (repeat for benchmarks with several files, e.g. ActivityNet-QA's test_q.json and test_a.json, or MVBench tasks)."
ANSWERS_HELP = "A separate answers file (ActivityNet-QA's test_a.json, EgoSchema's subset_answers.json)."
VIDEOS_HELP = "Folder holding the benchmark's videos (names from the file, trying .mp4 .mkv .avi .mov .webm)."


# ---------------------------------------------------------------------------------------------------------
# predict


class ModelAnswerer:
    """``answer_fn`` for ``run_predictions`` that encodes each video once and batches its questions.

    Why not the library's ``answer_batch_fn``: there, one failing question (say, too long for the
    context) fails its whole batch. Here each call answers one query, but the first query of a video
    answers up to ``batch_size`` of that video's pending queries in one ``answer_batch`` and keeps the
    rest for the calls that follow; when the batch fails, the queries are answered one by one so only the
    bad one is recorded as an error.
    """

    def __init__(self, model, items, *, fps: float, max_frames: int | None, sampling, long_video: bool | None,
                 cache: bool, batch_size: int):
        from llamavid.eval.predict import queries

        self.model, self.fps, self.max_frames, self.sampling = model, fps, max_frames, sampling
        self.long_video = model.config.long_video if long_video is None else long_video
        self.cache, self.batch_size = cache, max(1, batch_size)
        self.queue: dict[str, list[Any]] = {}
        for item in items:
            self.queue.setdefault(item.video, []).extend(queries(item))
        self.memo: dict[tuple[str, str], list[Any]] = {}
        self.vin = None

    def __call__(self, query) -> str:
        key = (query.id, query.question)
        if not self.memo.get(key):
            self._answer_ahead(query)
        result = self.memo[key].pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        if self.vin is not None:
            self.vin.close()
            self.vin = None

    def _answer_ahead(self, query) -> None:
        queue = self.queue.get(query.video, [])
        keys = [(q.id, q.question) for q in queue]
        start = keys.index((query.id, query.question)) if (query.id, query.question) in keys else None
        if start is None:  # not planned (should not happen): answer it alone
            chunk = [query]
        else:
            chunk = queue[start : start + self.batch_size]
            del queue[start : start + self.batch_size]
        for q, result in zip(chunk, self._answer_chunk(chunk)):
            self.memo.setdefault((q.id, q.question), []).append(result)

    def _open(self, video: str):
        from llamavid import qa

        if self.vin is None or self.vin.source != video:
            self.close()
            self.vin = qa.open_video_input(self.model, video, fps=self.fps, max_frames=self.max_frames, cache=self.cache)
        return self.vin

    def _answer_chunk(self, chunk: list) -> list:
        from llamavid import qa

        try:
            vin = self._open(chunk[0].video)
        except Exception as exc:  # noqa: BLE001 - an unreadable video fails its items only
            return [exc] * len(chunk)
        try:
            for q in chunk:
                qa.check_fits(self.model, q.question, vin.num_frames, long_video=self.long_video,
                              max_new_tokens=self.sampling.max_new_tokens, source=vin.source)
            answers = self.model.answer_batch(
                vin.tokens, [q.question for q in chunk], sampling=self.sampling, long_video=self.long_video,
                frame_subtitles=vin.frame_subtitles() if self.long_video else None, frame_indices=vin.frame_indices)
            return [a.text for a in answers]
        except Exception as exc:  # noqa: BLE001 - retried one by one so only the bad question fails
            if len(chunk) == 1:
                return [exc]
            return [r for q in chunk for r in self._answer_chunk([q])]


def _paths(questions: list[Path], answers: Optional[Path]) -> list[Path]:
    from llamavid.errors import InputError

    if not questions:
        raise InputError("give the benchmark's question file with --questions FILE")
    return list(questions) + ([answers] if answers is not None else [])


def _load_items(benchmark: str, questions: list[Path], answers: Optional[Path], videos: Optional[Path],
                limit: Optional[int]):
    from llamavid.eval import get_benchmark, load_benchmark, missing_videos

    spec = get_benchmark(benchmark)  # an unknown name fails before anything is read
    items = load_benchmark(spec.name, _paths(questions, answers), videos)
    if limit is not None:
        items = items[: max(0, limit)]
    missing = missing_videos(items) if videos is not None else []
    if missing:
        warn(f"{len(missing)} of {len(items)} items have no video in {videos} (first: {missing[0].video}); "
             "they will be recorded as errors")
    return spec, items


def _predict(spec, items, output: Path, *, model: Optional[str], fps: float, max_frames: Optional[int],
             temperature: Optional[float], top_p: Optional[float], max_new_tokens: Optional[int], seed: Optional[int],
             long: Optional[bool], batch_size: int, no_cache: bool, device: Optional[str], dtype: Optional[str],
             quantize: Optional[str], vision_tower: Optional[Path], qformer_tokenizer: Optional[str]) -> dict[str, Any]:
    from llamavid import qa
    from llamavid.eval import read_jsonl, run_predictions

    done = {r.get("id") for r in read_jsonl(output)}
    pending = [item for item in items if item.id not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    if not pending:
        message(f"llamavid: all {len(items)} items already in {output}")
        stats = run_predictions(items, lambda item: "", output)  # nothing to do; returns the counts
        return asdict(stats) | {"output": str(output)}
    from .common import load, sampling_options

    m = load(model, vision_tower=str(vision_tower) if vision_tower else None, qformer_tokenizer=qformer_tokenizer,
             device=device, dtype=dtype, quantize=quantize)
    sampling = sampling_options(temperature, top_p, max_new_tokens, seed, qa.default_sampling(m, long))
    answerer = ModelAnswerer(m, pending, fps=fps, max_frames=max_frames, sampling=sampling, long_video=long,
                             cache=not no_cache, batch_size=batch_size)
    try:
        with progress_bar(f"{spec.name}: predicting", len(pending), unit="items") as bar:
            stats = run_predictions(items, answerer, output, on_progress=lambda p: bar.advance(1))
    finally:
        answerer.close()
    message(f"llamavid: {spec.name}: {stats.written - stats.errors} answered, {stats.errors} failed, "
            f"{stats.skipped} already done -> {output}")
    if stats.errors:
        warn(f"{stats.errors} items failed (lines with \"error\" in {output}); delete those lines and rerun to retry them")
    return asdict(stats) | {"output": str(output)}


@eval_app.command()
def predict(
    benchmark: str = typer.Argument(..., help="Benchmark name: msvd-qa, msrvtt-qa, activitynet-qa, videochatgpt-general, videochatgpt-temporal, videochatgpt-consistency, videomme, egoschema, mvbench, synthetic."),
    output: Path = typer.Option(..., "-o", "--output", help="Predictions JSONL (a rerun skips the items already there)."),
    questions: list[Path] = typer.Option([], "--questions", "-q", help=QUESTIONS_HELP),
    answers: Optional[Path] = typer.Option(None, "--answers", help=ANSWERS_HELP),
    videos: Optional[Path] = typer.Option(None, "--videos", help=VIDEOS_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N items (a quick trial run)."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint directory, Hugging Face id or built-in name (default: $LLAMAVID_MODEL, else the released video model)."),
    fps: float = typer.Option(1.0, "--fps", help="Frames per second to sample (the published evaluation used 1)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Use N frames spread evenly over each video."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy (default 0.2, as published)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass (default 0.7)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Answer length limit (default 512)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Make sampling repeatable."),
    long: Optional[bool] = typer.Option(None, "--long/--short", help="Force the long-video prompt, or the short one."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions on one video answered together."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not keep encoded videos in the cache."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="8bit or 4bit (bitsandbytes)."),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower", help="Path to eva_vit_g.pth."),
    qformer_tokenizer: Optional[str] = typer.Option(None, "--qformer-tokenizer", help="Folder or id of the bert-base-uncased tokenizer."),
) -> None:
    """Answer a benchmark's questions into a JSONL file; prints the run's counts as JSON."""
    spec, items = _load_items(benchmark, questions, answers, videos, limit)
    print_json(_predict(spec, items, output, model=model, fps=fps, max_frames=max_frames, temperature=temperature,
                        top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, long=long, batch_size=batch_size,
                        no_cache=no_cache, device=device, dtype=dtype, quantize=quantize, vision_tower=vision_tower,
                        qformer_tokenizer=qformer_tokenizer))


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
    from llamavid.errors import InputError
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
        with progress_bar(f"{spec.name}: judging", None, unit="items") as bar:
            def on_progress(p) -> None:
                bar.update(total=p.total)
                bar.advance(1)

            stats = judge_predictions(predictions, spec.name, judge, output, workers=workers,
                                      consistency_q2=consistency_q2, on_progress=on_progress)
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


@eval_app.command()
def judge(
    benchmark: str = typer.Argument(..., help="Benchmark name (msvd-qa, msrvtt-qa, activitynet-qa, videochatgpt-general/-temporal/-consistency)."),
    predictions: Path = typer.Argument(..., help="Predictions JSONL from `llamavid eval predict` (or a published prediction file)."),
    output: Path = typer.Option(..., "-o", "--output", help="Judged JSONL (a rerun judges only what is missing)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible API base (.../v1); default $LLAMAVID_JUDGE_BASE_URL, $OPENAI_BASE_URL, then OpenAI."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model; default $LLAMAVID_JUDGE_MODEL, else gpt-3.5-turbo (as published)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer token; default $LLAMAVID_JUDGE_API_KEY, then $OPENAI_API_KEY (none: no header)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache of judge replies (default: judge-cache.jsonl beside the output)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep no cache of judge replies."),
    workers: int = typer.Option(4, "--workers", help="Requests in parallel."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one reply."),
    max_retries: int = typer.Option(6, "--max-retries", help="Retries after timeouts, 429 and 5xx (exponential backoff)."),
    temperature: Optional[float] = typer.Option(None, "--judge-temperature", help="Send a temperature (the published scripts send none)."),
    consistency_q2: str = typer.Option("published", "--consistency-q2", help="published: show Q1 twice as the published consistency script does; fixed: the real Q2."),
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


@eval_app.command()
def score(
    benchmark: str = typer.Argument(..., help="Benchmark name."),
    path: Path = typer.Argument(..., help="The judged JSONL (judged benchmarks) or the predictions JSONL (multiple choice, synthetic)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the result JSON here (input for `eval report`)."),
    raw_scores: bool = typer.Option(False, "--raw-scores", help="Average the judge's scores as given (the published scorer truncates each to an integer)."),
) -> None:
    """Compute accuracy / scores from a file (no model, no judge: rerun at will); prints the result as JSON."""
    result = _score(benchmark, path, raw_scores=raw_scores)
    if output is not None:
        _write_json(output, result.to_dict())
    print_json(result.to_dict())


def _read_result(spec: str):
    """A result: ``BENCH=FILE.jsonl`` is scored now; a .json file is a result (or a report) written before."""
    from llamavid.errors import InputError
    from llamavid.eval import BENCHMARKS, BenchmarkResult

    name, sep, rest = spec.partition("=")
    if sep and name.strip().lower() in BENCHMARKS:
        return [_score(name, Path(rest), raw_scores=False)]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: no such file (give a result .json from `llamavid eval score -o`, or BENCH=FILE.jsonl)")
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


@eval_app.command()
def report(
    inputs: list[str] = typer.Argument(..., help="Result .json files from `eval score -o` (or reports), or BENCH=FILE.jsonl to score now."),
    md: Optional[Path] = typer.Option(None, "--md", help="Write the Markdown report here."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
) -> None:
    """Tables in the paper's layout with LLaMA-VID-7B's published figures beside ours (Markdown on stdout by default)."""
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
        message(f"llamavid: report on {len(results)} benchmark(s) -> " + ", ".join(str(p) for p in (md, json_path) if p))


# ---------------------------------------------------------------------------------------------------------
# run: all steps


@eval_app.command()
def run(
    benchmark: str = typer.Argument(..., help="Benchmark name."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for BENCH.pred.jsonl, BENCH.judged.jsonl, BENCH.result.json and report.md/.json (a rerun resumes)."),
    questions: list[Path] = typer.Option([], "--questions", "-q", help=QUESTIONS_HELP),
    answers: Optional[Path] = typer.Option(None, "--answers", help=ANSWERS_HELP),
    videos: Optional[Path] = typer.Option(None, "--videos", help=VIDEOS_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N items."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint directory, Hugging Face id or built-in name."),
    fps: float = typer.Option(1.0, "--fps", help="Frames per second to sample."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Use N frames spread evenly over each video."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy (default 0.2, as published)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Answer length limit."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Make sampling repeatable."),
    long: Optional[bool] = typer.Option(None, "--long/--short", help="Force the long-video prompt, or the short one."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions on one video answered together."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not keep encoded videos in the cache."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="8bit or 4bit (bitsandbytes)."),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower", help="Path to eva_vit_g.pth."),
    qformer_tokenizer: Optional[str] = typer.Option(None, "--qformer-tokenizer", help="Folder or id of the bert-base-uncased tokenizer."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Judge API base (.../v1); default from the environment."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model (default gpt-3.5-turbo)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Judge bearer token (default from the environment)."),
    workers: int = typer.Option(4, "--workers", help="Judge requests in parallel."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for one judge reply."),
    max_retries: int = typer.Option(6, "--max-retries", help="Judge retries after timeouts, 429 and 5xx."),
) -> None:
    """Predict, judge (when the benchmark needs it), score and report in one go; prints the result as JSON."""
    from llamavid.eval import write_report

    spec, items = _load_items(benchmark, questions, answers, videos, limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_path = out_dir / f"{spec.name}.pred.jsonl"
    _predict(spec, items, pred_path, model=model, fps=fps, max_frames=max_frames, temperature=temperature, top_p=top_p,
             max_new_tokens=max_new_tokens, seed=seed, long=long, batch_size=batch_size, no_cache=no_cache,
             device=device, dtype=dtype, quantize=quantize, vision_tower=vision_tower,
             qformer_tokenizer=qformer_tokenizer)
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
