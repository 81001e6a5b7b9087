"""The .vidtok format: round trips, int8 error bound, lazy checked reads, resumable atomic writing, damage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from llamavid import __version__
from llamavid.core.errors import InputError, LlamaVidError, VidtokError
from llamavid.features import vidtok
from llamavid.features.vidtok import (
    VidtokWriter,
    content_hash,
    content_hash_spans,
    dequantize_int8,
    open_vidtok,
    partial_dir_for,
    quantize_int8,
    write_vidtok,
)

ENCODER = {"fingerprint": "eva-test-1", "architecture": "eva_vit", "width": 8}
SOURCE = {"name": "clip.mp4", "size": 1234, "duration": 20.0, "content_hash": "s1:abc", "codec": "h264"}
N, C = 5, 7


def frames(t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with rows of very different magnitudes (like a ViT's), plus one all-zero row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, N, C)).astype(np.float32) * rng.uniform(0.01, 30, size=(t, N, 1)).astype(np.float32)
    x[0, 1] = 0.0
    return x, np.arange(t, dtype=np.float64) * 0.5 + 0.25


def writer(path: Path, **kw) -> VidtokWriter:
    args = {"encoder": ENCODER, "fps": 2.0, "source": SOURCE, "chunk_frames": 16} | kw
    return VidtokWriter(path, **args)


def one_shot(path: Path, x: np.ndarray, ts: np.ndarray, **kw) -> Path:
    args = {"encoder": ENCODER, "fps": 2.0, "source": SOURCE, "chunk_frames": 16} | kw
    return write_vidtok(path, x, ts, **args)


def assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.fixture
def fixed_clock(monkeypatch):
    """Make created_at deterministic so that whole files can be compared byte for byte."""
    monkeypatch.setattr(vidtok, "_utc_now", lambda: "2025-01-02T03:04:05Z")


# ---------------------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_float16(tmp_path):
    x, ts = frames(150)
    subs = [(0.0, 1.5, "Hello."), (2.0, 3.25, "Ünïcode \"quoted\"\nline")]
    path = one_shot(tmp_path / "clip.vidtok", torch.from_numpy(x), ts.tolist(), subtitles=subs,
                    warnings=["decode gap at 3.0s"], extra_meta={"sampler": "uniform"})
    with open_vidtok(path) as vt:
        assert len(vt) == vt.num_frames == 150
        assert vt.storage == "float16" and vt.feature_shape == (N, C) and vt.fps == 2.0
        assert np.array_equal(vt.timestamps, ts) and vt.timestamps.dtype == np.float64
        assert vt.subtitles == subs
        assert vt.encoder == ENCODER and vt.source == SOURCE
        full = vt.features()
        assert full.dtype == torch.float32 and full.shape == (150, N, C)
        assert np.array_equal(full.numpy(), x.astype(np.float16).astype(np.float32))
        assert vt.features(dtype=torch.float16).dtype == torch.float16
        meta = vt.meta
    assert meta["format"] == "llamavid.vidtok" and meta["format_version"] == "1.1"
    assert meta["llamavid_version"] == __version__ and meta["created_by"] == f"llamavid {__version__}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["created_at"])
    assert meta["num_frames"] == 150 and meta["warnings"] == ["decode gap at 3.0s"]
    assert meta["extra"] == {"sampler": "uniform"} and meta["quantization"] is None
    assert meta["checksums"]["block_frames"] == 64 and len(meta["checksums"]["blocks"]) == 3


def test_round_trip_int8_within_half_a_scale_per_row(tmp_path):
    x, ts = frames(100)
    path = one_shot(tmp_path / "clip.vidtok", x, ts, storage="int8", subtitles=[(1, 2, "a")])
    stored = load_file(path)  # stock safetensors sees the raw tensors
    assert stored["features"].dtype == np.int8 and stored["scales"].shape == (100, N)
    assert np.abs(stored["features"].astype(np.int32)).max() <= 127
    scales = stored["scales"]
    assert np.allclose(scales, np.abs(x).max(axis=-1) / 127, rtol=1e-6)
    assert scales[0, 1] == 0 and not stored["features"][0, 1].any()
    with open_vidtok(path) as vt:
        assert vt.storage == "int8" and vt.subtitles == [(1.0, 2.0, "a")]
        assert vt.meta["quantization"] == {"scheme": "symmetric-per-row", "qmax": 127, "scale_dtype": "float32"}
        deq = vt.features().numpy()
        assert np.array_equal(vt.timestamps, ts)
    bound = scales[..., None] / 2 * (1 + 1e-5) + 1e-12
    assert (np.abs(x - deq) <= bound).all()
    assert not deq[0, 1].any()


def test_quantize_helpers_are_inverse_up_to_half_a_scale():
    x = np.array([[[0.0, 0.0, 0.0], [1.0, -2.54, 0.01], [-1e-3, 5e-4, 2e-4]]], dtype=np.float32)
    q, s = quantize_int8(x)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (1, 3)
    assert s[0, 0] == 0 and q[0, 1, 1] == -127 and q[0, 2, 0] == -127
    assert (np.abs(dequantize_int8(q, s) - x) <= s[..., None] / 2 + 1e-9).all()


def test_plain_safetensors_and_the_spec_snippet_read_the_same(tmp_path):
    x, ts = frames(150, seed=3)
    path = one_shot(tmp_path / "clip.vidtok", x, ts, storage="int8")
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert (8 + length) % 8 == 0  # data section 8-byte aligned
    header = json.loads(raw[8:8 + length])
    assert set(header["__metadata__"]) == {"format", "format_version", "llamavid", "llamavid_checksum"}
    spec = (Path(__file__).parent.parent / "docs" / "vidtok.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", spec, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation, checked to work
    got, got_ts = namespace["read_frames"](str(path), 60, 130)
    with open_vidtok(path) as vt:
        assert np.array_equal(got, vt.features(60, 130).numpy())
    assert np.array_equal(got_ts, ts[60:130])


def test_bfloat16_and_float64_inputs(tmp_path):
    x, ts = frames(10)
    for name, given in [("bf16", torch.from_numpy(x).to(torch.bfloat16)), ("f64", x.astype(np.float64))]:
        path = one_shot(tmp_path / f"{name}.vidtok", given, ts)
        with open_vidtok(path) as vt:
            want = given.float().numpy() if name == "bf16" else x
            assert np.allclose(vt.features().numpy(), want, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# Lazy, checked reads


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_range_and_selection_reads_equal_slices_of_the_full_array(tmp_path, storage):
    x, ts = frames(200, seed=1)
    path = one_shot(tmp_path / "clip.vidtok", x, ts, storage=storage)
    with open_vidtok(path) as vt:
        full = vt.features()
    with open_vidtok(path) as vt:
        assert vt.verified_blocks == frozenset()
        assert torch.equal(vt.features(70, 75), full[70:75])
        assert vt.verified_blocks == {1}
        assert torch.equal(vt.features(60, 140), full[60:140])
        assert vt.verified_blocks == {0, 1, 2}
        assert torch.equal(vt.features(199), full[199:])
        assert vt.features(5, 5).shape == (0, N, C)
        picks = [199, 0, 63, 64, 64, 100, 3]
        assert torch.equal(vt.frames(picks), full[picks])
        uniform = np.linspace(0, 199, 16).round().astype(int)
        assert torch.equal(vt.frames(uniform), full[uniform])
        assert vt.frames([]).shape == (0, N, C)
        for bad in [(-1, 3), (5, 201), (10, 5)]:
            with pytest.raises(InputError, match="out of range"):
                vt.features(*bad)
        with pytest.raises(InputError, match="frame 200 is out of range"):
            vt.frames([0, 200])
        vt.verify()


def test_ten_thousand_frames_open_fast_and_a_range_touches_one_block(tmp_path):
    t = 10_800
    rng = np.random.default_rng(7)
    x = rng.standard_normal((t, 4, 8)).astype(np.float32)
    path = one_shot(tmp_path / "movie.vidtok", x, np.arange(t) / 1.0, chunk_frames=1024)
    # Damage block 0: a lazy read of frames 5000-5010 must not notice, a full verify must.
    entries, data_start = _layout(path)
    _flip_byte(path, data_start + entries["features"]["data_offsets"][0] + 3)
    began = time.perf_counter()
    with open_vidtok(path) as vt:
        opened = time.perf_counter() - began
        got = vt.features(5000, 5010)
        read = time.perf_counter() - began
        assert vt.num_frames == t and len(vt.timestamps) == t
        assert vt.verified_blocks == {5000 // 64}
        assert np.array_equal(got.numpy(), x[5000:5010].astype(np.float16).astype(np.float32))
        with pytest.raises(VidtokError, match="frames 0-63 fail their checksum"):
            vt.verify()
    assert opened < 0.5 and read < 0.5, (opened, read)


# ---------------------------------------------------------------------------------------------------------
# Resumable, atomic writing


def _interrupted_run(path: Path, x: np.ndarray, ts: np.ndarray, **kw) -> None:
    """2.5 chunks appended in odd-sized batches, then the writer vanishes (no finalize, no abort)."""
    w = writer(path, **kw)
    for i in range(0, 40, 7):
        w.append(x[i:min(i + 7, 40)], ts[i:min(i + 7, 40)])
    assert w.frames_done == 32 and w.next_frame == w.frames_total == 40
    del w
    # A crash in the middle of writing chunk 2 leaves a half-written temp file behind.
    partial = partial_dir_for(path)
    half = (partial / "chunk-000001.safetensors").read_bytes()[:500]
    (partial / "chunk-000002.safetensors.tmp-4242-deadbeef").write_bytes(half)


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_resume_after_a_crash_is_byte_identical_to_an_uninterrupted_run(tmp_path, fixed_clock, storage):
    x, ts = frames(45, seed=5)
    (tmp_path / "a").mkdir()
    clean = one_shot(tmp_path / "a" / "clip.vidtok", x, ts, storage=storage, subtitles=[(0, 1, "s")])
    target = tmp_path / "b" / "clip.vidtok"
    target.parent.mkdir()
    _interrupted_run(target, x, ts, storage=storage)
    assert not target.exists()

    resumed = writer(target, storage=storage)
    assert resumed.frames_done == 32 and resumed.next_frame == 32
    assert sorted(p.name for p in partial_dir_for(target).iterdir()) == [
        "chunk-000000.safetensors", "chunk-000001.safetensors", "manifest.json"]
    resumed.append(x[24:40], ts[24:40], first_frame=24)  # a restarted batch: stored frames are skipped
    resumed.append(x[40:], ts[40:])
    resumed.finalize(subtitles=[(0, 1, "s")])

    assert target.read_bytes() == clean.read_bytes()
    assert not partial_dir_for(target).exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.vidtok"]


@pytest.mark.slow
def test_resume_after_kill_dash_nine(tmp_path, fixed_clock):
    """A real SIGKILL in the middle of a job (POSIX only): complete chunks survive, the rest is redone."""
    if not hasattr(os, "kill") or sys.platform == "win32":
        pytest.skip("needs SIGKILL")
    x, ts = frames(45, seed=9)
    np.save(tmp_path / "x.npy", x)
    target = tmp_path / "clip.vidtok"
    child = f"""
import os, signal, numpy as np
from llamavid.features.vidtok import VidtokWriter
x = np.load({str(tmp_path / 'x.npy')!r})
w = VidtokWriter({str(target)!r}, encoder={ENCODER!r}, fps=2.0, source={SOURCE!r}, chunk_frames=16)
w.append(x[:40], np.arange(40) * 0.5 + 0.25)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    w = writer(target)
    assert w.frames_done == 32
    w.append(x[32:], ts[32:])
    w.finalize()
    clean = one_shot(tmp_path / "clean.vidtok", x, ts)
    assert target.read_bytes() == clean.read_bytes()


@pytest.mark.parametrize("change", [
    {"encoder": {"fingerprint": "other-encoder"}}, {"fps": 1.0}, {"storage": "int8"}, {"chunk_frames": 8},
    {"source": dict(SOURCE, content_hash="s1:different")}, {"resume": False},
])
def test_partial_state_of_another_job_is_discarded(tmp_path, change):
    x, ts = frames(40)
    target = tmp_path / "clip.vidtok"
    _interrupted_run(target, x, ts)
    w = writer(target, **change)
    assert w.frames_done == 0 and not partial_dir_for(target).exists()
    w.append(x, ts)
    w.finalize()
    with open_vidtok(target) as vt:
        assert vt.num_frames == 40


def test_same_job_with_other_feature_shape_is_discarded_and_reported(tmp_path):
    x, ts = frames(40)
    target = tmp_path / "clip.vidtok"
    _interrupted_run(target, x, ts)
    assert writer(target, feature_shape=(N, C + 1)).frames_done == 0
    _interrupted_run(target, x, ts)
    w = writer(target)
    assert w.frames_done == 32
    with pytest.raises(VidtokError, match="encode again from frame 0") as err:
        w.append(np.zeros((3, N, C + 1), np.float32), [1.0, 2.0, 3.0])
    assert_one_line_naming(err, target)
    assert not partial_dir_for(target).exists()


def test_existing_file_is_untouched_until_finalize_and_abort_cleans_up(tmp_path):
    x, ts = frames(40)
    target = one_shot(tmp_path / "clip.vidtok", x[:20], ts[:20])
    before = target.read_bytes()
    w = writer(target)
    w.append(x, ts)
    assert target.read_bytes() == before and partial_dir_for(target).is_dir()
    w.abort()
    assert target.read_bytes() == before and not partial_dir_for(target).exists()
    with pytest.raises(RuntimeError):
        w.append(x, ts)


def test_zero_frames_are_refused(tmp_path):
    target = tmp_path / "clip.vidtok"
    with pytest.raises(VidtokError, match="no frames") as err:
        writer(target).finalize()
    assert_one_line_naming(err, target)
    with pytest.raises(VidtokError, match="no frames"):
        one_shot(target, np.zeros((0, N, C), np.float32), [])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_is_refused_before_any_work(tmp_path):
    missing = tmp_path / "nope" / "clip.vidtok"
    with pytest.raises(InputError, match="does not exist") as err:
        writer(missing)
    assert str(missing.parent) in str(err.value)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError) as err:
        writer(afile / "clip.vidtok")
    assert str(afile) in str(err.value)
    with pytest.raises(InputError, match="is a directory"):
        writer(tmp_path)
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="cannot write") as err:
            writer(locked / "clip.vidtok")
        assert str(locked) in str(err.value)


def test_bad_inputs_are_refused_with_one_line_errors(tmp_path):
    target = tmp_path / "clip.vidtok"
    x, ts = frames(4)
    with pytest.raises(InputError, match="fingerprint"):
        writer(target, encoder={"name": "x"})
    with pytest.raises(InputError, match="content_hash"):
        writer(target, source={"name": "a.mp4"})
    with pytest.raises(InputError, match="storage"):
        writer(target, storage="int4")
    w = writer(target)
    with pytest.raises(InputError, match="4 frames but 3 timestamps"):
        w.append(x, ts[:3])
    bad = x.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        w.append(bad, ts)
    with pytest.raises(InputError, match="float16 range"):
        w.append(x * 1e6, ts)
    with pytest.raises(InputError, match="floating point"):
        w.append(x.astype(np.int32), ts)
    w.append(x, ts)
    with pytest.raises(InputError, match="per frame"):
        w.append(np.zeros((1, N + 1, C), np.float32), [9.0])
    with pytest.raises(InputError, match="frame 4 is next"):
        w.append(x, ts, first_frame=9)
    w.abort()


# ---------------------------------------------------------------------------------------------------------
# Damage and foreign files


def _layout(path: Path) -> tuple[dict, int]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), 8 + length


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def good_file(tmp_path) -> Path:
    x, ts = frames(150)
    return one_shot(tmp_path / "clip.vidtok", x, ts, storage="int8")


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b[:100], "truncated"),
    (lambda b: b[:5], "truncated"),
    (lambda b: b"", "empty"),
    (lambda b: b + b"\0" * 8, "unexpected bytes"),
    (lambda b: b[:8] + b"#garbage!" * 8 + b[80:], "garbage"),
    (lambda b: b"ID3\x04\x00\x00ftypmp42 this is really an mp4 file" * 20, "not a .vidtok"),
])
def test_damaged_or_foreign_files_are_refused(good_file, damage, expected):
    good_file.write_bytes(damage(good_file.read_bytes()))
    with pytest.raises(VidtokError, match=expected) as err:
        open_vidtok(good_file)
    assert_one_line_naming(err, good_file)


def test_other_safetensors_and_newer_versions_are_refused(tmp_path, good_file):
    other = tmp_path / "model.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, other)
    with pytest.raises(VidtokError, match="not a .vidtok file") as err:
        open_vidtok(other)
    assert_one_line_naming(err, other)
    tensors = load_file(good_file)
    with safe_open(good_file, framework="numpy") as f:
        metadata = f.metadata()
    def sealed(**changes) -> dict:
        """The metadata with changes, its checksum recomputed (as the writer of such a file would)."""
        md = dict(metadata, **changes)
        md["llamavid_checksum"] = vidtok.metadata_checksum(md)
        return md

    for version, expected in [("2.0", "newer than this llamavid"), ("banana", "unreadable .vidtok format version")]:
        save_file(tensors, good_file, metadata=sealed(format_version=version))
        with pytest.raises(VidtokError, match=expected) as err:
            open_vidtok(good_file)
        assert_one_line_naming(err, good_file)
    save_file(tensors, good_file, metadata=sealed(format_version="1.7"))  # newer minor: readable
    with open_vidtok(good_file) as vt:
        assert vt.format_version == "1.7"
    save_file(tensors, good_file, metadata=dict(metadata, format_version="1.7"))  # edited, not resealed
    with pytest.raises(VidtokError, match="metadata fails its checksum") as err:
        open_vidtok(good_file)
    assert_one_line_naming(err, good_file)
    save_file(tensors, good_file, metadata=sealed(llamavid="{not json"))
    with pytest.raises(VidtokError, match="not valid JSON"):
        open_vidtok(good_file)
    unsealed = {k: v for k, v in metadata.items() if k != "llamavid_checksum"}
    save_file(tensors, good_file, metadata=unsealed)  # 1.1 requires the checksum...
    with pytest.raises(VidtokError, match="lacks its checksum"):
        open_vidtok(good_file)
    save_file(tensors, good_file, metadata=dict(unsealed, format_version="1.0"))  # ...files of 1.0 had none
    with open_vidtok(good_file) as vt:
        assert vt.format_version == "1.0" and vt.num_frames == 150
        vt.verify()


@pytest.mark.parametrize("tensor, frame, expected", [
    ("features", 70, "frames 64-127 fail their checksum"),
    ("features", 149, "frames 128-149 fail their checksum"),
    ("scales", 3, "frames 0-63 fail their checksum"),
])
def test_a_flipped_data_byte_is_caught_by_its_block(good_file, tensor, frame, expected):
    entries, data_start = _layout(good_file)
    row_bytes = {"features": N * C, "scales": N * 4}[tensor]
    _flip_byte(good_file, data_start + entries[tensor]["data_offsets"][0] + frame * row_bytes + 2)
    with open_vidtok(good_file) as vt:  # opening checks no blocks
        other = 140 if frame < 128 else 0
        vt.features(other, other + 5)
        with pytest.raises(VidtokError, match=expected) as err:
            vt.features(frame, frame + 1)
        assert_one_line_naming(err, good_file)
        assert "damaged or was modified" in str(err.value)
        with pytest.raises(VidtokError, match=expected):
            vt.frames([other, frame])
        with pytest.raises(VidtokError, match=expected):
            vt.verify()


def test_a_flipped_timestamp_byte_is_caught_at_open(good_file):
    entries, data_start = _layout(good_file)
    _flip_byte(good_file, data_start + entries["timestamps"]["data_offsets"][0] + 17)
    with pytest.raises(VidtokError, match="timestamps fail their checksum") as err:
        open_vidtok(good_file)
    assert_one_line_naming(err, good_file)


def test_a_partial_directory_is_never_a_vidtok(tmp_path):
    x, ts = frames(40)
    target = tmp_path / "clip.vidtok"
    _interrupted_run(target, x, ts)
    partial = partial_dir_for(target)
    with pytest.raises(InputError, match="unfinished encoding") as err:
        open_vidtok(target)
    assert_one_line_naming(err, target)
    with pytest.raises(InputError, match="is a directory"):
        open_vidtok(partial)
    chunk = partial / "chunk-000000.safetensors"
    with pytest.raises(VidtokError, match="chunk of an unfinished encoding") as err:
        open_vidtok(chunk)
    assert_one_line_naming(err, chunk)
    with pytest.raises(InputError, match="not found"):
        open_vidtok(tmp_path / "other.vidtok")


def test_encoder_mismatch_is_refused(good_file):
    with open_vidtok(good_file) as vt:
        vt.check_encoder("eva-test-1")
        with pytest.raises(VidtokError) as err:
            vt.check_encoder("eva-other")
    assert str(err.value) == (f"{good_file}: made with vision encoder eva-test-1, but the model uses eva-other; "
                              f"re-encode the video with this model")
    assert isinstance(err.value, LlamaVidError)


# ---------------------------------------------------------------------------------------------------------
# Source content hash


def test_content_hash_of_small_and_large_files(tmp_path):
    small = tmp_path / "small.mp4"
    small.write_bytes(b"abc" * 1000)
    want = hashlib.sha256((3000).to_bytes(8, "little") + small.read_bytes()).hexdigest()
    assert content_hash(small) == "s1:" + want

    size = 20 * 1024 * 1024 + 12345
    big = tmp_path / "big.mp4"
    data = bytearray(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    big.write_bytes(data)
    spans = content_hash_spans(size)
    assert len(spans) == 18 and spans[0] == (0, 4 << 20) and spans[-1] == (size - (4 << 20), 4 << 20)
    assert spans[1][0] == 4 << 20 and spans[16][0] + spans[16][1] == size - (4 << 20)
    manual = hashlib.sha256(size.to_bytes(8, "little"))
    for offset, length in spans:
        manual.update(data[offset:offset + length])
    before = content_hash(big)
    assert before == "s1:" + manual.hexdigest()
    sampled = spans[5][0] + 100
    data[sampled] ^= 1
    big.write_bytes(data)
    assert content_hash(big) != before
    with pytest.raises(InputError, match="cannot read"):
        content_hash(tmp_path / "missing.mp4")
