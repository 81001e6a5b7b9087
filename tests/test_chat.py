"""`llamavid chat`: a real pseudo-terminal session (pexpect) and the piped one-line-per-question mode."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest
from conftest import LLAMAVID, model_args, run_cli
from media import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("chatmedia") / "clip.mp4", seconds=3, fps=5)


def spawn(tiny, clip, tmp_path) -> pexpect.spawn:
    env = dict(os.environ, LLAMAVID_CACHE=str(tmp_path / "cache"), TERM="dumb", HOME=str(tmp_path))
    # A terminal's Ctrl-C: restore SIGINT's default in the child, since a runner that started the test
    # suite in the background (nohup, `cmd &` in a script) passes SIGINT down as ignored.
    child = pexpect.spawn(LLAMAVID[0], [*LLAMAVID[1:], "chat", str(clip), *model_args(tiny)], env=env,
                          cwd=str(tmp_path),
                          encoding="utf-8", codec_errors="replace", timeout=60, dimensions=(40, 200),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect_exact("you> ")
    return child


def wait_until_reading_the_terminal(child: pexpect.spawn, timeout: float = 60) -> bool:
    """Wait until the child is asleep in the kernel waiting for terminal input (readline's select, or a
    read): from then on, a Ctrl-C interrupts that wait and is seen at once. Linux only (/proc/PID/wchan);
    False where that cannot be observed."""
    stat, wchan = Path(f"/proc/{child.pid}/stat"), Path(f"/proc/{child.pid}/wchan")
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            where = wchan.read_text()
        except (OSError, IndexError):
            return False
        if state == "S":
            if where in ("", "0"):  # asleep, but the kernel does not say where (restricted): cannot tell
                return False
            if any(word in where for word in ("poll", "select", "tty", "wait_woken")):
                return True
        if not child.isalive() or time.monotonic() > deadline:
            raise AssertionError(f"chat never sat waiting for terminal input (state {state}, in {where!r}): "
                                 f"{child.before!r}")
        time.sleep(0.01)


@pytest.mark.slow
def test_chat_in_a_terminal_two_turns_reset_save_quit(tiny, clip, tmp_path, capsys):
    child = spawn(tiny, clip, tmp_path)
    for question in ("what color is the shape?", "how many shapes?"):
        child.sendline(question)
        child.expect_exact("assistant> ")
        child.expect_exact("you> ")
    child.sendline("/save two.json")
    child.expect_exact("saved two.json")
    child.expect_exact("you> ")
    child.sendline("/reset")
    child.expect_exact("conversation reset")
    child.expect_exact("you> ")
    child.sendline("/save none.json")
    child.expect_exact("saved none.json")
    child.expect_exact("you> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in (child.before or "")

    saved = json.loads((tmp_path / "two.json").read_text())
    assert set(saved) == {"model", "input", "frames", "turns"} and saved["frames"] == 3
    assert [t["question"] for t in saved["turns"]] == ["what color is the shape?", "how many shapes?"]
    assert json.loads((tmp_path / "none.json").read_text())["turns"] == []
    # turn one has no history: the same answer as a one-off question
    code, out, err = run_cli(capsys, "ask", clip, "what color is the shape?", "--json", *model_args(tiny))
    assert code == 0, err
    assert saved["turns"][0]["answer"] == json.loads(out)["answer"]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["eof", "intr"])
def test_chat_ctrl_d_and_ctrl_c_leave_cleanly(tiny, clip, tmp_path, key):
    child = spawn(tiny, clip, tmp_path)
    if key == "eof":
        child.sendeof()
        child.expect(pexpect.EOF)
    elif wait_until_reading_the_terminal(child):
        # Ctrl-C once, while readline is seen waiting for input: it interrupts that wait and cannot be missed,
        # so there is no second Ctrl-C (and no guess at how long the first one takes to show).
        child.sendintr()
        child.expect(pexpect.EOF, timeout=60)
    else:
        # Where the wait cannot be observed: a SIGINT that lands after the prompt is drawn but before
        # readline waits may be seen only later; a user would press Ctrl-C again, and so does this test --
        # but only while the chat shows no sign of leaving (the newline it writes on Ctrl-C): a second
        # SIGINT during a slow exit on a busy machine would kill the interpreter on its way out.
        for _ in range(10):
            child.sendintr()
            if child.expect([pexpect.EOF, "\r\n", pexpect.TIMEOUT], timeout=3) < 2:
                break
        else:
            raise AssertionError("chat did not leave on Ctrl-C")
        child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")


def test_chat_piped_one_answer_line_per_question_line(tiny, clip, capsys, monkeypatch):
    from llamavid.model.modeling import LlamaVid

    prompts, qformer_questions = [], []
    build, tokens = LlamaVid.build_prompt, LlamaVid.video_tokens_batch
    monkeypatch.setattr(LlamaVid, "build_prompt",
                        lambda self, *a, **k: prompts.append(build(self, *a, **k)) or prompts[-1])
    monkeypatch.setattr(LlamaVid, "video_tokens_batch",
                        lambda self, f, qs, **k: qformer_questions.extend(qs) or tokens(self, f, qs, **k))
    questions = ["what color is the shape?", "", "how many shapes?", "who is murphy?"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n"))
    code, out, err = run_cli(capsys, "chat", clip, *model_args(tiny, max_new=16))
    assert code == 0, err
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == 3  # blank question lines are skipped
    # each turn recomputes the context tokens with its own question; earlier turns stay as text
    assert qformer_questions == ["what color is the shape?", "how many shapes?", "who is murphy?"]
    second = [p for p in prompts if "<image>\nhow many shapes?" in p][-1]
    assert second.count("<image>") == 1 and "USER: what color is the shape? ASSISTANT: " in second.split("<image>")[0]
    assert second.endswith("USER: <image>\nhow many shapes? ASSISTANT:")
    code, single, _ = run_cli(capsys, "ask", clip, questions[0], "--json", *model_args(tiny, max_new=16))
    assert lines[0] == " ".join(json.loads(single)["answer"].splitlines())
    # the same piped session again: the same answers (temperature 0, history included)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n"))
    assert run_cli(capsys, "chat", clip, *model_args(tiny, max_new=16))[1] == out


def test_piped_chat_carries_out_slash_commands_and_stops_at_quit(tiny, clip, tmp_path, capsys, monkeypatch):
    from llamavid.model.modeling import LlamaVid

    asked = []
    original = LlamaVid.prompt_embeddings
    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, f, ps, **k: asked.extend(p.question for p in ps) or original(self, f, ps, **k))
    saved = tmp_path / "chat.json"
    lines = ["what color is the shape?", f"/save {saved}", "/reset", "/bogus", "how many shapes?", "/quit",
             "never asked?"]
    code, out, err = run_cli(capsys, "chat", clip, *model_args(tiny), stdin="\n".join(lines) + "\n",
                             monkeypatch=monkeypatch)
    assert code == 0, err
    assert asked == ["what color is the shape?", "how many shapes?"]  # commands are not questions; /quit stops
    assert len(out.splitlines()) == 2  # one answer line per question, none for commands
    assert [t["question"] for t in json.loads(saved.read_text())["turns"]] == ["what color is the shape?"]
    assert "conversation reset" in err and "unknown command /bogus" in err
    # /save never replaces a file that is not a saved chat
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, out, err = run_cli(capsys, "chat", clip, *model_args(tiny), stdin=f"/save {notes}\n", monkeypatch=monkeypatch)
    assert code == 0 and notes.read_text() == "mine" and "not a saved chat" in err
