"""The GPT judge against a real HTTP server on 127.0.0.1 with scripted replies.

Each test scripts what the server answers, request by request, and asserts how many requests arrived:
retries must happen exactly where they should (429, 5xx, timeouts) and nowhere else (401), and the cache
must make a rerun free. ``sleep`` is replaced by a recorder so no test waits for a backoff.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llamavid.core.errors import InputError
from llamavid.eval import (
    Judge,
    JudgeError,
    build_messages,
    judge_predictions,
    parse_verdict,
    read_jsonl,
    score_file,
)
from llamavid.eval.judge import cache_key
from llamavid.eval.prompts import PUBLISHED_PROMPTS

QA_MESSAGES = build_messages("qa", "what is the man doing?", "running", "he is running")


# ----------------------------------------------------------------------------------------------------
# The scripted server


@dataclass
class Reply:
    status: int = 200
    content: str | None = "{'pred': 'yes', 'score': 4}"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    hold: threading.Event | None = None  # a slow reply: sent only once the test sets this (or after 60 s)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedServer:
    """An OpenAI-compatible stand-in: answers each POST with the next scripted Reply (default: a verdict)."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.default = Reply()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received.append(Received(self.path, dict(self.headers), body))
                    reply = server.script.pop(0) if server.script else server.default
                if reply.hold is not None:
                    reply.hold.wait(60)
                payload = reply.body
                if payload is None:
                    if reply.status == 200:
                        message = {"role": "assistant", "content": reply.content}
                        payload = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                    else:
                        payload = json.dumps({"error": {"message": f"scripted {reply.status}"}}).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def count(self) -> int:
        return len(self.received)


@pytest.fixture
def server(monkeypatch) -> Iterator[ScriptedServer]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def make_judge(server: ScriptedServer, sleeps: list[float] | None = None, **kw: Any) -> Judge:
    """A judge with a tiny backoff whose sleeps are recorded instead of slept."""
    record = sleeps if sleeps is not None else []
    kw.setdefault("timeout", 5)
    return Judge(server.base_url, "judge-model", "sk-test", backoff=0.001, sleep=record.append, env={}, **kw)


# ----------------------------------------------------------------------------------------------------
# The client against the server


@pytest.mark.slow
def test_normal_verdict_one_request_with_published_payload(server):
    judge = make_judge(server)
    verdict = judge.judge(QA_MESSAGES, wants_yes_no=True)
    assert (verdict.parsed, verdict.pred, verdict.score) == (True, "yes", 4.0)
    assert server.count == 1
    request = server.received[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    # As published: model + messages, no temperature (the published scripts set none).
    assert request.body == {"model": "judge-model", "messages": QA_MESSAGES}


@pytest.mark.slow
def test_verdict_in_json_fences(server):
    server.script = [Reply(content='Here you go:\n```json\n{"pred": "no", "score": "2"}\n```')]
    verdict = make_judge(server).judge(QA_MESSAGES, wants_yes_no=True)
    assert (verdict.parsed, verdict.pred, verdict.score) == (True, "no", 2.0)
    assert server.count == 1


@pytest.mark.slow
def test_malformed_reply_is_unparsed_not_retried_and_kept(server):
    server.script = [Reply(content="I am not able to evaluate this pair.")]
    verdict = make_judge(server).judge(QA_MESSAGES, wants_yes_no=True)
    assert not verdict.parsed and verdict.score is None
    assert verdict.raw == "I am not able to evaluate this pair."
    assert server.count == 1


@pytest.mark.slow
def test_429_honours_retry_after_then_succeeds(server):
    server.script = [Reply(status=429, headers={"Retry-After": "7"}), Reply(content="{'pred': 'yes', 'score': 5}")]
    sleeps: list[float] = []
    verdict = make_judge(server, sleeps).judge(QA_MESSAGES, wants_yes_no=True)
    assert verdict.score == 5.0
    assert server.count == 2
    assert sleeps == [7.0]  # what the server asked for, not the (tiny) backoff


@pytest.mark.slow
def test_500_then_success_backs_off(server):
    server.script = [Reply(status=500), Reply()]
    sleeps: list[float] = []
    verdict = make_judge(server, sleeps).judge(QA_MESSAGES, wants_yes_no=True)
    assert verdict.parsed
    assert server.count == 2
    # First retry: backoff * 2**0 = 0.001 s with jitter in [0.0005, 0.001].
    assert len(sleeps) == 1 and 0.0005 <= sleeps[0] <= 0.001


@pytest.mark.slow
def test_timeout_then_success(server):
    slow = threading.Event()  # the first reply never comes while the judge waits: only a timeout gets past it
    server.script = [Reply(hold=slow), Reply()]
    judge = make_judge(server, timeout=0.25)
    started = time.monotonic()
    try:
        verdict = judge.judge(QA_MESSAGES, wants_yes_no=True)
        took = time.monotonic() - started
    finally:
        slow.set()
    assert verdict.parsed
    assert server.count == 2
    assert took < 1.0  # gave up on the slow reply instead of waiting for it


@pytest.mark.slow
def test_401_is_not_retried_and_says_why(server):
    server.script = [Reply(status=401)]
    sleeps: list[float] = []
    with pytest.raises(JudgeError) as caught:
        make_judge(server, sleeps).judge(QA_MESSAGES, wants_yes_no=True)
    assert server.count == 1 and sleeps == []
    message = str(caught.value)
    assert "401" in message and "LLAMAVID_JUDGE_API_KEY" in message and "scripted 401" in message
    assert "\n" not in message
    assert caught.value.fatal


@pytest.mark.slow
def test_gives_up_after_max_retries(server):
    server.script = [Reply(status=503) for _ in range(3)]
    with pytest.raises(JudgeError, match="failed 3 times"):
        make_judge(server, max_retries=2).judge(QA_MESSAGES, wants_yes_no=True)
    assert server.count == 3


@pytest.mark.slow
def test_cache_makes_rerun_free_and_survives_a_torn_line(server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    with make_judge(server, cache_path=cache) as judge:
        first = judge.judge(QA_MESSAGES, wants_yes_no=True)
    assert server.count == 1
    with open(cache, "ab") as handle:
        handle.write(b'{"key": "abc", "rep')  # a kill in the middle of a cache write
    with make_judge(server, cache_path=cache) as judge:
        again = judge.judge(QA_MESSAGES, wants_yes_no=True)
        assert judge.cache_hits == 1 and judge.requests_sent == 0
        other = build_messages("qa", "q2", "a2", "p2")
        judge.judge(other, wants_yes_no=True)
    assert server.count == 2  # only the new prompt went out
    assert again == first
    keys = [r["key"] for r in read_jsonl(cache)]
    assert keys == [cache_key("judge-model", QA_MESSAGES), cache_key("judge-model", other)]


@pytest.mark.slow
def test_temperature_is_sent_only_when_chosen(server):
    make_judge(server, temperature=0).judge(QA_MESSAGES, wants_yes_no=True)
    assert server.received[0].body["temperature"] == 0


def test_environment_defaults():
    judge = Judge(env={"OPENAI_BASE_URL": "http://x/v1/", "OPENAI_API_KEY": "k1"})
    assert (judge.url, judge.model, judge.api_key) == ("http://x/v1/chat/completions", "gpt-3.5-turbo", "k1")
    judge = Judge(env={"LLAMAVID_JUDGE_BASE_URL": "http://y", "OPENAI_BASE_URL": "http://x",
                       "LLAMAVID_JUDGE_MODEL": "m", "LLAMAVID_JUDGE_API_KEY": "k2", "OPENAI_API_KEY": "k1"})
    assert (judge.url, judge.model, judge.api_key) == ("http://y/chat/completions", "m", "k2")
    assert Judge(env={}).url == "https://api.openai.com/v1/chat/completions"


# ----------------------------------------------------------------------------------------------------
# Judging prediction files


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.slow
def test_judge_predictions_counts_unparsed_and_resumes(server, tmp_path):
    preds = tmp_path / "pred.jsonl"
    write_predictions(
        preds,
        [
            {"id": "q1", "video": "v1", "question": "what?", "answer": "dog", "pred": "a dog"},
            {"id": "q2", "video": "v1", "question": "who?", "answer": "man", "pred": "a woman"},
            {"id": "q3", "video": "v2", "error": "VideoError: cannot decode v2.mp4"},
            {"id": "q4", "video": "v2", "question": "where?", "answer": "park", "pred": "park"},
        ],
    )
    # Replies in request order (workers=1): q1 yes/4, q2 no/1, q4 malformed.
    server.script = [Reply(content="{'pred': 'yes', 'score': 4}"), Reply(content="{'pred': 'no', 'score': 1}"),
                     Reply(content="Sorry, I cannot.")]
    judged = tmp_path / "judged.jsonl"
    stats = judge_predictions(preds, "msvd-qa", make_judge(server), judged)
    assert server.count == 3
    assert (stats.total, stats.judged, stats.unparsed, stats.prediction_errors) == (4, 3, 1, 1)
    lines = {r["id"]: r for r in read_jsonl(judged)}
    assert lines["q4"]["judgements"]["qa"] == {"parsed": False, "pred": None, "score": None, "raw": "Sorry, I cannot."}
    assert lines["q3"]["error"].startswith("VideoError")

    # Rerun: everything is done, nothing is sent.
    stats = judge_predictions(preds, "msvd-qa", make_judge(server), judged)
    assert server.count == 3 and stats.skipped == 4 and stats.judged == 0

    result = score_file("msvd-qa", judged)
    # Parsed verdicts: yes/4 and no/1 -> accuracy 1/2, score (4 + 1) / 2 = 2.5; the malformed one is
    # counted as unparsed, not scored as 0.
    assert result.metrics == {"accuracy": 0.5, "score": 2.5}
    assert result.counts["unparsed"] == 1 and result.counts["judged"] == 2 and result.counts["errors"] == 1


@pytest.mark.slow
def test_judge_predictions_parallel_with_cache_rerun(server, tmp_path):
    preds = tmp_path / "pred.jsonl"
    write_predictions(preds, [{"id": f"q{i}", "question": f"q{i}?", "answer": "a", "pred": "a"} for i in range(8)])
    cache = tmp_path / "cache.jsonl"
    with make_judge(server, cache_path=cache) as judge:
        stats = judge_predictions(preds, "activitynet-qa", judge, tmp_path / "j1.jsonl", workers=3)
    assert stats.judged == 8 and server.count == 8
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "j1.jsonl")) == sorted(f"q{i}" for i in range(8))
    # A fresh judged file (e.g. scoring redone elsewhere) costs nothing: every verdict is cached.
    with make_judge(server, cache_path=cache) as judge:
        stats = judge_predictions(preds, "activitynet-qa", judge, tmp_path / "j2.jsonl", workers=3)
    assert server.count == 8 and stats.requests == 0 and stats.cache_hits == 8


@pytest.mark.slow
def test_fatal_error_stops_run_and_keeps_finished_items(server, tmp_path):
    preds = tmp_path / "pred.jsonl"
    write_predictions(preds, [{"id": f"q{i}", "question": "q", "answer": "a", "pred": f"p{i}"} for i in range(3)])
    server.script = [Reply(), Reply(status=401)]
    judged = tmp_path / "judged.jsonl"
    with pytest.raises(JudgeError):
        judge_predictions(preds, "msvd-qa", make_judge(server), judged)
    assert [r["id"] for r in read_jsonl(judged)] == ["q0"]
    judge_predictions(preds, "msvd-qa", make_judge(server), judged)  # resumes with q1, q2
    assert [r["id"] for r in read_jsonl(judged)] == ["q0", "q1", "q2"]
    assert server.count == 4


@pytest.mark.slow
def test_item_level_4xx_is_recorded_and_run_goes_on(server, tmp_path):
    preds = tmp_path / "pred.jsonl"
    write_predictions(preds,
                      [{"id": "q0", "question": "q", "answer": "a", "pred": "x"},
                       {"id": "q1", "question": "q", "answer": "a", "pred": "y"}])
    server.script = [Reply(status=400), Reply()]
    judged = tmp_path / "judged.jsonl"
    stats = judge_predictions(preds, "msvd-qa", make_judge(server), judged)
    assert stats.judge_errors == 1 and stats.judged == 1 and server.count == 2
    result = score_file("msvd-qa", judged)
    assert result.counts["judge_errors"] == 1 and result.counts["judged"] == 1


@pytest.mark.slow
def test_videochatgpt_general_asks_three_dimensions_in_published_format(server, tmp_path):
    preds = tmp_path / "pred.json"
    # The published prediction format: the gt item with "pred" added, no id.
    write_predictions(preds, [{"video_name": "v_abc", "Q": "Describe.", "A": "A man cooks.", "pred": "Cooking."}])
    server.script = [Reply(content="{'score': 3}"), Reply(content="{''score': 2}"), Reply(content="score: 4.6")]
    judged = tmp_path / "judged.jsonl"
    judge_predictions(preds, "videochatgpt-general", make_judge(server), judged)
    systems = [r.body["messages"][0]["content"] for r in server.received]
    assert systems == [PUBLISHED_PROMPTS[d].system for d in ("correctness", "detail", "context")]
    (record,) = read_jsonl(judged)
    assert record["id"] == "v_abc_0"
    result = score_file("videochatgpt-general", judged)
    # Published averaging truncates: 3 -> 3, 2 -> 2, 4.6 -> 4.
    assert result.metrics == {"correctness": 3.0, "detail": 2.0, "context": 4.0}
    assert score_file("videochatgpt-general", judged, truncate_scores=False).metrics["context"] == 4.6


@pytest.mark.slow
@pytest.mark.parametrize("mode, expected_q2",
                         [("published", "What is he doing?"), ("fixed", "What activity is shown?")])
def test_consistency_question2(server, tmp_path, mode, expected_q2):
    preds = tmp_path / "pred.jsonl"
    write_predictions(
        preds,
        [{"id": "v_0", "question": "What is he doing?", "question2": "What activity is shown?", "answer": "skiing",
          "pred": "skiing", "pred1": "skiing", "pred2": "snowboarding"}],
    )
    server.script = [Reply(content="{'score': 2}")]
    judge_predictions(preds, "videochatgpt-consistency", make_judge(server), tmp_path / "j.jsonl", consistency_q2=mode)
    user = server.received[0].body["messages"][1]["content"]
    assert f"Question 2: {expected_q2}\n" in user
    assert "Predicted Answer to Question 2: snowboarding\n" in user
    assert score_file("videochatgpt-consistency", tmp_path / "j.jsonl").metrics == {"consistency": 2.0}


# ----------------------------------------------------------------------------------------------------
# The parser alone


@pytest.mark.parametrize(
    "raw, yes_no, expected",
    [
        ("{'pred': 'yes', 'score': 4}", True, ("yes", 4.0)),
        ('{"pred": "no", "score": 0}', True, ("no", 0.0)),
        ("{'pred': 'yes', 'score': 4.8}", True, ("yes", 4.8)),
        ("{'pred': 'Yes.', 'score': '3'}", True, ("yes", 3.0)),
        ('```json\n{"pred": "yes", "score": 5}\n```', True, ("yes", 5.0)),
        ('```\n{"score": 2}\n```', False, (None, 2.0)),
        ("Sure! {'pred': 'no', 'score': 1} I hope this helps.", True, ("no", 1.0)),
        ("{''score': 3}", False, (None, 3.0)),
        ("{'score': 3}", False, (None, 3.0)),
        ("Score: 2", False, (None, 2.0)),
        ("4", False, (None, 4.0)),
        ('{"pred": true, "score": 3}', True, None),  # no yes/no
        ("{'pred': 'maybe', 'score': 3}", True, None),
        ("{'pred': 'yes', 'score': 9}", True, None),  # out of 0-5
        ("{'pred': 'yes'}", True, None),
        ("I cannot evaluate", False, None),
        ("", False, None),
        ("__import__('os').system('echo pwned')", False, None),
    ],
)
def test_parse_verdict(raw, yes_no, expected):
    verdict = parse_verdict(raw, wants_yes_no=yes_no)
    assert verdict.raw == raw
    if expected is None:
        assert not verdict.parsed and verdict.score is None
    else:
        assert verdict.parsed and (verdict.pred, verdict.score) == expected


# ----------------------------------------------------------------------------------------------------
# The prompts are the published ones, character for character

PUBLISHED_REPO = Path("/work/.mirror/dvlab-research+LLaMA-VID/repo")
PUBLISHED_FILES = {
    "eval_msvd_qa.py": "qa",
    "eval_activitynet_qa.py": "qa",
    "evaluate_benchmark_1_correctness.py": "correctness",
    "evaluate_benchmark_2_detailed_orientation.py": "detail",
    "evaluate_benchmark_3_context.py": "context",
    "evaluate_benchmark_4_temporal.py": "temporal",
    "evaluate_benchmark_5_consistency.py": "consistency",
}


def _published_messages(source: str, values: dict[str, str]) -> list[dict[str, str]]:
    """Evaluate the published ``messages=[...]`` literal by reading its AST (f-string names filled in)."""

    def text(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return node.value
        assert isinstance(node, ast.JoinedStr)
        return "".join(v.value if isinstance(v, ast.Constant) else values[v.value.id] for v in node.values)  # type: ignore[attr-defined]

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "messages":
            return [{ast.literal_eval(k): text(v) for k, v in zip(d.keys, d.values)} for d in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("no messages= in published file")


@pytest.mark.skipif(not PUBLISHED_REPO.exists() or shutil.which("git") is None,
                    reason="published LLaMA-VID repository not available")
@pytest.mark.parametrize("filename", sorted(PUBLISHED_FILES))
def test_prompts_match_published_files(filename):
    source = subprocess.run(
        ["git", "-C", str(PUBLISHED_REPO), "show", f"HEAD:llamavid/eval/{filename}"], capture_output=True, text=True,
        check=True
    ).stdout
    values = {"question": "Q {x}?", "question1": "Q {x}?", "question2": "Q2", "answer": "A'", "pred": 'P"',
              "pred1": 'P"', "pred2": "P2"}
    mine = build_messages(PUBLISHED_FILES[filename], "Q {x}?", "A'", 'P"', question2="Q2", pred2="P2")
    assert mine == _published_messages(source, values)


@pytest.mark.slow
def test_exact_match_benchmarks_need_no_judge(server, tmp_path):
    preds = tmp_path / "pred.jsonl"
    write_predictions(preds, [{"id": "1", "question": "q", "answer": "a", "pred": "a"}])
    with pytest.raises(InputError, match="scored without a judge"):
        judge_predictions(preds, "synthetic", make_judge(server), tmp_path / "j.jsonl")
    assert server.count == 0


# Digests of the judge messages, recorded when test_prompts_match_published_files passed against the
# published repository; they keep the prompts pinned where that repository is not available (CI).
PUBLISHED_PROMPT_DIGESTS = {
    "qa": "f03c7cd91650f338ed453d0ff601e66f0fa2b362ed6536b150eb6bd0fc27d6ed",
    "correctness": "a787aa4464a97ecaecc7c8a12704879c8908cef70969f9e70d25d9b84e52180e",
    "detail": "e41f9a242bfcc073626ae600d06a1d4c2fc67cf57d2e0e7ffe648a1db9f2c771",
    "context": "10923e2cecb37f438ecec3c6b1a658c2b2803b7c0aa9838edb852fe7cf67a29e",
    "temporal": "01322dcdbe0ff84a6497ad7aeca4eed5c3294061bfe4a1f2bcef62d9bcfd180e",
    "consistency": "8b96fda3468cbe92bbdf8ff2098b1ad5e1d500c3ef7278b1111a8927b42cbffb",
}


@pytest.mark.parametrize("dimension", sorted(PUBLISHED_PROMPT_DIGESTS))
def test_prompts_keep_their_published_text(dimension):
    import hashlib
    import json as _json

    messages = build_messages(dimension, "Q {x}?", "A'", 'P"', question2="Q2", pred2="P2")
    digest = hashlib.sha256(_json.dumps(messages, sort_keys=True).encode()).hexdigest()
    assert digest == PUBLISHED_PROMPT_DIGESTS[dimension]
