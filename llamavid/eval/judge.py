"""The GPT judge: an OpenAI-compatible chat-completions client, a safe verdict parser, and a cache.

Why our own small client (urllib, no SDK): the published scripts used ``openai<1.0``'s
``ChatCompletion.create``, which no longer exists; any OpenAI-compatible server (OpenAI, Azure-style
proxies, vLLM, llama.cpp) accepts the same POST ``{base_url}/chat/completions``.

Decisions that keep scores comparable with the paper:
- the prompts are the published ones (``prompts.py``), default model ``gpt-3.5-turbo`` as published;
- no ``temperature`` is sent by default, because the published scripts send none (so the server's default,
  1.0 on OpenAI, applies). Pass ``temperature=0`` for more repeatable verdicts at the cost of that match;
- the published scripts ``ast.literal_eval`` the reply and drop items that fail; we parse more leniently
  (fences, prose, JSON, quoted numbers) and record replies that still cannot be parsed as ``unparsed`` so
  they are counted in the report instead of vanishing.

Every verdict is cached (JSONL keyed by a hash of model + messages), so rerunning never pays twice.
"""

from __future__ import annotations

import ast
import email.utils
import hashlib
import http.client
import json
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from llamavid.core.errors import InputError, LlamaVidError
from llamavid.core.fileio import JsonlLog, read_jsonl
from llamavid.eval.benchmarks import get_benchmark
from llamavid.eval.predict import Progress, ProgressFn
from llamavid.eval.prompts import PUBLISHED_PROMPTS, build_messages

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-3.5-turbo"
#: Valid judge scores; a number outside this range is treated as an unparsed reply.
SCORE_RANGE = (0.0, 5.0)
#: HTTP statuses that mean the judge is misconfigured: stop the run instead of failing item after item.
FATAL_STATUSES = frozenset({401, 402, 403, 404, 405})
RETRY_STATUSES = frozenset({408, 409, 425, 429})


# How long to wait for one reply, and how to back off between tries (timeouts, 429 and 5xx are retried).
RetryPolicy = NamedTuple("RetryPolicy", [("timeout", float), ("max_retries", int), ("backoff", float),
                                         ("max_backoff", float), ("max_retry_after", float)])


class JudgeError(LlamaVidError):
    """The judge endpoint refused or kept failing. ``fatal``: the whole run should stop (bad key, URL,
    model, or the endpoint is down after all retries); otherwise only this item failed."""

    def __init__(self, message: str, *, fatal: bool = True, status: int | None = None):
        super().__init__(message)
        self.fatal = fatal
        self.status = status


# ----------------------------------------------------------------------------------------------------
# Parsing verdicts


@dataclass(frozen=True)
class Verdict:
    """A judge reply and what could be read from it. ``parsed`` False means: count it, do not score it."""

    parsed: bool
    score: float | None
    pred: str | None
    raw: str


_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*(.*?)```", re.S)
_SCORE = re.compile(r"""['"]?\bscore['"]?\s*[:=]\s*['"]?\s*([-+]?\d+(?:\.\d+)?)""", re.I)
_PRED = re.compile(r"""['"]?\bpred(?:icted|iction)?['"]?\s*[:=]\s*['"]?\s*(yes|no)\b""", re.I)
_BARE_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*\.?\s*")
_MAX_LITERAL = 20_000  # longer "dicts" are not verdicts; do not feed them to a parser


def _brace_spans(text: str, limit: int = 20) -> list[str]:
    """Balanced ``{...}`` substrings, outermost first, so a dict inside prose can be found."""
    spans, depth, start = [], 0, -1
    for index, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : index + 1])
                if len(spans) >= limit:
                    break
    return spans


def _literal_mapping(text: str) -> dict[str, Any] | None:
    """A dict from Python-literal or JSON text, never executing anything (literal_eval only builds literals)."""
    if len(text) > _MAX_LITERAL:
        return None
    for parse in (ast.literal_eval, json.loads):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _BARE_NUMBER.fullmatch(value):
        number = float(_BARE_NUMBER.fullmatch(value).group(1))  # type: ignore[union-attr]
    else:
        return None
    if math.isnan(number) or not SCORE_RANGE[0] <= number <= SCORE_RANGE[1]:
        return None
    return number


def _as_yes_no(value: Any) -> str | None:
    """yes/no as the published scorer reads it: "yes" anywhere wins, then "no" anywhere."""
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    if "yes" in lowered:
        return "yes"
    if "no" in lowered:
        return "no"
    return None


def _from_mapping(mapping: dict[str, Any], wants_yes_no: bool, raw: str) -> Verdict | None:
    score = _as_score(mapping.get("score"))
    pred = _as_yes_no(mapping.get("pred", mapping.get("predicted", mapping.get("prediction"))))
    if score is None or (wants_yes_no and pred is None):
        return None
    return Verdict(True, score, pred if wants_yes_no else None, raw)


def parse_verdict(raw: str, *, wants_yes_no: bool) -> Verdict:
    """Read ``{'pred': 'yes', 'score': 4}`` (or ``{'score': 4}``) from a judge reply, safely.

    Copes with ```json fences, prose around the dict, JSON double quotes, ``"score": "4"``, floats, the
    published prompt's own typo echoed back (``{''score': 4}``) and ``score: 4`` lines. A score outside
    0-5, or a missing yes/no where one is asked for, leaves the verdict unparsed.
    """
    text = (raw or "").strip()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for span in _brace_spans(candidate):
            mapping = _literal_mapping(span)
            if mapping is not None:
                verdict = _from_mapping(mapping, wants_yes_no, raw)
                if verdict is not None:
                    return verdict
    score_match = _SCORE.search(text)
    pred_match = _PRED.search(text)
    if score_match is None and not wants_yes_no and _BARE_NUMBER.fullmatch(text):
        score_match = _BARE_NUMBER.fullmatch(text)
    score = _as_score(score_match.group(1)) if score_match else None
    pred = pred_match.group(1).lower() if pred_match else None
    if score is not None and (pred is not None or not wants_yes_no):
        return Verdict(True, score, pred if wants_yes_no else None, raw)
    return Verdict(False, None, None, raw)


# ----------------------------------------------------------------------------------------------------
# The client


def cache_key(model: str, messages: list[dict[str, str]], temperature: float | None = None) -> str:
    """Hash identifying one judge call: same model and messages (and temperature, when set) = same verdict."""
    payload: dict[str, Any] = {"model": model, "messages": messages}
    if temperature is not None:
        payload["temperature"] = temperature
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_detail(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, or the body's start."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        message = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("error")
        if message:
            return _one_line(str(message))
    except (ValueError, AttributeError):
        pass
    return _one_line(text) or "(empty body)"


class _Retry(Exception):
    """A failure worth retrying; ``delay`` is the server's Retry-After when it gave one."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Judge:
    """Client for an OpenAI-compatible ``/chat/completions`` endpoint, with retries and a verdict cache.

    Arguments left ``None`` come from the environment: ``LLAMAVID_JUDGE_BASE_URL`` (then
    ``OPENAI_BASE_URL``, then ``https://api.openai.com/v1``), ``LLAMAVID_JUDGE_MODEL`` (default
    ``gpt-3.5-turbo``), ``LLAMAVID_JUDGE_API_KEY`` (then ``OPENAI_API_KEY``; no key sends no
    ``Authorization`` header, for local servers).

    Retries: connection errors, timeouts, 408/409/425/429 and 5xx, up to ``max_retries`` times with
    exponential backoff (``backoff * 2**attempt``, capped at ``max_backoff``, with jitter); a 429/503 with
    ``Retry-After`` waits what the server asks (at most ``max_retry_after``). 401/403/404 and other 4xx
    are not retried. ``sleep`` and ``rng`` exist so tests can run without waiting.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_retry_after: float = 600.0,
        temperature: float | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        env = os.environ if env is None else env
        self.base_url = (
            base_url or env.get("LLAMAVID_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.model = model or env.get("LLAMAVID_JUDGE_MODEL") or DEFAULT_MODEL
        self.api_key = api_key if api_key is not None else (env.get("LLAMAVID_JUDGE_API_KEY")
                                                            or env.get("OPENAI_API_KEY"))
        self.retry = RetryPolicy(timeout, max_retries, backoff, max_backoff, max_retry_after)
        self.temperature = temperature
        self.url = f"{self.base_url}/chat/completions"
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._opener = urllib.request.build_opener()
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.cache_hits = 0
        self._cache: dict[str, str] = {}
        self._cache_file: JsonlLog | None = None
        if cache_path is not None:
            for record in read_jsonl(cache_path, repair=True):
                if isinstance(record.get("key"), str) and isinstance(record.get("reply"), str):
                    self._cache[record["key"]] = record["reply"]
            self._cache_file = JsonlLog(cache_path)

    # -- public ------------------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply text for ``messages``, from the cache when this exact call was made before."""
        key = cache_key(self.model, messages, self.temperature)
        with self._lock:
            if key in self._cache:
                self.cache_hits += 1
                return self._cache[key]
        reply = self._request_with_retries(messages)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = reply
                if self._cache_file is not None:
                    self._cache_file.write({"key": key, "model": self.model, "reply": reply})
        return reply

    def judge(self, messages: list[dict[str, str]], *, wants_yes_no: bool) -> Verdict:
        """Ask the judge and parse its verdict (unparsed replies come back with ``parsed=False``)."""
        return parse_verdict(self.complete(messages), wants_yes_no=wants_yes_no)

    def close(self) -> None:
        if self._cache_file is not None:
            self._cache_file.close()
            self._cache_file = None

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------------

    def _payload(self, messages: list[dict[str, str]]) -> bytes:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _request_with_retries(self, messages: list[dict[str, str]]) -> str:
        data = self._payload(messages)
        last = ""
        for attempt in range(self.retry.max_retries + 1):
            try:
                return self._request_once(data)
            except _Retry as retry:
                last = retry.reason
                if attempt == self.retry.max_retries:
                    break
                self._sleep(self._delay(attempt, retry.delay))
        raise JudgeError(f"judge endpoint {self.url} failed {self.retry.max_retries + 1} times; last: {last}",
                         fatal=True)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry.max_retry_after)
        base = min(self.retry.max_backoff, self.retry.backoff * (2**attempt))
        return base / 2 + self._rng.uniform(0, base / 2)

    def _request_once(self, data: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with self._lock:
            self.requests_sent += 1
        try:
            with self._opener.open(request, timeout=self.retry.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            self._raise_for_status(exc)
        except (TimeoutError, socket.timeout) as exc:
            raise _Retry(f"timed out after {self.retry.timeout:g} s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retry(f"timed out after {self.retry.timeout:g} s") from None
            raise _Retry(f"cannot connect ({exc.reason})") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
        return self._content(body)

    def _raise_for_status(self, exc: urllib.error.HTTPError) -> None:
        status = exc.code
        try:
            detail = _error_detail(exc.read())
        except (OSError, http.client.HTTPException):
            detail = "(no body)"
        finally:
            exc.close()
        if status in RETRY_STATUSES or status >= 500:
            raise _Retry(f"HTTP {status}: {detail}",
                         _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None))
        hint = " (check LLAMAVID_JUDGE_API_KEY)" if status in (401, 403) else ""
        hint = " (check LLAMAVID_JUDGE_BASE_URL and LLAMAVID_JUDGE_MODEL)" if status in (404, 405) else hint
        raise JudgeError(
            f"judge endpoint {self.url} answered HTTP {status} {exc.reason}: {detail}{hint}",
            fatal=status in FATAL_STATUSES,
            status=status,
        )

    def _content(self, body: bytes) -> str:
        """The reply text of a chat-completions response; a malformed 200 body is retried."""
        try:
            data = json.loads(body.decode("utf-8"))
            message = data["choices"][0]["message"]
        except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError):
            raise _Retry("not a chat-completions response: "
                         f"{_one_line(body.decode('utf-8', 'replace'), 120)}") from None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""


# ----------------------------------------------------------------------------------------------------
# Judging a prediction file


@dataclass(frozen=True)
class JudgeStats:
    """What a judging run did: items newly judged, and how many replies could not be parsed."""

    total: int
    skipped: int
    judged: int
    unparsed: int
    prediction_errors: int
    judge_errors: int
    requests: int
    cache_hits: int
    elapsed_s: float


def _normalize_prediction(record: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    """Our prediction line, or a published-format one ("Q"/"A"/"video_name"), in our field names."""
    out = dict(record)
    out.setdefault("id", fallback_id)
    out["id"] = str(out["id"])
    if "question" not in out and ("Q" in out or "Q1" in out):
        out["question"] = out.get("Q", out.get("Q1"))
    if "question2" not in out and "Q2" in out:
        out["question2"] = out["Q2"]
    if "answer" not in out and "A" in out:
        out["answer"] = out["A"]
    if "pred" not in out and "pred1" in out:
        out["pred"] = out["pred1"]
    if "video" not in out and "video_name" in out:
        out["video"] = out["video_name"]
    return out


def _load_predictions(pred_path: Path, two_questions: bool) -> list[dict[str, Any]]:
    if not pred_path.is_file():
        raise InputError(f"{os.fspath(pred_path)}: prediction file not found")
    counts: dict[str, int] = {}
    used: set[str] = set()
    records = []
    for index, record in enumerate(read_jsonl(pred_path)):
        video = str(record.get("video_name", record.get("video", "item")))
        k = counts.get(video, 0)
        counts[video] = k + 1
        normalized = _normalize_prediction(record, f"{video}_{k}" if "video_name" in record else str(index))
        # Published prediction files repeat ids; number the repeats instead of dropping them.
        wanted, n = normalized["id"], 0
        while normalized["id"] in used:
            n += 1
            normalized["id"] = f"{wanted}_{n}"
        used.add(normalized["id"])
        if "error" not in normalized:
            for needed in ("question", "answer", "pred") + (("question2", "pred2") if two_questions else ()):
                if needed not in normalized:
                    raise InputError(f"{os.fspath(pred_path)}: line {index + 1}: missing field {needed!r}")
        records.append(normalized)
    return records


def _messages_for(dimension: str, record: dict[str, Any], consistency_q2: str) -> list[dict[str, str]]:
    if dimension != "consistency":
        return build_messages(dimension, record["question"], record["answer"], record["pred"])
    question2 = record["question"] if consistency_q2 == "published" else record.get("question2")
    return build_messages(
        dimension,
        record["question"],
        record["answer"],
        record.get("pred1", record["pred"]),
        question2=question2,
        pred2=record.get("pred2"),
    )


def _judge_record(judge: Judge, dimensions: tuple[str, ...], record: dict[str, Any],
                  consistency_q2: str) -> dict[str, Any]:
    base = {k: record[k] for k in ("id", "video", "question", "question2", "answer", "pred", "pred1", "pred2", "kind")
            if k in record}
    if "error" in record:
        return {**base, "error": record["error"]}
    judgements = {}
    try:
        for dimension in dimensions:
            wants_yes_no = PUBLISHED_PROMPTS[dimension].wants_yes_no
            verdict = judge.judge(_messages_for(dimension, record, consistency_q2), wants_yes_no=wants_yes_no)
            judgements[dimension] = {"parsed": verdict.parsed, "pred": verdict.pred, "score": verdict.score,
                                     "raw": verdict.raw}
    except JudgeError as exc:
        if exc.fatal:
            raise
        return {**base, "judge_model": judge.model, "judge_error": str(exc)}
    return {**base, "judge_model": judge.model, "judgements": judgements}


def judge_predictions(
    pred_path: str | os.PathLike[str],
    benchmark_kind: str,
    judge: Judge,
    out_path: str | os.PathLike[str],
    *,
    workers: int = 1,
    consistency_q2: str = "published",
    on_progress: ProgressFn | None = None,
) -> JudgeStats:
    """Judge every prediction of ``pred_path`` not yet in ``out_path`` (a JSONL file, resumable).

    ``benchmark_kind`` is a registry name; it picks the published prompt(s): ``qa`` for the three open-ended
    QA sets, correctness + detail + context for ``videochatgpt-general`` (three calls per item), and
    ``temporal`` / ``consistency`` for the other two Video-ChatGPT files.

    ``consistency_q2``: the published consistency script shows Q1 in the "Question 2" line (it reads
    ``sample['Q1']`` twice). ``"published"`` (default) reproduces that so scores compare with the paper;
    ``"fixed"`` shows the real Q2.

    Output lines: ``{"id", ..., "judge_model", "judgements": {dimension: {"parsed", "pred", "score",
    "raw"}}}``; prediction errors are copied as ``{"id", "error"}``; an item the endpoint refused (a
    non-fatal 4xx) is ``{"id", "judge_error"}``. Fatal errors (bad key, endpoint down) raise
    ``JudgeError`` after writing everything finished so far; rerun to continue.
    """
    if consistency_q2 not in ("published", "fixed"):
        raise ValueError("consistency_q2 must be 'published' or 'fixed'")
    spec = get_benchmark(benchmark_kind)
    if not spec.judge_dimensions:
        raise InputError(f"{spec.name} is scored without a judge (exact match); run score_file on its predictions")
    started = time.monotonic()
    requests_before, hits_before = judge.requests_sent, judge.cache_hits
    records = _load_predictions(Path(pred_path), "consistency" in spec.judge_dimensions)
    done = {record.get("id") for record in read_jsonl(out_path, repair=True)}
    pending = [record for record in records if record["id"] not in done]
    counts = {"judged": 0, "unparsed": 0, "errors": 0, "judge_errors": 0}

    with JsonlLog(out_path) as out:

        def emit(result: dict[str, Any]) -> None:
            out.write(result)
            if "error" in result:
                counts["errors"] += 1
            elif "judge_error" in result:
                counts["judge_errors"] += 1
            else:
                counts["judged"] += 1
                counts["unparsed"] += sum(not j["parsed"] for j in result["judgements"].values())
            if on_progress is not None:
                done_now = sum(counts[k] for k in ("judged", "errors", "judge_errors"))
                on_progress(Progress(done_now, len(pending), result["id"],
                                     result.get("error") or result.get("judge_error")))

        work = lambda record: _judge_record(judge, spec.judge_dimensions, record, consistency_q2)  # noqa: E731
        if workers <= 1:
            for record in pending:
                emit(work(record))
        else:
            _run_parallel(pending, work, emit, workers)

    return JudgeStats(
        total=len(records),
        skipped=len(records) - len(pending),
        judged=counts["judged"],
        unparsed=counts["unparsed"],
        prediction_errors=counts["errors"],
        judge_errors=counts["judge_errors"],
        requests=judge.requests_sent - requests_before,
        cache_hits=judge.cache_hits - hits_before,
        elapsed_s=time.monotonic() - started,
    )


def _run_parallel(
    pending: list[dict[str, Any]],
    work: Callable[[dict[str, Any]], dict[str, Any]],
    emit: Callable[[dict[str, Any]], None],
    workers: int,
) -> None:
    """Judge with ``workers`` threads, writing results (from this thread only) as they finish.

    At most ``2 * workers`` items are in flight, so a fatal error stops the run quickly and loses
    nothing: finished items are written before the error is raised.
    """
    queue = iter(pending)
    fatal: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: set[Future[dict[str, Any]]] = set()
        while True:
            while fatal is None and len(in_flight) < 2 * workers:
                record = next(queue, None)
                if record is None:
                    break
                in_flight.add(pool.submit(work, record))
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                if error is None:
                    emit(future.result())
                elif fatal is None:
                    fatal = error
    if fatal is not None:
        raise fatal
