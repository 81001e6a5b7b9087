"""Crash test: `llamavid encode` and `llamavid ask --batch` killed with SIGKILL at evenly spaced points, then rerun.

    .venv/bin/python benchmarks/crash.py                     # 20 kill points per command (10-35 minutes on 2 cores)
    .venv/bin/python benchmarks/crash.py --points 5 --commands encode
    .venv/bin/python benchmarks/crash.py --quick --json      # what the test suite runs (3 encode kills, ~20 s)

The CLI is a black box here: every run is ``python -m llamavid_cli ...`` in a subprocess, with the shipped
``--model demo`` and videos made from the example clips (looped with ffmpeg so that a run has many
chunks and questions). For each command:

1. one uninterrupted run gives the reference result, the run's duration D and its amount of work W
   (encode: C chunks of 64 frames; ask: Q answers);
2. for each kill point i = 1..N the command starts from a clean state and is killed with SIGKILL as soon
   as round(i * W / (N + 1)) units of work are durable on disk (``--at progress``, the default: chunk
   files in the partial directory, lines in the answers file), or after i * D / (N + 1) seconds
   (``--at time``); then the same command is run again to completion;
3. the rerun must exit 0 and its result must equal the reference bit for bit: for encode the stored
   features, timestamps and metadata (all but the creation time) of a file that passes ``verify()``;
   for ask the answers JSONL at temperature 0, record for record (all but the timing field), each id
   exactly once and in input order, no torn line. No partial state or lock file may be left behind.

A kill that comes after the run already finished is reported as such (it tests nothing), not as a pass.
Points evenly spaced in progress are the default because on a shared machine the time a run takes
varies by a factor of two or more: time-based points computed from the reference run land in the
start-up (model loading, nothing on disk yet) or after the run has finished, and test nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXAMPLES = ROOT / "examples"
QUESTIONS = ["What color is the shape?", "How many shapes appear in the video?", "What shape is it?",
             "Which color comes last?", "Is the shape moving?", "What happens first?", "What is the code word?",
             "Describe the video."]


@dataclass
class Point:
    command: str
    index: int
    kill_at: str  # "2.31 s", "chunk 6" or "answer 12"
    killed: bool  # False: the run had finished before the kill came
    at_kill: str  # what was on disk when the process died
    rerun: str  # the rerun's outcome ("resumed from frame 384", "12 answered, 20 already done")
    ok: bool
    problem: str = ""


# ---------------------------------------------------------------------------------------------------------
# inputs


def ffmpeg_loop(src: Path, loops: int, out: Path) -> Path:
    """``src`` played ``loops`` times in a row, re-encoded into one video."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(src), "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "8", "-an", str(out)], check=True)
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llamavid_cli", *args]


def env_for(work: Path) -> dict:
    root = str(ROOT)
    return dict(os.environ, LLAMAVID_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1",
                PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def run_to_end(cmd: list[str], env: dict, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return proc, time.monotonic() - t0


def kill_after(cmd: list[str], env: dict, *, seconds: float | None = None,
               until: "callable | None" = None, limit: float = 600) -> bool:
    """Start ``cmd`` and SIGKILL it after ``seconds`` or as soon as ``until()`` holds; False if it ended first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            if (seconds is not None and elapsed >= seconds) or (until is not None and until()) or elapsed > limit:
                proc.send_signal(signal.SIGKILL)  # the process itself, as kill -9 PID does...
                proc.wait()
                break
            time.sleep(0.002)
        killed = proc.returncode == -signal.SIGKILL
    finally:
        try:  # ...then any decoder child it left (they would die on their own, only later)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".lock", ".partial")) or ".tmp" in p.name)


# ---------------------------------------------------------------------------------------------------------
# encode


def _vidtok_state(path: Path) -> dict:
    """Everything in a .vidtok that a rerun must reproduce (after verifying every block)."""
    import numpy as np
    import torch

    from llamavid.features.vidtok import open_vidtok

    with open_vidtok(path) as vt:
        vt.verify()
        meta = vt.meta
        meta.pop("created_at", None)
        return {"meta": meta, "timestamps": np.array(vt.timestamps).tobytes(),
                "features": vt.features(dtype=torch.float16).numpy().tobytes()}


def crash_encode(work: Path, points: int, *, loops: int, fps: float, at: str) -> tuple[list[Point], dict]:
    """Kill ``llamavid encode`` at ``points`` points, rerun, compare with an uninterrupted encode."""
    from llamavid.features.vidtok import partial_dir_for

    work.mkdir(parents=True, exist_ok=True)
    video = ffmpeg_loop(EXAMPLES / "three-shapes.mp4", loops, work / "long.mp4")
    out = work / "out" / "long.vidtok"
    out.parent.mkdir(exist_ok=True)
    cmd = cli("encode", str(video), "--model", "demo", "--fps", f"{fps:g}", "-o", str(out), "--json")
    env = env_for(work)
    ref_proc, duration = run_to_end(cmd, env)
    if ref_proc.returncode != 0:
        raise SystemExit(f"reference encode failed: {ref_proc.stderr.strip()}")
    reference = _vidtok_state(out)
    frames = json.loads(ref_proc.stdout)["frames"]
    chunks = -(-frames // 64)
    info = {"video": f"{loops} x three-shapes.mp4 ({video.stat().st_size} bytes)", "frames": frames,
            "chunks": chunks, "reference_seconds": round(duration, 2)}
    partial = partial_dir_for(out)
    results = []
    for i in range(1, points + 1):
        shutil.rmtree(out.parent)
        out.parent.mkdir()
        if at == "progress":
            goal = max(1, round(i * chunks / (points + 1)))
            where = f"chunk {goal}"
            killed = kill_after(cmd, env, until=lambda: partial.is_dir() and
                                len(list(partial.glob("chunk-*.safetensors"))) >= goal)
        else:
            seconds = i * duration / (points + 1)
            where = f"{seconds:.2f} s"
            killed = kill_after(cmd, env, seconds=seconds)
        on_disk = len(list(partial.glob("chunk-*.safetensors"))) if partial.is_dir() else 0
        at_kill = "output complete" if out.exists() else f"{on_disk} chunks"
        proc, _ = run_to_end(cmd, env)
        point = Point("encode", i, where, killed, at_kill, "", False)
        if proc.returncode != 0:
            point.problem = f"rerun exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        else:
            rec = json.loads(proc.stdout)
            point.rerun = (f"resumed from frame {rec['resumed_from']}" if rec["status"] == "resumed"
                           else rec["status"])
            try:
                got = _vidtok_state(out)
            except Exception as e:  # noqa: BLE001 - reported, not raised
                point.problem = f"result unreadable: {e}"
            else:
                differ = [k for k in reference if got[k] != reference[k]]
                left = leftovers(out.parent)
                if differ:
                    point.problem = f"differs from the uninterrupted run: {', '.join(differ)}"
                elif left:
                    point.problem = f"left behind: {left}"
                elif rec["frames"] != frames:
                    point.problem = f"{rec['frames']} frames reported, {frames} expected"
                else:
                    point.ok = True
        results.append(point)
    return results, info


# ---------------------------------------------------------------------------------------------------------
# ask --batch


def _answers(path: Path) -> list[dict]:
    """The answers file, line by line; a torn or unparseable line is an error."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n")[:-1], 1):
        records.append(json.loads(line))  # raises on a torn line
    if not path.read_text(encoding="utf-8").endswith("\n"):
        raise ValueError("the file does not end with a newline (a torn last line)")
    return records


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def crash_ask(work: Path, points: int, *, per_video: int, at: str) -> tuple[list[Point], dict]:
    """Kill ``llamavid ask --batch -o`` at ``points`` points, rerun, compare with an uninterrupted batch."""
    work.mkdir(parents=True, exist_ok=True)
    videos = work / "videos"
    videos.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "red-circle.mp4", videos / "red-circle.mp4")
    shutil.copy(EXAMPLES / "red-circle.srt", videos / "red-circle.srt")
    shutil.copy(EXAMPLES / "three-shapes.mp4", videos / "three-shapes.mp4")
    ffmpeg_loop(EXAMPLES / "red-circle.mp4", 3, videos / "circle-x3.mp4")
    ffmpeg_loop(EXAMPLES / "three-shapes.mp4", 6, videos / "shapes-x6.mp4")
    names = ["red-circle.mp4", "three-shapes.mp4", "circle-x3.mp4", "shapes-x6.mp4"]
    lines = []
    for q in range(per_video):  # interleaved, so that videos are revisited across the file
        for name in names:
            lines.append({"id": f"{name.split('.')[0]}-{q}", "video": name, "question": QUESTIONS[q % len(QUESTIONS)]})
    qfile = videos / "questions.jsonl"
    qfile.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = work / "answers.jsonl"
    cmd = cli("ask", "--batch", str(qfile), "-o", str(out), "--model", "demo", "--temperature", "0")
    env = env_for(work)

    def clean() -> None:
        out.unlink(missing_ok=True)
        shutil.rmtree(work / "cache", ignore_errors=True)  # each run encodes the videos again: kills land there too

    clean()
    ref_proc, duration = run_to_end(cmd, env)
    if ref_proc.returncode != 0:
        raise SystemExit(f"reference batch failed: {ref_proc.stderr.strip()}")
    reference = [_comparable(r) for r in _answers(out)]
    ids = [line["id"] for line in lines]
    if [r["id"] for r in reference] != ids:
        raise SystemExit("the reference batch did not answer every question once, in order")
    info = {"videos": len(names), "questions": len(lines), "reference_seconds": round(duration, 2)}
    results = []
    for i in range(1, points + 1):
        clean()
        if at == "progress":
            goal = max(1, round(i * len(lines) / (points + 1)))
            where = f"answer {goal}"
            killed = kill_after(cmd, env, until=lambda: out.exists() and out.read_bytes().count(b"\n") >= goal)
        else:
            seconds = i * duration / (points + 1)
            where = f"{seconds:.2f} s"
            killed = kill_after(cmd, env, seconds=seconds)
        done_before = out.read_bytes().count(b"\n") if out.exists() else 0
        cached = len(list((work / "cache").rglob("*.vidtok"))) if (work / "cache").exists() else 0
        at_kill = f"{done_before} answers, {cached} videos encoded"
        proc, _ = run_to_end(cmd, env)
        point = Point("ask", i, where, killed, at_kill, "", False)
        summary = [line for line in proc.stderr.splitlines() if "answered" in line]
        point.rerun = summary[-1].replace("llamavid: ", "") if summary else ""
        if proc.returncode != 0:
            point.problem = f"rerun exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        else:
            try:
                got = [_comparable(r) for r in _answers(out)]
            except ValueError as e:
                point.problem = f"answers file unreadable: {e}"
            else:
                got_ids = [r.get("id") for r in got]
                left = leftovers(work / "cache") if (work / "cache").exists() else []
                if sorted(got_ids) != sorted(ids) or len(set(got_ids)) != len(got_ids):
                    lost = sorted(set(ids) - set(got_ids))
                    dup = sorted({x for x in got_ids if got_ids.count(x) > 1})
                    point.problem = f"lost {lost[:5]} duplicated {dup[:5]}"
                elif got_ids != ids:
                    point.problem = "answers out of input order"
                elif got != reference:
                    bad = [r["id"] for r, w in zip(got, reference) if r != w]
                    point.problem = f"answers differ from the uninterrupted run: {bad[:5]}"
                elif left:
                    point.problem = f"left behind: {left}"
                else:
                    point.ok = True
        results.append(point)
    return results, info


# ---------------------------------------------------------------------------------------------------------


def table(results: list[Point]) -> str:
    rows = [("command", "#", "kill at", "killed", "on disk at the kill", "rerun", "result")]
    for p in results:
        rows.append((p.command, str(p.index), p.kill_at, "yes" if p.killed else "no (had finished)", p.at_kill,
                     p.rerun, "identical" if p.ok else f"FAILED: {p.problem}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(len(widths))) + "  " + r[-1] for r in rows)


def summary(results: list[Point]) -> dict:
    out = {}
    for command in sorted({p.command for p in results}):
        mine = [p for p in results if p.command == command]
        out[command] = {"points": len(mine), "killed_mid_run": sum(p.killed for p in mine),
                        "survived": sum(p.ok and p.killed for p in mine),
                        "failed": sum(not p.ok for p in mine),
                        "finished_before_kill": sum(not p.killed for p in mine)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20, help="kill points per command (default 20)")
    ap.add_argument("--commands", default="encode,ask", help="encode, ask or both (default)")
    ap.add_argument("--at", choices=["progress", "time"], default="progress",
                    help="kill points evenly spaced in work done (chunks, answers; default) or in time")
    ap.add_argument("--loops", type=int, default=40, help="the encode video is three-shapes.mp4 looped this often")
    ap.add_argument("--fps", type=float, default=4.0, help="encode sampling rate (the clips have 4 fps)")
    ap.add_argument("--per-video", type=int, default=8, help="ask: questions per video (4 videos)")
    ap.add_argument("--quick", action="store_true", help="the suite's version: 3 encode kills, short video")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args()
    if args.quick:
        args.points, args.commands, args.at, args.loops = 3, "encode", "progress", 12
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    work = args.keep or Path(tempfile.mkdtemp(prefix="llamavid-crash-"))
    results: list[Point] = []
    info = {}
    t0 = time.monotonic()
    try:
        if "encode" in commands:
            r, info["encode"] = crash_encode(work / "encode", args.points, loops=args.loops, fps=args.fps, at=args.at)
            results += r
        if "ask" in commands:
            r, info["ask"] = crash_ask(work / "ask", args.points, per_video=args.per_video, at=args.at)
            results += r
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({"summary": summary(results), "inputs": info, "seconds": round(elapsed, 1),
                          "points": [asdict(p) for p in results]}, indent=1))
    else:
        print(table(results))
        print()
        for command, s in summary(results).items():
            print(f"{command}: {s['survived']} of {s['points']} kill points survived (bit-identical rerun), "
                  f"{s['failed']} failed, {s['finished_before_kill']} finished before the kill; inputs {info[command]}")
        print(f"total {elapsed:.0f} s")
    return 1 if any(not p.ok for p in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
