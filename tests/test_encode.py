"""`llamavid encode` and `llamavid info FILE.vidtok`, through the real CLI entry point.

Features are checked against an independent path: frames decoded by an ffmpeg raw pipe (not decord or
PyAV), chosen by the published rule, and run through ``VisionEncoder.encode_frames`` directly.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixture import make_eva_state_dict
from conftest import LLAMAVID, run_cli
from media import make_image, make_video, read_index, write_srt

from llamavid.features.encode import (
    CHUNK_FRAMES,
    EncodeOptions,
    encode_file,
    resume_position,
    shard_from_env,
    shard_inputs,
)
from llamavid.features.vidtok import open_vidtok, partial_dir_for

GAP = re.compile(r"\d+(\.\d+)? ?s\b.*\d+(\.\d+)? ?s\b")  # a warning naming a stretch by two times


# ---------------------------------------------------------------------------------------------------------
# helpers


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ffmpeg_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame of a video as RGB, decoded by the ffmpeg command line (independent of decord/PyAV)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def leftovers(folder: Path) -> list[str]:
    """Outputs or partial state an encoder left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".vidtok" or p.name.endswith(".partial"))


@pytest.fixture(scope="module")
def encoder(tiny):
    import llamavid

    return llamavid.load_vision_encoder(vision_tower=tiny.vision_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def other_tower(tmp_path_factory) -> Path:
    """A second vision encoder of the same shape but other weights (another fingerprint)."""
    path = tmp_path_factory.mktemp("other") / "eva_vit_g.pth"
    torch.save(make_eva_state_dict(torch.Generator().manual_seed(1234)), path)
    return path


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """20 s at 10 fps in MPEG-TS, 15% of the bytes in the middle overwritten with garbage."""
    path = make_video(tmp_path_factory.mktemp("damaged") / "damaged.ts", seconds=20, fps=10, gop=5)
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * 0.45), int(len(data) * 0.60)
    rng = random.Random(0)
    data[a:b] = bytes(rng.randrange(256) for _ in range(b - a))
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------------------------------------------------
# what a .vidtok holds


def test_encode_holds_frames_timestamps_metadata_subtitles_and_true_features(tmp_path, tiny, encoder, capsys):
    video = make_video(tmp_path / "clip.mp4", seconds=3, fps=10)
    write_srt(tmp_path / "clip.srt", [(1.2, 2.0, "second line"), (0.0, 0.9, "first <i>line</i>")])
    code, out, err = run_cli(capsys, "encode", video, "--vision-tower", tiny.vision_path, "--fps", 2, "--json")
    assert code == 0, err
    (rec,) = records(out)
    assert rec["status"] == "encoded" and rec["frames"] == 6 and rec["subtitles"] == 2
    with open_vidtok(tmp_path / "clip.vidtok") as vt:
        # published rule: every round(10 / 2) = 5th frame from frame 0
        assert vt.num_frames == 6 and vt.fps == 2.0
        np.testing.assert_allclose(vt.timestamps, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], atol=1e-3)
        src = vt.source
        assert src["name"] == "clip.mp4" and src["size"] == video.stat().st_size
        assert src["native_fps"] == pytest.approx(10.0) and src["duration"] == pytest.approx(3.0, abs=0.11)
        assert src["subtitles"] == "clip.srt" and src["content_hash"].startswith("s1:")
        assert vt.subtitles == [(0.0, 0.9, "first line"), (1.2, 2.0, "second line")]
        assert vt.encoder["fingerprint"] == encoder.identity()["fingerprint"]
        stored = vt.features()
    frames = ffmpeg_frames(video, 96, 64)[::5]
    assert [read_index(f) for f in frames] == [0, 5, 10, 15, 20, 25]
    direct = encoder.encode_frames(frames).float()
    assert stored.shape == direct.shape == (6, 257, 176)
    # stored as float16: equal up to float16 rounding (and decoder colour conversion, which is exact here)
    torch.testing.assert_close(stored, direct.half().float(), atol=2e-3, rtol=2e-3)
    assert not torch.allclose(stored[0], stored[1])  # different frames, different features

    code, out, _ = run_cli(capsys, "info", tmp_path / "clip.vidtok", "--json")
    info = json.loads(out)
    assert code == 0 and info["frames"] == 6 and info["storage"] == "float16" and info["subtitles"] == 2
    assert info["feature_shape"] == [257, 176] and info["source"]["name"] == "clip.mp4"
    code, out, _ = run_cli(capsys, "info", tmp_path / "clip.vidtok", "--verify")
    assert code == 0 and "frames: 6" in out and "feature_shape: 257 x 176" in out and "verified: True" in out


def test_compact_int8_subtitles_option_and_still_image(tmp_path, tiny, capsys):
    video = make_video(tmp_path / "v.mp4", seconds=2, fps=8)
    write_srt(tmp_path / "v.srt", [(0.0, 1.0, "sidecar")])
    other = write_srt(tmp_path / "given.srt", [(0.5, 1.5, "given")])
    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tiny.vision_path, "-o", tmp_path / "f16.vidtok")
    assert code == 0, err
    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tiny.vision_path, "-o", tmp_path / "i8.vidtok",
                       "--compact", "--subtitles", other)
    assert code == 0, err
    with open_vidtok(tmp_path / "f16.vidtok") as a, open_vidtok(tmp_path / "i8.vidtok") as b:
        assert a.storage == "float16" and b.storage == "int8" and a.num_frames == b.num_frames == 2
        assert a.subtitles == [(0.0, 1.0, "sidecar")] and b.subtitles == [(0.5, 1.5, "given")]
        fa, fb = a.features(), b.features()
        # per-row symmetric int8: within half a step (max|row| / 254) of the float32 value, which float16
        # storage itself moved by at most half a float16 ulp (|x| * 2**-11)
        bound = fa.abs().amax(dim=-1, keepdim=True) / 254 + fa.abs() * 2.0**-10 + 1e-6
        assert bool(((fa - fb).abs() <= bound).all())
    assert (tmp_path / "i8.vidtok").stat().st_size < 0.6 * (tmp_path / "f16.vidtok").stat().st_size

    image = make_image(tmp_path / "still.png", index=7)
    code, out, err = run_cli(capsys, "encode", image, "--vision-tower", tiny.vision_path, "--json")
    assert code == 0, err and records(out)[0]["frames"] == 1
    with open_vidtok(tmp_path / "still.vidtok") as vt:
        assert vt.num_frames == 1 and vt.source["is_image"] is True

    code, _, err = run_cli(capsys, "encode", video, image, "--vision-tower", tiny.vision_path, "--subtitles", other)
    assert code == 1 and "--subtitles takes one input" in err


# ---------------------------------------------------------------------------------------------------------
# inputs: files, folders, stdin; skipping; JSON; sharding


@pytest.mark.slow
def test_inputs_folder_stdin_skip_force_json(tmp_path, tiny, capsys, monkeypatch):
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    a = make_video(lib / "a.mp4", seconds=1, fps=5)
    b = make_video(lib / "sub" / "b.mkv", seconds=1, fps=5)
    (lib / "notes.txt").write_text("not a video")
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "encode", lib, "--vision-tower", tiny.vision_path, "-o", out_dir, "--json")
    assert code == 0, err
    assert [(r["input"], r["status"], r["frames"]) for r in records(out)] == [(str(a), "encoded", 1),
                                                                              (str(b), "encoded", 1)]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.vidtok", "b.vidtok"]
    assert "\x1b[" not in err  # no progress bar when stderr is not a terminal

    code, out, _ = run_cli(capsys, "encode", "-", "--vision-tower", tiny.vision_path, "-o", out_dir, "--json",
                       stdin=f"{a}\n\n{b}\n", monkeypatch=monkeypatch)
    assert code == 0 and [r["status"] for r in records(out)] == ["skipped", "skipped"]
    code, out, _ = run_cli(capsys, "encode", a, "--vision-tower", tiny.vision_path, "-o", out_dir, "--json", "--force")
    assert code == 0 and [r["status"] for r in records(out)] == ["encoded"]
    code, _, err = run_cli(capsys, "encode", a, "--vision-tower", tiny.vision_path, "-o", out_dir)
    assert code == 0 and "up to date" in err


@pytest.mark.slow
def test_a_bad_input_does_not_sink_the_batch(tmp_path, tiny, capsys):
    good1 = make_video(tmp_path / "one.mp4", seconds=1, fps=5)
    good2 = make_video(tmp_path / "two.mp4", seconds=1, fps=5)
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video at all" * 100)
    code, out, err = run_cli(capsys, "encode", good1, tmp_path / "bad.mp4", tmp_path / "gone.mp4", good2,
                         "--vision-tower", tiny.vision_path, "--json")
    assert code == 1
    status = {Path(r["input"]).name: r["status"] for r in records(out)}
    assert status == {"one.mp4": "encoded", "bad.mp4": "failed", "gone.mp4": "failed", "two.mp4": "encoded"}
    errors = [line for line in err.splitlines() if line.startswith("llamavid: error:")]
    assert len(errors) == 2 and "bad.mp4" in errors[0] and "gone.mp4" in errors[1]
    assert "2 of 4 inputs failed" in err
    assert leftovers(tmp_path) == ["one.vidtok", "two.vidtok"]


def test_sharding_over_processes():
    items = [f"v{i}" for i in range(7)]
    shards = [shard_inputs(items, r, 3) for r in range(3)]
    assert shards == [["v0", "v3", "v6"], ["v1", "v4"], ["v2", "v5"]]
    assert sorted(sum(shards, [])) == sorted(items)
    assert shard_inputs(items, 0, 1) == items
    assert shard_inputs(items[:2], 2, 3) == []
    assert shard_from_env({}) == (0, 1, 0)
    assert shard_from_env({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"}) == (5, 4, 1)
    assert shard_from_env({"WORLD_SIZE": "2", "RANK": "1"}) == (1, 2, 1)
    with pytest.raises(Exception, match="rank"):
        shard_inputs(items, 3, 3)


@pytest.mark.slow
def test_cli_takes_only_its_shard_under_a_launcher(tmp_path, tiny, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        make_video(tmp_path / "in" / f"{name}.mp4", seconds=1, fps=5)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    code, out, err = run_cli(capsys, "encode", tmp_path / "in", "--vision-tower", tiny.vision_path, "--device", "cpu",
                         "-o", tmp_path / "out", "--json")
    assert code == 0, err
    assert [Path(r["input"]).name for r in records(out)] == ["b.mp4"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.vidtok"]


# ---------------------------------------------------------------------------------------------------------
# resume


def test_resume_position_follows_timestamps_not_counts():
    plan = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert resume_position(plan, 0.2) == 3
    assert resume_position(plan, 0.5) == 6
    assert resume_position(plan, 0.2 - 1e-12) == 3  # float noise in the stored copy


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_after(frames: int):
    def on_progress(done: int, total: int) -> None:
        if done >= frames:
            raise _Stop()
    return on_progress


@pytest.mark.slow
def test_resume_after_interrupt_is_bit_identical_even_across_a_damaged_stretch(tmp_path, encoder, damaged, capsys):
    """Frames lost in the damage make stored-frame counts and plan positions differ; resume must not care."""
    opts = EncodeOptions(fps=10, batch_size=8)
    whole = encode_file(encoder, damaged, tmp_path / "whole.vidtok", opts)
    assert whole.status == "encoded" and 100 < whole.frames < 200
    assert any("damaged.ts" in w and GAP.search(w) for w in whole.warnings), whole.warnings

    out = tmp_path / "resumed.vidtok"
    with pytest.raises(_Stop):
        encode_file(encoder, damaged, out, opts, on_progress=_interrupt_after(2 * CHUNK_FRAMES + 8))
    assert not out.exists()  # never a half-written file under the final name
    chunks = sorted(p.name for p in partial_dir_for(out).iterdir() if p.name.startswith("chunk-"))
    assert len(chunks) == 2
    code, _, err = run_cli(capsys, "info", out)  # the partial state is not taken for a .vidtok
    assert code == 1 and "unfinished encoding" in err

    again = encode_file(encoder, damaged, out, opts)
    assert again.status == "resumed" and again.resumed_from == 2 * CHUNK_FRAMES and again.frames == whole.frames
    assert not partial_dir_for(out).exists()
    with open_vidtok(tmp_path / "whole.vidtok") as a, open_vidtok(out) as b:
        assert np.array_equal(a.timestamps, b.timestamps)
        assert torch.equal(a.features(dtype=torch.float16), b.features(dtype=torch.float16))


@pytest.mark.slow
def test_kill_9_then_resume_through_the_cli(tmp_path, tiny):
    video = make_video(tmp_path / "long.mp4", seconds=30, fps=10)
    args = [*LLAMAVID, "encode", str(video), "--vision-tower", str(tiny.vision_path), "--fps", "10", "--json"]
    env = dict(os.environ, LLAMAVID_CACHE=str(tmp_path / "cache"))
    partial = partial_dir_for(tmp_path / "long.vidtok")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Kill it as soon as two whole chunks are on disk (an event we watch for, not a time we guess).
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and len(list(partial.glob("chunk-*.safetensors"))) >= 2):
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the encoder exited with {proc.returncode} before two chunks were seen on disk:\n"
                        f"{err.decode(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"fewer than two chunks on disk 120 s after the encoder started:\n"
                        f"{err.decode(errors='replace')[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the encoder finished before it could be killed"
    assert not (tmp_path / "long.vidtok").exists()

    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    (rec,) = records(done.stdout)  # stdout is JSON only
    assert rec["status"] == "resumed" and rec["resumed_from"] >= 2 * CHUNK_FRAMES and rec["frames"] == 300
    assert "\x1b[" not in done.stderr  # quiet when piped: no progress bar

    fresh = subprocess.run(args[:-1] + ["-o", str(tmp_path / "fresh.vidtok")], capture_output=True, text=True, env=env)
    assert fresh.returncode == 0, fresh.stderr
    with open_vidtok(tmp_path / "long.vidtok") as a, open_vidtok(tmp_path / "fresh.vidtok") as b:
        assert np.array_equal(a.timestamps, b.timestamps)
        assert torch.equal(a.features(dtype=torch.float16), b.features(dtype=torch.float16))


@pytest.mark.slow
def test_another_vision_encoder_is_refused(tmp_path, tiny, encoder, other_tower, capsys):
    video = make_video(tmp_path / "v.mp4", seconds=9, fps=10)
    out = tmp_path / "v.vidtok"
    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tiny.vision_path)
    assert code == 0, err
    before = out.read_bytes()
    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", other_tower)
    assert code == 1 and err.count("\n") == 1 and "another -o" in err and "--force" in err
    assert out.read_bytes() == before

    # an unfinished encoding from encoder A is never continued by encoder B
    import llamavid

    other = llamavid.load_vision_encoder(vision_tower=other_tower, device="cpu", dtype="float32")
    opts = EncodeOptions(fps=10, batch_size=8)
    with pytest.raises(_Stop):
        encode_file(encoder, video, tmp_path / "mixed.vidtok", opts, on_progress=_interrupt_after(CHUNK_FRAMES + 8))
    result = encode_file(other, video, tmp_path / "mixed.vidtok", opts)
    assert result.status == "encoded" and result.resumed_from == 0
    encode_file(other, video, tmp_path / "clean.vidtok", opts)
    with open_vidtok(tmp_path / "mixed.vidtok") as a, open_vidtok(tmp_path / "clean.vidtok") as b:
        assert torch.equal(a.features(dtype=torch.float16), b.features(dtype=torch.float16))

    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", other_tower, "--force")
    assert code == 0, err
    with open_vidtok(out) as vt:
        assert vt.encoder["fingerprint"] == other.identity()["fingerprint"]


# ---------------------------------------------------------------------------------------------------------
# errors: one line, non-zero exit, nothing left behind


def _one_line_error(code: int, err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("llamavid: error:"), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.mark.slow
def test_bad_inputs_fail_cleanly(tmp_path, tiny, capsys):
    tower = tiny.vision_path
    code, _, err = run_cli(capsys, "encode", tmp_path / "missing.mp4", "--vision-tower", tower)
    _one_line_error(code, err, "missing.mp4")

    (tmp_path / "text.mp4").write_text("hello\n" * 500)
    code, _, err = run_cli(capsys, "encode", tmp_path / "text.mp4", "--vision-tower", tower)
    _one_line_error(code, err, "text.mp4")

    (tmp_path / "readme.txt").write_text("hello\n")
    code, _, err = run_cli(capsys, "encode", tmp_path / "readme.txt", "--vision-tower", tower)
    _one_line_error(code, err, "readme.txt")

    # a container with a video stream and no frames
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-t", "1",
                    "-frames:v", "0", "-c:v", "libx264", str(tmp_path / "empty.mp4")], check=True)
    code, _, err = run_cli(capsys, "encode", tmp_path / "empty.mp4", "--vision-tower", tower)
    _one_line_error(code, err, "empty.mp4")
    assert leftovers(tmp_path) == []

    video = make_video(tmp_path / "ok.mp4", seconds=1, fps=5)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "ok.vidtok", Path("/proc/llamavid-test/ok.vidtok")):
        code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tower, "-o", out)
        _one_line_error(code, err, str(out.parent))
    for out_dir in (tmp_path / "afile" / "sub", Path("/proc/llamavid-test")):
        code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tower, "-o", out_dir)
        _one_line_error(code, err, str(out_dir))
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_info_verify_refuses_truncated_and_tampered_files(tmp_path, tiny, capsys):
    video = make_video(tmp_path / "v.mp4", seconds=3, fps=10)
    code, _, err = run_cli(capsys, "encode", video, "--vision-tower", tiny.vision_path, "--fps", 10)
    assert code == 0, err
    data = (tmp_path / "v.vidtok").read_bytes()

    (tmp_path / "cut.vidtok").write_bytes(data[: len(data) - 1000])
    code, _, err = run_cli(capsys, "info", tmp_path / "cut.vidtok", "--verify")
    _one_line_error(code, err, "cut.vidtok", "truncated")

    tampered = bytearray(data)
    tampered[len(data) - 5000] ^= 0x40  # a feature byte of the last block
    (tmp_path / "bad.vidtok").write_bytes(bytes(tampered))
    code, _, _ = run_cli(capsys, "info", tmp_path / "bad.vidtok")
    assert code == 0  # the header and timestamps are fine; features are checked when read
    code, _, err = run_cli(capsys, "info", tmp_path / "bad.vidtok", "--verify")
    _one_line_error(code, err, "bad.vidtok", "checksum")

    code, _, err = run_cli(capsys, "info", tmp_path / "none.vidtok")
    _one_line_error(code, err, "none.vidtok")


@pytest.mark.slow
def test_damaged_video_encodes_what_decodes_with_a_warning(tmp_path, tiny, damaged, capsys):
    out = tmp_path / "d.vidtok"
    code, stdout, err = run_cli(capsys, "encode", damaged, "--vision-tower", tiny.vision_path, "--fps", 2, "-o", out,
                            "--json")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings and all("damaged.ts" in w for w in warnings)
    assert any(GAP.search(w) for w in warnings)  # the gap is named by its times
    (rec,) = records(stdout)
    with open_vidtok(out) as vt:
        ts = vt.timestamps
        assert rec["frames"] == vt.num_frames and 20 < vt.num_frames < 40
        assert np.all(np.diff(ts) > 0) and ts[-1] > 15  # frames after the damage are there
        assert np.diff(ts).max() > 1.0  # and the damaged stretch is skipped, not filled
        assert vt.warnings == rec["warnings"]
