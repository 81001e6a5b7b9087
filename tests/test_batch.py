"""Batches and pipelines of `llamavid ask`: JSONL questions, error records, resume, folders, stdin."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LLAMAVID, model_args, run_cli
from media import make_image, make_video

import llamavid
from llamavid.core.fileio import ResumableJsonl
from llamavid.model.modeling import LlamaVid
from llamavid.pipeline import materialize, prepare


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("batchmedia")
    folder = root / "videos"
    folder.mkdir()
    for i in range(4):  # different lengths: different content, different token files
        make_video(folder / f"v{i}.mp4", seconds=2 + i, fps=5)
    make_image(folder / "still.png")
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("batch-cache")


@pytest.fixture(autouse=True)
def _one_cache_for_this_module(_isolated_cache, shared_cache, monkeypatch):
    """These tests are about batches, not caching: encode each test video once for the whole module."""
    monkeypatch.setenv("LLAMAVID_CACHE", str(shared_cache))


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bad_lines_become_error_records_and_the_batch_goes_on(tiny, videos, tmp_path, capsys):
    q = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "good-1", "video": str(videos / "v0.mp4"), "question": "what color?"},
        '{"id": "broken", "video": ',
        {"id": "missing", "video": str(videos / "nope.mp4"), "question": "what?"},
        {"id": "noq", "video": str(videos / "v0.mp4")},
        {"video": "v1.mp4", "question": "who?"},  # no id: one is made; relative to the questions file
    ])
    (tmp_path / "v1.mp4").symlink_to(videos / "v1.mp4")
    out_path = tmp_path / "answers.jsonl"
    code, out, err = run_cli(capsys, "ask", "--batch", q, "-o", out_path, *model_args(tiny))
    assert code == 1 and out == ""  # failures make the exit status non-zero, after the whole batch
    assert "2 answered, 3 failed" in err
    got = records(out_path.read_text())
    assert [r["id"] for r in got] == ["good-1", "line-2", "missing", "noq", "line-5"]
    assert set(got[1]) == {"id", "error"} and "q.jsonl:2" in got[1]["error"] and "not valid JSON" in got[1]["error"]
    assert "nope.mp4: no such file" in got[2]["error"]
    assert "missing question" in got[3]["error"]
    for r in (got[0], got[4]):
        assert "error" not in r and isinstance(r["answer"], str)
        assert {"id", "video", "question", "answer", "model", "frames", "prompt_tokens", "seconds"} <= set(r)
    assert got[0]["frames"] == 2 and got[4]["frames"] == 3
    # the same question asked alone gives the same answer
    code, single, _ = run_cli(capsys, "ask", videos / "v0.mp4", "what color?", "--json", *model_args(tiny))
    assert json.loads(single)["answer"] == got[0]["answer"]


def test_questions_are_grouped_by_video_one_model_load_one_token_file(tiny, videos, tmp_path, capsys, monkeypatch):
    loads, opens, batches = [], [], []
    load, open_vidtok, prompt_embeddings = llamavid.load_model, prepare.open_vidtok, LlamaVid.prompt_embeddings
    monkeypatch.setattr(llamavid, "load_model", lambda *a, **k: loads.append(1) or load(*a, **k))
    for module in (prepare, materialize):  # a cache entry is opened by the one, a new encode by the other
        monkeypatch.setattr(module, "open_vidtok", lambda p: opens.append(Path(p)) or open_vidtok(p))
    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, f, ps, **k: batches.append([p.question for p in ps])
                        or prompt_embeddings(self, f, ps, **k))
    a, b = str(videos / "v0.mp4"), str(videos / "v1.mp4")
    lines = [{"id": "1", "video": a, "question": "what color?"}, {"id": "2", "video": b, "question": "who?"},
             {"id": "3", "video": a, "question": "how many?"}, {"id": "4", "video": b, "question": "where?"},
             {"id": "5", "video": a, "question": "when?"}]
    q = write_jsonl(tmp_path / "q.jsonl", lines)
    code, out, err = run_cli(capsys, "ask", "--batch", q, *model_args(tiny))
    assert code == 0, err
    got = records(out)
    assert [r["id"] for r in got] == ["1", "2", "3", "4", "5"]  # input order kept on stdout
    assert len(loads) == 1 and len(opens) == 2
    assert batches == [["what color?", "how many?", "when?"], ["who?", "where?"]]  # one batch per video
    # batched answers equal answers asked one at a time (left padding does not change greedy decoding)
    for r in (got[0], got[3]):
        code, single, _ = run_cli(capsys, "ask", r["video"], r["question"], "--json", *model_args(tiny))
        assert json.loads(single)["answer"] == r["answer"]


def test_interrupted_batch_resumes_without_duplicates_or_losses(tiny, videos, tmp_path, capsys, monkeypatch):
    lines = [{"id": f"q{i}", "video": str(videos / f"v{i % 2}.mp4"), "question": f"question {i}?"} for i in range(4)]
    q = write_jsonl(tmp_path / "q.jsonl", lines)
    code, reference, err = run_cli(capsys, "ask", "--batch", q, *model_args(tiny))
    assert code == 0, err
    reference = records(reference)

    out_path = tmp_path / "answers.jsonl"
    calls = []
    original = LlamaVid.prompt_embeddings

    def flaky(self, f, prompts, **k):
        calls.append([p.question for p in prompts])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second video
        return original(self, f, prompts, **k)

    monkeypatch.setattr(LlamaVid, "prompt_embeddings", flaky)
    code, _, err = run_cli(capsys, "ask", "--batch", q, "-o", out_path, *model_args(tiny))
    assert code == 130, err
    partial = records(out_path.read_text())
    assert [r["id"] for r in partial] == ["q0", "q2"]  # the first video's answers are safe on disk

    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, f, ps, **k: calls.append([p.question for p in ps]) or original(self, f, ps, **k))
    calls.clear()
    code, _, err = run_cli(capsys, "ask", "--batch", q, "-o", out_path, *model_args(tiny))
    assert code == 0, err
    assert "2 answered, 0 failed, 2 already done" in err
    assert sorted(sum(calls, [])) == [f"question {i}?" for i in (1, 3)]  # done ones are not asked again
    final = records(out_path.read_text())
    assert final == [dict(r, seconds=f["seconds"]) for r, f in zip(reference, final)]


@pytest.mark.slow
def test_batch_killed_with_sigkill_resumes(tiny, videos, tmp_path, capsys):
    lines = [{"id": f"k{i}", "video": str(videos / f"v{i}.mp4"), "question": "what?"} for i in range(4)]
    lines.append({"id": "k4", "video": str(videos / "still.png"), "question": "what?"})
    q = write_jsonl(tmp_path / "q.jsonl", lines)
    out_path = tmp_path / "answers.jsonl"
    env = dict(os.environ, LLAMAVID_CACHE=str(tmp_path / "subprocess-cache"))
    proc = subprocess.Popen([*LLAMAVID, "ask", "--batch", str(q), "-o", str(out_path), *model_args(tiny)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it as soon as its first answer is on disk (an event we watch for, not a time we guess).
    deadline = time.monotonic() + 120
    while not (out_path.is_file() and out_path.read_bytes().count(b"\n") >= 1):
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the batch exited with {proc.returncode} before its first answer was seen on disk:\n"
                        f"{err.decode(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no answer on disk 120 s after the batch started:\n{err.decode(errors='replace')[-2000:]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    before = out_path.read_text()
    assert 1 <= len(records(before)) < 5  # killed half-way: each of the 5 videos is encoded first
    with open(out_path, "a") as f:  # what a kill in the middle of a write leaves: a torn last line
        f.write('{"id": "k3", "answ')

    code, _, err = run_cli(capsys, "ask", "--batch", q, "-o", out_path, *model_args(tiny))
    assert code == 0, err
    final = records(out_path.read_text())
    assert [r["id"] for r in final] == ["k0", "k1", "k2", "k3", "k4"]  # each once, in input order
    assert all("answer" in r for r in final)
    done_before = {r["id"]: r for r in records(before)}
    for r in final:  # answers from before the kill are kept as they were
        if r["id"] in done_before:
            assert r == done_before[r["id"]]


def test_torn_output_line_is_not_glued_to_the_next_record(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "answer": "x"}\n{"id": "b", "ans')
    writer = ResumableJsonl(path, ["a", "b", "c"])
    assert writer.done("a") and not writer.done("b")
    writer.write({"id": "b", "answer": "y"})
    raw = path.read_text().splitlines()
    assert json.loads(raw[-1]) == {"id": "b", "answer": "y"}  # the durable log stays parseable line by line
    writer.close()
    assert records(path.read_text()) == [{"id": "a", "answer": "x"}, {"id": "b", "answer": "y"}]


def test_batch_from_stdin(tiny, videos, capsys, monkeypatch):
    text = json.dumps({"id": "s1", "video": str(videos / "v0.mp4"), "question": "what?"}) + "\nnot json\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, err = run_cli(capsys, "ask", "--batch", "-", *model_args(tiny))
    assert code == 1
    got = records(out)
    assert [r["id"] for r in got] == ["s1", "line-2"] and "answer" in got[0] and "stdin:2" in got[1]["error"]


@pytest.mark.slow
def test_folder_and_stdin_list_of_videos(tiny, videos, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "ask", videos, "Is there a dog?", *model_args(tiny))
    assert code == 0, err
    got = records(out)
    expected = sorted(str(p) for p in videos.iterdir() if p.suffix in (".mp4", ".png"))
    assert [r["id"] for r in got] == expected and [r["video"] for r in got] == expected
    assert all(r["question"] == "Is there a dog?" and "answer" in r for r in got)

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{videos / 'v2.mp4'}\n\n{videos / 'v0.mp4'}\n"))
    code, out2, err = run_cli(capsys, "ask", "-", "Is there a dog?", *model_args(tiny))
    assert code == 0, err
    by_id = {r["id"]: r for r in got}
    assert records(out2) == [dict(by_id[str(videos / n)], seconds=r["seconds"])
                             for n, r in zip(("v2.mp4", "v0.mp4"), records(out2))]


@pytest.mark.slow
def test_shell_pipeline(tiny, videos, tmp_path):
    env = dict(os.environ)
    args = " ".join(model_args(tiny))
    command = " ".join(shlex.quote(part) for part in LLAMAVID)
    proc = subprocess.run(f"find {videos} -name 'v[01].mp4' | sort | {command} ask - 'what?' {args} | cat",
                          shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = records(proc.stdout)
    assert [Path(r["video"]).name for r in got] == ["v0.mp4", "v1.mp4"]
    assert "\x1b[" not in proc.stderr  # no progress bar escapes when piped


def test_answer_files_and_saved_chats_get_the_umask_mode(tiny, videos, tmp_path, capsys, monkeypatch):
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "video": str(videos / "v0.mp4"), "question": "what?"}])
    old = os.umask(0o027)
    try:
        code, _, err = run_cli(capsys, "ask", "--batch", q, "-o", tmp_path / "answers.jsonl", *model_args(tiny))
        assert code == 0, err
        code, _, err = run_cli(capsys, "chat", videos / "v0.mp4", *model_args(tiny),
                               stdin=f"/save {tmp_path / 'chat.json'}\n",
                               monkeypatch=monkeypatch)
        assert code == 0, err
    finally:
        os.umask(old)
    for name in ("answers.jsonl", "chat.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    # an existing answers file keeps its own mode when a rerun rewrites it
    os.chmod(tmp_path / "answers.jsonl", 0o600)
    code, _, err = run_cli(capsys, "ask", "--batch", q, "-o", tmp_path / "answers.jsonl", *model_args(tiny))
    assert code == 0 and (tmp_path / "answers.jsonl").stat().st_mode & 0o777 == 0o600
