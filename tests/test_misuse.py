"""The bad-input campaign: every kind of misuse we know of, against the real CLI (with the shipped demo model).

Each case must end with a clear one-line error on stderr (``llamavid: error: ...``, naming the file or
value and the problem), a non-zero exit status, no traceback, and every file it was given left exactly as
it was (content and mode). Bad lines of a batch are the exception by design: each becomes an error record
and the rest of the batch is answered.

    python tests/test_misuse.py      # prints the list of cases as a Markdown table (docs/RELIABILITY.md)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "red-circle.mp4"
DEMO = ["--model", "demo", "--temperature", "0", "--max-new-tokens", "4"]


@dataclass(frozen=True)
class Case:
    """One kind of misuse: the command line (``{name}`` stands for a prepared file), what the one error line
    must say, the exit status, and which prepared files must come out untouched."""

    id: str
    area: str
    args: tuple[str, ...]
    says: str
    code: int = 1
    stdin: str | None = None
    untouched: tuple[str, ...] = ()
    records: dict[str, str] = field(default_factory=dict)  # batch: error record id -> what its error says
    env: dict[str, str] = field(default_factory=dict)  # environment variables ({name} filled like args)
    early: bool = False  # refused before any model loads (loading fails the case)


def _line(**record) -> str:
    return json.dumps({"video": "{video}", "question": "What color is the shape?", **record})


def _batch(*lines: str) -> str:
    return "\n".join([_line(id="good"), *lines]) + "\n"


CASES = [
    # --- inputs ---------------------------------------------------------------------------------------------
    Case("missing-input", "inputs", ("ask", "{dir}/missing.mp4", "What?", *DEMO), "missing.mp4: no such file"),
    Case("empty-folder", "inputs", ("ask", "{empty_dir}", "What?", *DEMO), "no video files in this folder"),
    Case("text-file-as-video", "inputs", ("ask", "{text}", "What?", *DEMO), "notes.txt", untouched=("text",)),
    Case("zero-byte-video", "inputs", ("ask", "{zero}", "What?", *DEMO), "empty.mp4", untouched=("zero",)),
    Case("audio-only-file", "inputs", ("ask", "{audio}", "What?", *DEMO), "no video stream", untouched=("audio",)),
    Case("truncated-vidtok", "inputs", ("ask", "{truncated}", "What?", *DEMO), "truncated", untouched=("truncated",)),
    Case("vidtok-of-another-encoder", "inputs", ("ask", "{foreign_vidtok}", "What?", *DEMO), "vision encoder",
         untouched=("foreign_vidtok",)),
    Case("directory-as-vidtok", "inputs", ("ask", "{dir_vidtok}", "What?", *DEMO), "no video files"),
    # --- the question ---------------------------------------------------------------------------------------
    Case("empty-question", "question", ("ask", "{video}", "", *DEMO), "the question is empty"),
    Case("blank-question", "question", ("ask", "{video}", "   ", *DEMO), "the question is empty"),
    Case("question-not-utf8", "question", ("ask", "{video}", "what\udcff?", *DEMO), "not valid UTF-8"),
    Case("question-too-long-for-any-frame", "question", ("ask", "{video}", "why " * 9000, *DEMO), "shorten it"),
    # --- options --------------------------------------------------------------------------------------------
    Case("fps-zero", "options", ("ask", "{video}", "What?", "--fps", "0", *DEMO), "--fps 0.0: must be > 0"),
    Case("fps-negative", "options", ("ask", "{video}", "What?", "--fps", "-1", *DEMO), "--fps -1.0: must be > 0"),
    Case("fps-nan", "options", ("ask", "{video}", "What?", "--fps", "nan", *DEMO),
         "--fps nan: must be a finite number"),
    Case("fps-inf", "options", ("ask", "{video}", "What?", "--fps", "inf", *DEMO),
         "--fps inf: must be a finite number"),
    Case("fps-not-a-number", "options", ("ask", "{video}", "What?", "--fps", "abc", *DEMO), "--fps", code=2),
    Case("max-frames-zero", "options", ("ask", "{video}", "What?", "--max-frames", "0", *DEMO),
         "--max-frames 0: must be at least 1"),
    Case("max-frames-negative", "options", ("ask", "{video}", "What?", "--max-frames", "-3", *DEMO), "--max-frames -3"),
    Case("temperature-nan", "options", ("ask", "{video}", "What?", *DEMO, "--temperature", "nan"),
         "--temperature nan: must be a finite number"),
    Case("temperature-negative", "options", ("ask", "{video}", "What?", *DEMO, "--temperature", "-1"),
         "--temperature -1.0: must be >= 0"),
    Case("top-p-zero", "options", ("ask", "{video}", "What?", *DEMO, "--top-p", "0"), "--top-p 0.0: must be > 0"),
    Case("top-p-above-one", "options", ("ask", "{video}", "What?", *DEMO, "--top-p", "1.5"),
         "--top-p 1.5: must be <= 1"),
    Case("max-new-tokens-zero", "options", ("ask", "{video}", "What?", *DEMO, "--max-new-tokens", "0"),
         "--max-new-tokens 0: must be at least 1"),
    Case("seed-negative", "options", ("ask", "{video}", "What?", *DEMO, "--seed", "-1"),
         "--seed -1: must be at least 0"),
    Case("subtitles-missing", "options", ("ask", "{video}", "What?", "--subtitles", "{dir}/none.srt", *DEMO),
         "none.srt: no such file"),
    Case("subtitles-directory", "options", ("ask", "{video}", "What?", "--subtitles", "{empty_dir}", *DEMO),
         "is a directory"),
    Case("subtitles-not-srt", "options", ("ask", "{video}", "What?", "--subtitles", "{garbage_srt}", *DEMO),
         "no subtitle cue could be read", untouched=("garbage_srt",)),
    Case("dtype-unknown", "options", ("ask", "{video}", "What?", "--dtype", "float64", *DEMO),
         "--dtype float64: unknown"),
    Case("dtype-float16-on-cpu", "options", ("ask", "{video}", "What?", "--dtype", "float16", "--device", "cpu", *DEMO),
         "not supported on the CPU"),
    Case("device-cuda-missing", "options", ("ask", "{video}", "What?", "--device", "cuda", *DEMO),
         "CUDA is not available"),
    Case("device-unknown", "options", ("ask", "{video}", "What?", "--device", "gpu9", *DEMO),
         "--device gpu9: unknown device"),
    Case("quantize-unknown", "options", ("ask", "{video}", "What?", "--quantize", "3bit", *DEMO),
         "--quantize 3bit: expected 8bit or 4bit"),
    Case("batch-size-zero", "options", ("ask", "--batch", "{questions}", "--batch-size", "0", *DEMO), "--batch-size 0"),
    Case("unknown-option", "options", ("ask", "{video}", "What?", "--bogus", *DEMO), "No such option: --bogus", code=2),
    Case("unknown-command", "options", ("frobnicate",), "No such command", code=2),
    Case("style-unknown", "options", ("summarize", "{video}", "--style", "long", *DEMO),
         "--style long: expected one of brief, detailed"),
    # --- models ---------------------------------------------------------------------------------------------
    Case("model-missing-dir", "models", ("ask", "{video}", "What?", "--model", "{dir}/no-model"),
         "no-model: no such checkpoint directory"),
    Case("model-is-a-file", "models", ("ask", "{video}", "What?", "--model", "{text}"),
         "is a file; a model is a checkpoint directory"),
    Case("model-is-a-vidtok", "models", ("ask", "{video}", "What?", "--model", "{vidtok_bin}"), "is a file",
         untouched=("vidtok_bin",)),
    Case("model-folder-not-a-checkpoint", "models", ("ask", "{video}", "What?", "--model", "{empty_dir}"),
         "config.json"),
    # --- command lines that do not make sense ---------------------------------------------------------------
    Case("input-and-batch", "usage", ("ask", "{video}", "What?", "--batch", "{questions}", *DEMO),
         "--batch takes its questions from the file"),
    Case("no-input-no-batch", "usage", ("ask", *DEMO), "give INPUT and QUESTION, or --batch FILE"),
    Case("output-for-one-question", "usage", ("ask", "{video}", "What?", "-o", "{dir}/a.jsonl", *DEMO),
         "-o/--output is for batches"),
    Case("batch-file-missing", "usage", ("ask", "--batch", "{dir}/none.jsonl", *DEMO), "none.jsonl: no such file"),
    # --- outputs: nothing is clobbered ----------------------------------------------------------------------
    Case("output-is-the-questions-file", "outputs", ("ask", "--batch", "{questions}", "-o", "{questions}", *DEMO),
         "is also an input of this job", untouched=("questions",)),
    Case("output-is-an-unrelated-file", "outputs", ("ask", "--batch", "{questions}", "-o", "{text}", *DEMO),
         "notes.txt: already exists and is not an earlier output", untouched=("text", "questions")),
    Case("output-is-another-batch", "outputs", ("ask", "--batch", "{questions}", "-o", "{other_answers}", *DEMO),
         "which is not in this job", untouched=("other_answers",)),
    Case("output-is-the-video", "outputs", ("ask", "--batch", "{questions}", "-o", "{video}", *DEMO),
         "is also an input of this job", untouched=("video",)),
    Case("output-is-a-directory", "outputs", ("ask", "--batch", "{questions}", "-o", "{empty_dir}", *DEMO),
         "is a directory"),
    Case("output-folder-missing", "outputs", ("ask", "--batch", "{questions}", "-o", "{dir}/no/such/a.jsonl", *DEMO),
         "no such directory"),
    Case("encode-over-another-encoders-vidtok", "outputs",
         ("encode", "{video}", "-o", "{foreign_vidtok}", "--model", "demo"),
         "already holds features from vision encoder", untouched=("foreign_vidtok",)),
    Case("encode-several-into-one-file", "outputs",
         ("encode", "{video}", "{video2}", "-o", "{dir}/one.vidtok", "--model", "demo"),
         "several inputs need an output directory"),
    Case("eval-output-is-a-foreign-file", "outputs",
         ("eval", "predict", "synthetic", "-q", "{synthetic}", "-o", "{text}", *DEMO),
         "notes.txt: already exists and is not an earlier output", untouched=("text",)),
    # --- batch lines: an error record each, the batch goes on -------------------------------------------------
    Case("batch-lines-of-every-kind-of-wrong", "batch", ("ask", "--batch", "-", *DEMO), "1 answered, 14 failed",
         stdin=_batch(
             "not json", "[1, 2]",
             _line(id="temp", temperature="hot"), _line(id="fps", fps="abc"), _line(id="topp", top_p=5),
             _line(id="newtok", max_new_tokens=-5), _line(id="long", long="no"), _line(id="nanfps", fps=1e999),
             _line(id="field", colour="red"), _line(id="good"), _line(id=["x"]),
             json.dumps({"id": "surrogate", "video": "{video}", "question": "what\ud800?"}),
             json.dumps({"id": "novideo", "question": "What?"}), _line(id="subs", subtitles="none.srt"),
         ),
         records={"line-2": "not valid JSON", "line-3": "expected a JSON object",
                  "temp": '"temperature": "hot" must be a number',
                  "fps": '"fps": "abc" must be a number', "topp": '"top_p": 5 must be <= 1',
                  "newtok": '"max_new_tokens": -5 must be at least 1', "long": '"long": "no" must be true or false',
                  "nanfps": '"fps": Infinity must be a finite number', "field": "unknown field(s) colour",
                  "good#dup11": "duplicate id 'good'", "line-12": '"id" must be a non-empty string or a whole number',
                  "surrogate": "not valid UTF-8", "novideo": "missing video", "subs": "none.srt"}),
    # --- numbers past what the code can hold (every front end: flags here, batch lines below) ---------------
    Case("seed-beyond-a-generator", "numbers", ("ask", "{video}", "What?", *DEMO, "--seed", str(2**70)),
         "--seed 1180591620717411303424: must be at most 18446744073709551615", early=True),
    Case("top-p-rounds-to-zero", "numbers", ("ask", "{video}", "What?", *DEMO, "--top-p", "1e-50"),
         "rounds to 0 in float32", early=True),
    Case("temperature-tiny", "numbers", ("ask", "{video}", "What?", *DEMO, "--temperature", "1e-30"),
         "must be 0 (greedy) or at least 1e-06", early=True),
    Case("fps-tiny", "numbers", ("ask", "{video}", "What?", "--fps", "1e-300", *DEMO), "must be at least 0.0001",
         early=True),
    Case("max-frames-beyond-int64", "numbers", ("ask", "{video}", "What?", "--max-frames", str(10**30), *DEMO),
         "must be at most 9223372036854775807", code=1, early=True),
    Case("batch-lines-with-numbers-too-large", "numbers", ("ask", "--batch", "-", *DEMO), "1 answered, 5 failed",
         stdin="\n".join([_line(id="good"), '{"id": "mf", "video": "{video}", "question": "q?", "max_frames": 1' +
                           "0" * 400 + "}",
                           '{"id": "fps", "video": "{video}", "question": "q?", "fps": 1' + "0" * 400 + "}",
                           '{"id": "start", "video": "{video}", "question": "q?", "start": 1' + "0" * 400 + "}",
                           _line(id="seed", seed=2**64), _line(id="topp", top_p=1e-300)]) + "\n",
         records={"mf": '"max_frames": 1', "fps": "is too large to be a number", "start": "is too large to be a number",
                  "seed": "must be at most 18446744073709551615", "topp": "rounds to 0 in float32"}),
    # --- search ---------------------------------------------------------------------------------------------
    Case("search-empty-folder", "search", ("search", "{empty_dir}", "a purple ring", *DEMO),
         "holds no .vidtok files or videos to search", early=True),
    Case("search-missing-path", "search", ("search", "{dir}/missing", "a purple ring", *DEMO),
         "missing: no such file or folder", early=True),
    Case("search-empty-query", "search", ("search", "{video}", "  ", *DEMO), "the query is empty", early=True),
    Case("search-no-query", "search", ("search", "{video}", *DEMO), "give one or more PATHs", early=True),
    Case("search-top-zero", "search", ("search", "{video}", "a ring", "--top", "0", *DEMO),
         "--top 0: must be at least 1", early=True),
    Case("search-rerank-negative", "search", ("search", "{video}", "a ring", "--rerank", "-1", *DEMO),
         "--rerank -1: must be at least 0", early=True),
    Case("search-closer-negative", "search", ("search", "{video}", "a ring", "--closer", "-1", *DEMO),
         "--closer -1: must be at least 0", early=True),
    Case("search-another-encoders-vidtok", "search", ("search", "{video}", "{foreign_vidtok}", "a ring", *DEMO),
         "cannot be searched together", untouched=("foreign_vidtok",)),
    # --- encode -o onto something that is not ours ----------------------------------------------------------
    Case("encode-over-a-foreign-file", "outputs", ("encode", "{video}", "-o", "{text}", "--model", "demo"),
         "notes.txt: already exists and is not a .vidtok", untouched=("text",), early=True),
    Case("encode-over-an-srt", "outputs", ("encode", "{video}", "-o", "{garbage_srt}", "--model", "demo"),
         "garbage.srt: already exists and is not a .vidtok", untouched=("garbage_srt",), early=True),
    Case("encode-over-a-symlink", "outputs", ("encode", "{video}", "-o", "{link}", "--model", "demo"),
         "link.vidtok: is a symbolic link", untouched=("text",), early=True),
    Case("encode-over-its-input", "outputs", ("encode", "{video}", "-o", "{video}", "--model", "demo", "--force"),
         "is the input being encoded", untouched=("video",), early=True),
    Case("encode-into-a-device", "outputs", ("encode", "{video}", "-o", "/dev/null", "--model", "demo", "--force"),
         "/dev/null: is not a regular file", early=True),
    Case("encode-frames-per-batch-zero", "options", ("encode", "{video}", "--frames-per-batch", "0", "--model", "demo"),
         "--frames-per-batch 0: must be at least 1", early=True),
    Case("encode-old-batch-size-zero", "options", ("encode", "{video}", "--batch-size", "0", "--model", "demo"),
         "--frames-per-batch 0: must be at least 1", early=True),
    # --- names, environment and paths -----------------------------------------------------------------------
    Case("file-name-too-long", "inputs", ("ask", "{dir}/" + "x" * 300 + ".mp4", "What?", *DEMO), "File name too long",
         early=True),
    Case("cache-is-a-file", "environment", ("ask", "{video}", "What?", *DEMO),
         "llamavid's cache must be a folder", env={"LLAMAVID_CACHE": "{text}"}, untouched=("text",), early=True),
    Case("train-output-is-a-file", "train",
         ("train", "--stage", "1", "--data", "{synthetic}", "--model", "demo", "-o", "{text}"),
         "notes.txt: already exists and is not a folder", untouched=("text",), early=True),
    Case("batch-is-a-folder", "usage", ("ask", "--batch", "{empty_dir}", *DEMO), "is a folder; --batch takes",
         early=True),
    Case("batch-is-a-device", "usage", ("ask", "--batch", "/dev/zero", *DEMO), "/dev/zero: is not a regular file",
         early=True),
    Case("info-on-a-video", "info", ("info", "{video}"), "is a video or image; llamavid info reads", early=True),
    # --- validation at the edge, before the model loads ----------------------------------------------------
    Case("kv-cache-unknown", "options", ("ask", "{video}", "What?", "--kv-cache", "fast", *DEMO),
         "--kv-cache fast: expected one of auto, full, int8, int4, offload", early=True),
    Case("text-file-refused-early", "inputs", ("ask", "{text}", "What?", *DEMO), "notes.txt: not a video we can read",
         untouched=("text",), early=True),
    Case("empty-video-refused-early", "inputs", ("ask", "{zero}", "What?", *DEMO), "empty.mp4: is empty (0 bytes)",
         early=True),
    Case("zero-width-question", "question", ("ask", "{video}", "\u200b\u200b\u2060", *DEMO),
         "holds nothing visible", early=True),
    Case("huge-choice", "question", ("ask", "{video}", "What?", "--choice", "x" * 100_000, "--choice", "y", *DEMO),
         "holds an option of 100,000 characters (at most 2,000)", early=True),
    Case("two-hundred-choices", "question", ("ask", "{video}", "What?", *sum((["--choice", f"c{i}"]
                                                                              for i in range(200)), []), *DEMO),
         "takes at most 26 options", early=True),
    Case("dtype-float16-on-cpu-early", "options",
         ("ask", "{video}", "What?", "--dtype", "float16", "--device", "cpu", *DEMO), "not supported on the CPU",
         early=True),
    Case("encode-dtype-float16-on-cpu", "options",
         ("encode", "{video}", "--dtype", "float16", "--device", "cpu", "--model", "demo"), "not supported on the CPU",
         early=True),
    # --- other commands -------------------------------------------------------------------------------------
    Case("encode-missing", "encode", ("encode", "{dir}/missing.mp4", "--model", "demo"), "missing.mp4: no such file"),
    Case("encode-not-a-video", "encode", ("encode", "{text}", "--model", "demo"), "notes.txt", untouched=("text",)),
    Case("encode-fps-nan", "encode", ("encode", "{video}", "--fps", "nan", "--model", "demo"), "--fps nan"),
    Case("encode-subtitles-for-several", "encode",
         ("encode", "{video}", "{video2}", "--subtitles", "{garbage_srt}", "--model", "demo"),
         "--subtitles takes one input"),
    Case("chat-missing-input", "chat", ("chat", "{dir}/missing.mp4", *DEMO), "missing.mp4: no such file"),
    Case("info-truncated-vidtok", "info", ("info", "{truncated}"), "truncated", untouched=("truncated",)),
    Case("info-missing", "info", ("info", "{dir}/missing.vidtok"), "missing.vidtok"),
    Case("eval-unknown-benchmark", "eval", ("eval", "predict", "msvd-qb", "-q", "{synthetic}", "-o", "{dir}/p.jsonl"),
         "unknown benchmark 'msvd-qb'"),
    Case("eval-limit-negative", "eval",
         ("eval", "predict", "synthetic", "-q", "{synthetic}", "-o", "{dir}/p.jsonl", "--limit", "-1", *DEMO),
         "--limit -1"),
    Case("train-unknown-stage", "train",
         ("train", "--stage", "4", "--data", "{synthetic}", "--model", "demo", "-o", "{dir}/run"), "stage 4"),
    Case("train-data-missing", "train",
         ("train", "--stage", "1", "--data", "{dir}/none.json", "--model", "demo", "-o", "{dir}/run"), "none.json"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny) -> dict[str, Path]:
    """The prepared files the cases refer to (made once; every case checks they survive)."""
    from media import make_video

    from llamavid.features.encode import EncodeOptions, encode_file
    from llamavid.model.loading import load_vision_encoder

    root = tmp_path_factory.mktemp("misuse")
    f = {"dir": root, "video": root / "clip.mp4", "video2": root / "clip2.mp4", "text": root / "notes.txt",
         "zero": root / "empty.mp4", "audio": root / "tone.m4a", "empty_dir": root / "empty",
         "garbage_srt": root / "garbage.srt", "questions": root / "q.jsonl", "other_answers": root / "other.jsonl",
         "synthetic": root / "synthetic.json", "dir_vidtok": root / "folder.vidtok"}
    shutil.copyfile(EXAMPLE, f["video"])
    make_video(f["video2"], seconds=2, fps=4)
    f["text"].write_text("my notes\n")
    os.chmod(f["text"], 0o640)
    f["zero"].write_bytes(b"")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", f["audio"]],
                   check=True)
    f["empty_dir"].mkdir()
    f["dir_vidtok"].mkdir()
    f["garbage_srt"].write_bytes(bytes(range(256)) * 4)
    f["questions"].write_text(_line(id="q1").replace("{video}", str(f["video"])) + "\n")
    f["other_answers"].write_text(json.dumps({"id": "zz", "answer": "x"}) + "\n")
    f["synthetic"].write_text(json.dumps([{"id": "s1", "video": "clip.mp4", "question_type": "color", "answer": "red",
                                           "conversations": [{"from": "human", "value": "<image>\nWhat color?"},
                                                             {"from": "gpt", "value": "red"}]}]))
    demo = load_vision_encoder("demo", device="cpu", dtype="float32")
    encode_file(demo, f["video"], root / "clip.vidtok", EncodeOptions())
    f["truncated"] = root / "truncated.vidtok"
    data = (root / "clip.vidtok").read_bytes()
    f["truncated"].write_bytes(data[: len(data) - 100])
    f["vidtok_bin"] = root / "movie.bin"
    f["vidtok_bin"].write_bytes(data)
    other = load_vision_encoder(vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    f["foreign_vidtok"] = root / "foreign.vidtok"
    encode_file(other, f["video"], f["foreign_vidtok"], EncodeOptions())
    f["link"] = root / "link.vidtok"
    f["link"].symlink_to(f["text"])
    return f


def _snapshot(path: Path) -> tuple:
    st = path.stat()
    return (path.read_bytes() if path.is_file() else None, stat.S_IMODE(st.st_mode))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_misuse_gets_one_clear_line_and_harms_nothing(case, files, capsys, monkeypatch):
    from conftest import run_cli

    monkeypatch.chdir(files["dir"])
    fill = {k: str(v) for k, v in files.items()}
    args = [a.format(**fill) if "{" in a else a for a in case.args]
    before = {name: _snapshot(files[name]) for name in case.untouched}
    stdin = case.stdin.replace("{video}", fill["video"]) if case.stdin else None
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(**fill))
    if case.early:  # refused before any model loads
        import llamavid

        def no_load(*_a, **_k):
            raise AssertionError(f"{case.id}: a model was loaded before the refusal")

        monkeypatch.setattr(llamavid, "load_model", no_load)
        monkeypatch.setattr(llamavid, "load_vision_encoder", no_load)
    code, out, err = run_cli(capsys, *args, stdin=stdin, monkeypatch=monkeypatch)
    assert code == case.code, (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("llamavid: error:")]
    others = [line for line in err.splitlines() if line.strip() and not line.startswith("llamavid: ")]
    assert not others, f"lines that are not ours: {others}"
    if case.records:
        records = {r["id"]: r for r in map(json.loads, out.splitlines())}
        for record_id, says in case.records.items():
            assert says in records[record_id]["error"], (record_id, records[record_id])
        assert "answer" in records["good"]
        assert case.says in err
    else:
        assert len(errors) == 1, err
        assert case.says in errors[0], errors[0]
    for name, snap in before.items():
        assert _snapshot(files[name]) == snap, f"{name} was changed"
    assert all(len(line) < 400 for line in errors), "an error line runs on"


def markdown_table() -> str:
    rows = ["| # | area | misuse | what the user sees |", "|---:|---|---|---|"]
    for i, case in enumerate(CASES, start=1):
        shown = case.says if not case.records else f"{len(case.records)} error records, the rest answered"
        rows.append(f"| {i} | {case.area} | `{case.id}` | exit {case.code}: ...{shown}... |")
    kinds = len(CASES) - 1 + len(next(c for c in CASES if c.records).records)
    return "\n".join(rows) + f"\n\n{len(CASES)} cases, {kinds} kinds of bad input (each bad batch line counted).\n"


if __name__ == "__main__":
    print(markdown_table())
