"""`llamavid eval` through the real entry point: predict with the tiny checkpoint on generated videos,
judge against a real HTTP server on 127.0.0.1 with scripted verdicts, score, report.

The judge server picks its verdict from the "Correct Answer:" line of each request, so the expected
accuracy and score are known whatever the (random) tiny model answers and in whatever order the worker
threads ask: cat -> yes 5, dog -> yes 4.8 (truncated to 4 as published), car -> no 1, tree -> prose that
cannot be parsed. The item on a missing video is a prediction error.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import model_args as tiny_model_args
from conftest import run_cli
from media import make_video

from llamavid.eval import read_jsonl

VERDICTS = {
    "cat": "{'pred': 'yes', 'score': 5}",
    "dog": "{'pred': 'yes', 'score': 4.8}",
    "car": "{'pred': 'no', 'score': 1}",
    "tree": "I am not able to evaluate this pair.",
}

MSVD = [
    {"video_id": "vid1", "question": "what is the animal?", "answer": "cat", "id": 1},
    {"video_id": "vid1", "question": "what animal runs?", "answer": "dog", "id": 2},
    {"video_id": "vid2", "question": "what moves?", "answer": "car", "id": 3},
    {"video_id": "vid2", "question": "what is green?", "answer": "tree", "id": 4},
    {"video_id": "ghost", "question": "what is blue?", "answer": "sky", "id": 5},
]

VIDEOMME = [
    {"videoID": "vid1", "question_id": "q1", "question": "What shape?",
     "options": ["A. circle", "B. square", "C. triangle"], "answer": "B"},
    {"videoID": "vid2", "question_id": "q2", "question": "What color?",
     "options": ["A. red", "B. green", "C. blue", "D. yellow"], "answer": "A"},
    {"videoID": "vid2", "question_id": "q3", "question": "How many?", "options": ["A. one", "B. two", "C. three"],
     "answer": "C"},
]


# ----------------------------------------------------------------------------------------------------
# Helpers


def last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """Two short generated videos, an MSVD-style file and a Video-MME-style file."""
    root = tmp_path_factory.mktemp("bench")
    (root / "videos").mkdir()
    make_video(root / "videos" / "vid1.mp4", seconds=2, fps=4)
    make_video(root / "videos" / "vid2.mp4", seconds=2, fps=4)
    (root / "test_qa.json").write_text(json.dumps(MSVD))
    (root / "videomme.json").write_text(json.dumps(VIDEOMME))
    return root


def model_args(tiny) -> list[str]:
    return [*tiny_model_args(tiny, max_new=3), "--device", "cpu", "--dtype", "float32"]


class VerdictServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 answering from VERDICTS by the request's correct answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with lock:
                    server.requests.append(body)
                answer = re.search(r"Correct Answer: (.*)\n", body["messages"][1]["content"]).group(1)
                message = {"role": "assistant", "content": VERDICTS[answer]}
                payload = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


@pytest.fixture
def judge_server(monkeypatch) -> Iterator[VerdictServer]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("LLAMAVID_JUDGE_BASE_URL", "LLAMAVID_JUDGE_MODEL", "LLAMAVID_JUDGE_API_KEY", "OPENAI_BASE_URL",
                 "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    server = VerdictServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def msvd_preds(bench, tiny, tmp_path_factory) -> Path:
    """One full prediction run over the MSVD-style file (shared: loading and encoding cost seconds)."""
    out = tmp_path_factory.mktemp("preds") / "msvd.pred.jsonl"
    from llamavid_cli.main import main

    try:  # (not run_cli: a module fixture cannot use the function-scoped capsys)
        main(["eval", "predict", "msvd-qa", "--questions", str(bench / "test_qa.json"), "--videos",
              str(bench / "videos"), "-o", str(out), *map(str, model_args(tiny))])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


# ----------------------------------------------------------------------------------------------------
# predict


def test_predict_writes_every_item_and_records_the_missing_video(msvd_preds, bench, tiny_model):
    records = read_jsonl(msvd_preds)
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]
    by_id = {r["id"]: r for r in records}
    assert by_id["5"]["error"].startswith("InputError:") and "ghost" in by_id["5"]["error"]
    for item in MSVD[:4]:
        record = by_id[str(item["id"])]
        assert (record["question"], record["answer"], record["kind"]) == (item["question"], item["answer"], "open")
        assert record["video"] == str(bench / "videos" / f"{item['video_id']}.mp4")
        assert isinstance(record["pred"], str) and "error" not in record

    # Independent check: the same greedy answer as asking the library one question at a time.
    import llamavid

    for item_id in ("1", "3"):
        record = by_id[item_id]
        alone = llamavid.ask(tiny_model, record["video"], record["question"], max_new_tokens=3, temperature=0.0)
        assert record["pred"] == alone.answer


@pytest.mark.slow
def test_predict_resumes_after_a_torn_line_without_duplicates(msvd_preds, bench, tiny, tmp_path, capsys):
    out = tmp_path / "resume.pred.jsonl"
    full = msvd_preds.read_bytes().split(b"\n")
    # What a kill during the third line's write leaves: two whole lines and half of the third.
    out.write_bytes(full[0] + b"\n" + full[1] + b"\n" + full[2][: len(full[2]) // 2])
    code, stdout, stderr = run_cli(capsys, "eval", "predict", "msvd-qa", "-q", bench / "test_qa.json", "--videos",
                               bench / "videos", "-o", out, *model_args(tiny))
    assert code == 0, stderr
    stats = last_json(stdout)
    assert (stats["total"], stats["skipped"], stats["written"], stats["errors"]) == (5, 2, 3, 1)
    lines = out.read_bytes().split(b"\n")
    assert lines[:2] == full[:2]  # finished lines are never rewritten
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids == ["1", "2", "3", "4", "5"]
    assert read_jsonl(out) == read_jsonl(msvd_preds)  # greedy: the redone items give the same answers

    # A run stopped early (--limit) and then completed: every id once.
    out2 = tmp_path / "limited.pred.jsonl"
    args = ["eval", "predict", "msvd-qa", "-q", bench / "test_qa.json", "--videos", bench / "videos", "-o", out2,
            *model_args(tiny)]
    assert run_cli(capsys, *args, "--limit", "2")[0] == 0
    assert [r["id"] for r in read_jsonl(out2)] == ["1", "2"]
    code, stdout, _ = run_cli(capsys, *args)
    assert (last_json(stdout)["skipped"], last_json(stdout)["written"]) == (2, 3)
    assert [r["id"] for r in read_jsonl(out2)] == ["1", "2", "3", "4", "5"]
    # Nothing left: no model is loaded at all.
    code, stdout, stderr = run_cli(capsys, *args)
    assert code == 0 and last_json(stdout)["written"] == 0 and "loading" not in stderr


def test_one_bad_question_does_not_fail_the_others_on_its_video(bench, tiny, tmp_path, capsys):
    # Three questions on one video travel in one batch; the middle one cannot fit the 4096-token context.
    items = [{"video_id": "vid1", "question": q, "answer": "cat", "id": i}
             for i, q in enumerate(["what is the animal?", "what " * 5000, "what moves?"], 1)]
    (tmp_path / "qa.json").write_text(json.dumps(items))
    out = tmp_path / "p.jsonl"
    code, stdout, stderr = run_cli(capsys, "eval", "predict", "msvd-qa", "-q", tmp_path / "qa.json", "--videos",
                               bench / "videos", "-o", out, *model_args(tiny))
    assert code == 0, stderr
    by_id = {r["id"]: r for r in read_jsonl(out)}
    assert by_id["2"]["error"].startswith("ContextOverflowError:")
    assert "error" not in by_id["1"] and "error" not in by_id["3"]
    assert (last_json(stdout)["written"], last_json(stdout)["errors"]) == (3, 1)
    assert "1 items failed" in stderr


@pytest.mark.slow
def test_multiple_choice_predict_then_exact_match_score(bench, tiny, tmp_path, capsys):
    out = tmp_path / "videomme.pred.jsonl"
    code, stdout, stderr = run_cli(capsys, "eval", "predict", "videomme", "-q", bench / "videomme.json", "--videos",
                               bench / "videos", "-o", out, *model_args(tiny))
    assert code == 0, stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["q1", "q2", "q3"]
    assert records[0]["options"] == ["circle", "square", "triangle"]
    assert "(B) square" in records[0]["question"] and records[0]["answer"] == "B"

    # Scripted replies in place of the random model's: right by letter, wrong, right by option text.
    replies = {"q1": "(B)", "q2": "The answer is C.", "q3": "There are three."}
    scripted = tmp_path / "scripted.pred.jsonl"
    scripted.write_text("".join(json.dumps(r | {"pred": replies[r["id"]]}) + "\n" for r in records))
    code, stdout, stderr = run_cli(capsys, "eval", "score", "videomme", scripted, "-o", tmp_path / "vm.result.json")
    assert code == 0, stderr
    result = last_json(stdout)
    assert result["benchmark"] == "videomme"
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert (result["counts"]["total"], result["counts"]["correct"], result["counts"]["no_option"]) == (3, 2, 0)
    assert json.loads((tmp_path / "vm.result.json").read_text()) == result

    # No judge for multiple choice: a clear one-line refusal.
    code, _, stderr = run_cli(capsys, "eval", "judge", "videomme", scripted, "-o", tmp_path / "x.jsonl")
    assert code == 1 and stderr.count("\n") == 1 and "exact match" in stderr


# ----------------------------------------------------------------------------------------------------
# judge -> score -> report


@pytest.mark.slow
def test_judge_score_report_end_to_end(msvd_preds, judge_server, tmp_path, capsys):
    judged = tmp_path / "msvd.judged.jsonl"
    judge_args = ["eval", "judge", "msvd-qa", msvd_preds, "-o", judged, "--base-url", judge_server.base_url,
                  "--judge-model", "judge-x", "--workers", "2"]
    code, stdout, stderr = run_cli(capsys, *judge_args)
    assert code == 0, stderr
    stats = last_json(stdout)
    assert (stats["judged"], stats["unparsed"], stats["prediction_errors"], stats["requests"]) == (4, 1, 1, 4)
    assert stats["unparsed_ids"] == ["4"]
    assert re.search(r"warning: 1 items have a verdict that could not be parsed.*: 4$", stderr, re.M)
    assert {r["model"] for r in judge_server.requests} == {"judge-x"}
    assert all("temperature" not in r for r in judge_server.requests)  # as published
    assert (tmp_path / "judge-cache.jsonl").is_file()

    # Rerun: nothing left to judge. A fresh output with the same cache: no requests either.
    code, stdout, _ = run_cli(capsys, *judge_args)
    assert (last_json(stdout)["skipped"], last_json(stdout)["requests"]) == (5, 0)
    fresh = tmp_path / "again.judged.jsonl"
    code, stdout, _ = run_cli(capsys, *judge_args[:4], "-o", fresh, *judge_args[6:])
    assert (last_json(stdout)["requests"], last_json(stdout)["cache_hits"]) == (0, 4)
    assert len(judge_server.requests) == 4

    code, stdout, stderr = run_cli(capsys, "eval", "score", "msvd-qa", judged, "-o", tmp_path / "msvd.result.json")
    assert code == 0, stderr
    result = last_json(stdout)
    # yes: cat, dog; no: car; unparsed: tree; error: ghost. Scores 5, int(4.8) = 4, 1.
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert result["metrics"]["score"] == pytest.approx((5 + 4 + 1) / 3)
    counts = result["counts"]
    assert (counts["total"], counts["judged"], counts["unparsed"], counts["errors"], counts["yes"],
            counts["no"]) == (5, 3, 1, 1, 2, 1)
    assert "1 errors" in stderr and "1 unparsed" in stderr
    code, stdout, _ = run_cli(capsys, "eval", "score", "msvd-qa", judged, "--raw-scores")
    assert last_json(stdout)["metrics"]["score"] == pytest.approx((5 + 4.8 + 1) / 3)

    md, js = tmp_path / "report.md", tmp_path / "report.json"
    code, _, stderr = run_cli(capsys, "eval", "report", tmp_path / "msvd.result.json", "--md", md, "--json", js)
    assert code == 0, stderr
    text = md.read_text()
    assert "| LLaMA-VID-7B (paper) | 69.7 | 3.7 |" in text
    assert "| This run | 66.7 | 3.33 |" in text
    report = json.loads(js.read_text())
    assert report["format"] == "llamavid-eval-report/1"
    assert report["results"][0]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert report["results"][0]["counts"]["unparsed"] == 1
    # BENCH=FILE scores on the fly; without --md/--json the Markdown goes to stdout.
    code, stdout, _ = run_cli(capsys, "eval", "report", f"msvd-qa={judged}")
    assert code == 0 and "| This run | 66.7 | 3.33 |" in stdout


@pytest.mark.slow
def test_run_chains_predict_judge_score_report(bench, tiny, judge_server, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "eval", "run", "msvd-qa", "-q", bench / "test_qa.json", "--videos",
                               bench / "videos", "--out-dir", out, "--base-url", judge_server.base_url,
                               *model_args(tiny))
    assert code == 0, stderr
    result = last_json(stdout)
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert sorted(p.name for p in out.iterdir()) == ["judge-cache.jsonl", "msvd-qa.judged.jsonl", "msvd-qa.pred.jsonl",
                                                    "msvd-qa.result.json", "report.json", "report.md"]
    assert "| This run | 66.7 | 3.33 |" in (out / "report.md").read_text()

    # A multiple-choice benchmark run into the same folder: no judge call, and the report now has both.
    asked = len(judge_server.requests)
    code, stdout, stderr = run_cli(capsys, "eval", "run", "videomme", "-q", bench / "videomme.json", "--videos",
                               bench / "videos", "--out-dir", out, *model_args(tiny))
    assert code == 0, stderr
    assert last_json(stdout)["counts"]["total"] == 3 and len(judge_server.requests) == asked
    assert not (out / "videomme.judged.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert [r["benchmark"] for r in report["results"]] == ["msvd-qa", "videomme"]
    assert "| This run | 66.7 | 3.33 |" in (out / "report.md").read_text()


# ----------------------------------------------------------------------------------------------------
# One-line errors


def test_clear_errors(bench, tmp_path, capsys, judge_server):
    code, _, err = run_cli(capsys, "eval", "predict", "msvd-qa", "-q", tmp_path / "nope.json", "-o",
                           tmp_path / "p.jsonl")
    assert code == 1 and err == f"llamavid: error: {tmp_path / 'nope.json'}: file not found\n"

    code, _, err = run_cli(capsys, "eval", "predict", "msvd-qb", "-q", bench / "test_qa.json", "-o",
                           tmp_path / "p.jsonl")
    assert code == 1 and err.startswith("llamavid: error: unknown benchmark 'msvd-qb'; "
                                        "known: msvd-qa") and err.count("\n") == 1

    code, _, err = run_cli(capsys, "eval", "score", "nope", tmp_path / "p.jsonl")
    assert code == 1 and "unknown benchmark 'nope'" in err and err.count("\n") == 1

    code, _, err = run_cli(capsys, "eval", "score", "msvd-qa", tmp_path / "p.jsonl")
    assert code == 1 and err == f"llamavid: error: {tmp_path / 'p.jsonl'}: file not found\n"

    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "1", "question": "q?", "answer": "cat", "pred": "a cat"}) + "\n")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(capsys, "eval", "judge", "msvd-qa", preds, "-o", tmp_path / "j.jsonl", "--base-url",
                       f"http://127.0.0.1:{port}/v1", "--max-retries", "0")
    assert code == 1 and err.count("\n") == 2  # the "judging ... with" line, then the error
    assert err.splitlines()[-1].startswith("llamavid: error: judge endpoint "
                                           f"http://127.0.0.1:{port}/v1/chat/completions failed 1 times")
    assert "cannot connect" in err

    code, _, err = run_cli(capsys, "eval", "report", tmp_path / "missing.json")
    assert code == 1 and err.startswith(f"llamavid: error: {tmp_path / 'missing.json'}: "
                                        "no such file") and err.count("\n") == 1
