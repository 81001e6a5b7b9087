"""Writers on a full disk, names that are not UTF-8, and the smaller promises of "one clear line".

Every writer (answers, chats, evaluations, trained models, .vidtok) on a full file system: one line that
says so, nothing half-written left behind, earlier results kept. The disk is a real, small tmpfs (mounted
for the test, which needs root; CI runs as root), so the writes meet a real ENOSPC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LLAMAVID, run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "red-circle.mp4"
DEMO = ["--model", "demo", "--temperature", "0", "--max-new-tokens", "4", "--dtype", "float32"]


@pytest.fixture
def disk(tmp_path):
    """A 512 KiB tmpfs; ``fill(disk, leave)`` leaves ``leave`` bytes free on it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0777", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): this test needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Take the disk's space but ``leave`` bytes (in the file system's blocks)."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / ".filler"
    with open(filler, "ab") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
        except OSError:
            pass


def one_error_line(err: str, says: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("llamavid: error:")]
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(lines) == 1 and says in lines[0], err
    return lines[0]


def test_batch_answers_on_a_full_disk_leave_no_file_and_keep_earlier_records(disk, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "video": str(EXAMPLE), "question": "What color?"}) + "\n"
                                 for i in range(3)))
    fill(disk, leave=0)
    answers = disk / "answers.jsonl"
    code, out, err = run_cli(capsys, "ask", "--batch", questions, "-o", answers, *DEMO)
    assert code == 1
    one_error_line(err, "No space left on device")
    assert not answers.exists(), "an empty answers file was left behind"
    # an earlier output of the same batch is kept, whole records only, however the rerun ends
    (disk / ".filler").unlink()
    earlier = json.dumps({"id": "q0", "video": str(EXAMPLE), "question": "What color?", "answer": "red"}) + "\n"
    answers.write_text(earlier)
    fill(disk, leave=0)
    code, out, err = run_cli(capsys, "ask", "--batch", questions, "-o", answers, *DEMO)
    assert code == 1
    one_error_line(err, "No space left on device")
    records = [json.loads(line) for line in answers.read_text().splitlines()]  # whole records only
    assert records[0] == json.loads(earlier) and all(r["answer"] for r in records)


def test_a_chat_saved_to_a_full_disk_says_so_and_keeps_the_earlier_save(disk, capsys, monkeypatch):
    saved = disk / "chat.json"
    earlier = json.dumps({"model": "demo", "input": "x", "frames": 1, "turns": []})
    saved.write_text(earlier)
    fill(disk, leave=0)
    stdin = f"What color?\n/save {saved}\n"
    code, out, err = run_cli(capsys, "chat", EXAMPLE, *DEMO, stdin=stdin, monkeypatch=monkeypatch)
    assert code == 0 and "No space left on device" in err and "Traceback" not in err
    assert saved.read_text() == earlier
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "chat.json"]  # no temporary file left


def test_eval_predictions_on_a_full_disk(disk, tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    shutil.copyfile(EXAMPLE, tmp_path / "videos" / "vid1.mp4")
    (tmp_path / "qa.json").write_text(json.dumps([{"video_name": "vid1", "question": "what color?",
                                                   "answer": "red", "id": 0}]))
    fill(disk, leave=0)
    out = disk / "preds.jsonl"
    code, _, err = run_cli(capsys, "eval", "predict", "msvd-qa", "-q", tmp_path / "qa.json", "--videos",
                           tmp_path / "videos", "-o", out, *DEMO)
    assert code == 1
    one_error_line(err, "No space left on device")
    assert not out.exists()


def test_encode_on_a_full_disk_leaves_no_vidtok(disk, capsys):
    fill(disk, leave=16_384)
    out = disk / "clip.vidtok"
    code, _, err = run_cli(capsys, "encode", EXAMPLE, "-o", out, "--model", "demo", "--dtype", "float32")
    assert code == 1
    one_error_line(err, "No space left on device")
    assert not out.exists(), "a half-written .vidtok"


def test_a_checkpoint_saved_to_a_full_disk_leaves_nothing_and_keeps_the_earlier_one(disk, tiny_model):
    from llamavid.core.errors import CheckpointError
    from llamavid.model.export import save_checkpoint

    earlier = disk / "model"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    fill(disk, leave=4096)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(tiny_model, earlier, fmt="safetensors")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "model"]  # no temporary folder left
    assert (earlier / "config.json").read_text() == "{}"


# ---------------------------------------------------------------------------------------------------------
# names that are not UTF-8, names too long


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_json_output_is_valid_utf8_and_gives_back_a_name_that_is_not(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.mp4"  # latin-1 bytes: not UTF-8
    shutil.copyfile(EXAMPLE, raw)
    env = dict(os.environ, LLAMAVID_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([*LLAMAVID, "ask", str(folder), "What color?", *DEMO], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = proc.stdout.decode("utf-8")  # strict: any invalid UTF-8 fails here
    [record] = [json.loads(line) for line in text.splitlines()]
    assert os.fsencode(record["video"]) == raw and os.fsencode(record["id"]) == raw
    assert record["answer"]


def test_a_file_name_longer_than_the_system_takes_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "ask", tmp_path / ("x" * 300 + ".mp4"), "What?", *DEMO)
    assert code == 1 and out == ""
    one_error_line(err, "File name too long")


# ---------------------------------------------------------------------------------------------------------
# the smaller promises


def test_a_batch_file_may_start_with_a_byte_order_mark(tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "1", "video": str(EXAMPLE),
                                                         "question": "What color?"}).encode() + b"\n")
    code, out, err = run_cli(capsys, "ask", "--batch", questions, *DEMO)
    assert code == 0, err
    assert "answer" in json.loads(out)


def test_an_empty_subtitle_file_is_said_once(tmp_path, capsys):
    empty = tmp_path / "empty.srt"
    empty.write_text("")
    code, out, err = run_cli(capsys, "ask", EXAMPLE, "What color?", "--subtitles", empty, *DEMO)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "empty.srt" in line]
    assert len(warnings) == 1 and "is empty" in warnings[0] and warnings[0].startswith("llamavid: warning:")


@pytest.mark.slow
def test_4bit_on_the_cpu_works_or_is_refused_at_load(capsys):
    """bitsandbytes' CPU kernels take some layer shapes and not others (and differ between CPUs): the model
    either answers, or is refused when it loads, in one line that says what to use instead."""
    pytest.importorskip("bitsandbytes")
    code, out, err = run_cli(capsys, "ask", EXAMPLE, "What color?", *DEMO[:-2], "--quantize", "4bit")
    if code == 0:
        assert out.strip()
    else:
        line = one_error_line(err, "4-bit layers of shape")
        assert "--quantize 8bit" in line and "encoded" not in err  # refused at load, before any video work
