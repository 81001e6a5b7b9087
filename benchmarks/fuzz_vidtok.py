"""Fuzzing the .vidtok reader: mutated, truncated, edited and foreign files, read through the real file path.

    .venv/bin/python benchmarks/fuzz_vidtok.py                 # 12,000 cases, fixed seed (what the suite runs)
    .venv/bin/python benchmarks/fuzz_vidtok.py --long          # 200,000 cases, a random seed (printed)
    .venv/bin/python benchmarks/fuzz_vidtok.py --cases 50000 --seed 7 --json

Every case is written to a file and read the way llamavid reads: ``open_vidtok`` (header, metadata,
timestamps), every metadata property, ``features()`` over all frames, a scattered ``frames()`` pick and
``verify()``. The property held: the reader either

* refuses with one of our own errors (a ``LlamaVidError``) whose message is one line, short, and names the
  file, or
* accepts, and then returns exactly what was written: features and timestamps bit for bit, and every
  metadata value equal to the original (or, for a deliberately edited file whose metadata checksum was
  recomputed, equal to what the file says and valid by the spec).

Anything else (another exception type, a multi-line message, different data) is a failure. Files are
built in memory from a few small valid seeds (float16 and int8, 1 to 130 frames) and written one by one.

Mutation classes (``CLASSES``): truncations at many offsets; appended bytes; bit flips and byte
overwrites by region (length prefix, header JSON, the metadata string, padding, timestamps, scales,
features); byte runs, insertions and deletions; header edits (dtypes, shapes, data offsets, missing /
extra / renamed tensors, header length field, huge lengths); metadata edits (format name and version,
non-JSON and wrong JSON types, every field of the llamavid object given wrong types and ranges; with the
metadata checksum left stale, recomputed, or removed as in a 1.0 file); duplicate keys; valid rewrites
(whitespace padding, key order, another float spelling) that must read back identically; foreign files
(other safetensors, .vidtok chunk files, pickles, torch.save archives, numpy files, empty, zeros, random
and text files).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import pickle
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llamavid.core.errors import LlamaVidError  # noqa: E402
from llamavid.features import vidtok  # noqa: E402
from llamavid.features.vidtok import open_vidtok, write_vidtok  # noqa: E402

MAX_MESSAGE = 400  # characters: an error message is one short line


# ---------------------------------------------------------------------------------------------------------
# Seeds: small valid files and everything the reader returns for them


@dataclass
class Seed:
    name: str
    data: bytes
    header: dict  # the parsed safetensors header (with __metadata__)
    data_start: int
    regions: dict[str, tuple[int, int]]  # absolute byte ranges: prefix, header, metadata, padding, tensors
    expected: dict  # what the reader returns for the unmodified file


def read_everything(path: Path) -> dict:
    """Everything the reader offers, compared bit for bit between a case and its seed."""
    with open_vidtok(path) as vt:
        n = vt.num_frames
        picks = sorted({0, n - 1, n // 2, min(n - 1, 64), max(0, n - 2)})
        got = {
            "num_frames": n, "len": len(vt), "fps": vt.fps, "storage": vt.storage, "feature_shape": vt.feature_shape,
            "format_version": vt.format_version, "encoder": vt.encoder, "source": vt.source,
            "subtitles": vt.subtitles, "warnings": vt.warnings, "meta": vt.meta,
            "timestamps": np.array(vt.timestamps),
        }
        import torch

        got["features"] = vt.features(dtype=torch.float32).numpy()
        got["picked"] = vt.frames(picks).numpy()
        got["picks"] = picks
        vt.verify()
    return got


def _layout(data: bytes) -> tuple[dict, int, dict[str, tuple[int, int]]]:
    (n,) = struct.unpack("<Q", data[:8])
    text = data[8:8 + n].decode("utf-8")
    header = json.loads(text)
    stripped = len(text.rstrip(" "))
    regions = {"prefix": (0, 8), "header": (8, 8 + stripped), "padding": (8 + stripped, 8 + n)}
    md = header["__metadata__"]["llamavid"]
    start = data.find(b'"llamavid":"', 8) + len(b'"llamavid":"')
    regions["metadata"] = (start, start + len(json.dumps(md)) - 2)
    for name, entry in header.items():
        if name != "__metadata__":
            b, e = entry["data_offsets"]
            regions[name] = (8 + n + b, 8 + n + e)
    return header, 8 + n, regions


def build_seeds(folder: Path) -> list[Seed]:
    """Five small valid files: both storages, 1 to 130 frames (1 to 3 checksum blocks), odd metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    specs = [
        ("f16-1frame", 1, (3, 4), "float16", [], []),
        ("f16-70", 70, (2, 3), "float16", [(0.0, 1.5, "Hello.")], ["a gap at 3.0 s"]),
        ("i8-70", 70, (3, 2), "int8", [(0.5, 2.0, "Ünïcode \"quoted\"\nline")], []),
        ("i8-130", 130, (2, 2), "int8", [], ["w1", "w2"]),
        ("f16-5-extra", 5, (1, 8), "float16", [(1.0, 2.0, "x" * 50)], []),
    ]
    seeds = []
    for name, t, shape, storage, subs, warns in specs:
        x = rng.standard_normal((t, *shape)).astype(np.float32) * rng.uniform(0.01, 30, (t, shape[0], 1))
        ts = np.arange(t) * 0.5 + 0.25
        path = write_vidtok(folder / f"{name}.vidtok", x, ts, encoder={"fingerprint": "eva-fuzz", "width": shape[1]},
                            fps=2.0, source={"name": "clip.mp4", "size": 1234, "content_hash": "s1:abc"},
                            storage=storage, chunk_frames=16, subtitles=subs, warnings=warns,
                            extra_meta={"sampler": "uniform", "nested": {"k": [1, 2.5, None, True]}})
        data = path.read_bytes()
        header, data_start, regions = _layout(data)
        seeds.append(Seed(name, data, header, data_start, regions, read_everything(path)))
    return seeds


# ---------------------------------------------------------------------------------------------------------
# Building files from (possibly edited) headers


def assemble(header: dict | str | bytes, body: bytes, *, length: int | None = None, pad: bool = True) -> bytes:
    """A safetensors-shaped file: 8-byte length, header (dict -> compact JSON), padding, ``body``."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    raw = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def inner_meta(seed: Seed) -> dict:
    return json.loads(seed.header["__metadata__"]["llamavid"])


def with_inner(seed: Seed, inner: Any, *, seal: str = "stale", raw: str | None = None,
               outer: dict | None = None) -> tuple[bytes, dict | None]:
    """The seed with another llamavid metadata object.

    ``seal``: "stale" keeps the old metadata checksum, "reseal" recomputes it (a self-consistent file
    from a buggy writer), "drop" removes it and claims format 1.0 (a file from an older writer).
    Returns (file bytes, the metadata a reader must return if it accepts the file; None: the original).
    """
    header = copy.deepcopy(seed.header)
    md = header["__metadata__"]
    md["llamavid"] = raw if raw is not None else json.dumps(inner, separators=(",", ":"), allow_nan=True)
    if outer:
        md.update(outer)
    expect = None
    if seal == "reseal" and hasattr(vidtok, "metadata_checksum"):
        md.pop("llamavid_checksum", None)
        md["llamavid_checksum"] = vidtok.metadata_checksum(md)
        expect = {"format": md.get("format"), "format_version": md.get("format_version"), "inner": inner}
    elif seal == "drop":
        md.pop("llamavid_checksum", None)
        md["format_version"] = "1.0"
        expect = {"format": md.get("format"), "format_version": "1.0", "inner": inner}
    return assemble(header, seed.data[seed.data_start:]), expect


# ---------------------------------------------------------------------------------------------------------
# Mutations. Each returns (class, detail, bytes, expectation); expectation None: the seed's own data.

Mutation = tuple[str, str, bytes, dict | None]


def m_truncate(seed: Seed, rng: random.Random) -> Mutation:
    if rng.random() < 0.5:
        cut = rng.randrange(0, min(len(seed.data), seed.data_start + 16))  # inside the prefix and header
    else:
        cut = rng.randrange(0, len(seed.data))
    return "truncate", f"at {cut}", seed.data[:cut], None


def m_append(seed: Seed, rng: random.Random) -> Mutation:
    tail = rng.choice([b"\0", b" ", b"\0" * 8, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),
                       seed.data[-16:]])
    return "append", f"{len(tail)} bytes", seed.data + tail, None


def _pick_region(seed: Seed, rng: random.Random) -> tuple[str, int, int]:
    name = rng.choice([r for r, (a, b) in seed.regions.items() if b > a])
    a, b = seed.regions[name]
    return name, a, b


def m_flip_bit(seed: Seed, rng: random.Random) -> Mutation:
    region, a, b = _pick_region(seed, rng)
    pos, bit = rng.randrange(a, b), rng.randrange(8)
    data = bytearray(seed.data)
    data[pos] ^= 1 << bit
    return f"bitflip:{region}", f"byte {pos} bit {bit}", bytes(data), None


def m_set_byte(seed: Seed, rng: random.Random) -> Mutation:
    region, a, b = _pick_region(seed, rng)
    pos = rng.randrange(a, b)
    data = bytearray(seed.data)
    choices = [v for v in (0, 0xFF, 0x20, 0x22, 0x5C, 0x7B, 0x7D, 0x30, 0x39, 0x80, rng.randrange(256))
               if v != data[pos]]
    data[pos] = rng.choice(choices)
    return f"byte:{region}", f"byte {pos} = {data[pos]}", bytes(data), None


def m_run(seed: Seed, rng: random.Random) -> Mutation:
    pos = rng.randrange(len(seed.data))
    n = rng.randrange(1, 64)
    fill = rng.choice(["zero", "ff", "random", "space"])
    blob = {"zero": b"\0" * n, "ff": b"\xff" * n, "space": b" " * n,
            "random": bytes(rng.randrange(256) for _ in range(n))}[fill]
    data = seed.data[:pos] + blob + seed.data[pos + n:]
    return "run", f"{fill} x{n} at {pos}", data[:len(seed.data)] if rng.random() < 0.5 else data, None


def m_shift(seed: Seed, rng: random.Random) -> Mutation:
    pos = rng.randrange(len(seed.data))
    if rng.random() < 0.5:
        n = rng.randrange(1, 9)
        return ("insert", f"{n} at {pos}",
                seed.data[:pos] + bytes(rng.randrange(256) for _ in range(n)) + seed.data[pos:], None)
    n = rng.randrange(1, 9)
    return "delete", f"{n} at {pos}", seed.data[:pos] + seed.data[pos + n:], None


def m_length_field(seed: Seed, rng: random.Random) -> Mutation:
    n = seed.data_start - 8
    value = rng.choice([0, 1, 7, n - 1, n + 1, n - 8, n + 8, n + 7, len(seed.data) - 8, len(seed.data),
                        2**32, 2**63 - 1, 2**64 - 1, 100_000_001, rng.randrange(2**64)])
    return "header:length", str(value), struct.pack("<Q", value) + seed.data[8:], None


def _edit_entries(seed: Seed, rng: random.Random) -> tuple[str, dict]:
    header = copy.deepcopy(seed.header)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    kind = rng.choice(["dtype", "shape", "offsets", "remove", "extra", "rename", "entry-type", "extra-field",
                       "swap-offsets"])
    if kind == "dtype":
        entry["dtype"] = rng.choice(["F16", "F32", "F64", "I8", "U8", "BF16", "I64", "BOOL", "f16", "", 5, None])
    elif kind == "shape":
        s = list(entry["shape"])
        choice = rng.randrange(9)
        if choice == 0:
            s[rng.randrange(len(s))] += rng.choice([-1, 1, 64, 2**40])
        elif choice == 1:
            s = s[::-1]
        elif choice == 2:
            s = s[:-1]
        elif choice == 3:
            s = s + [1]
        elif choice == 4:
            s[0] = -s[0]
        elif choice == 5:
            s[0] = float(s[0])
        elif choice == 6:
            s = str(s)
        elif choice == 7:
            s = [0] * len(s)
        else:
            s = [2**64 + 5] + s[1:]
        entry["shape"] = s
    elif kind == "offsets":
        b, e = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b, e + 1], [b + 1, e], [b - 1, e - 1], [e, b], [b], [b, e, e],
                                            [float(b), float(e)], [str(b), str(e)], [b, 2**64 + e], [-8, e],
                                            [b, e + 2**40], None])
    elif kind == "remove":
        del header[name]
    elif kind == "extra":
        header["junk"] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    elif kind == "rename":
        header[rng.choice(["Features", "feature", "scales", "timestamps", "x"])] = header.pop(name)
    elif kind == "entry-type":
        header[name] = rng.choice([5, "x", None, [1, 2], {}])
    elif kind == "extra-field":
        entry["extra"] = 1
    else:
        other = rng.choice(names)
        entry["data_offsets"], header[other]["data_offsets"] = header[other]["data_offsets"], entry["data_offsets"]
    return f"{kind} of {name}", header


def m_entries(seed: Seed, rng: random.Random) -> Mutation:
    detail, header = _edit_entries(seed, rng)
    return "header:tensors", detail, assemble(header, seed.data[seed.data_start:]), None


def m_not_json(seed: Seed, rng: random.Random) -> Mutation:
    text = json.dumps(seed.header, separators=(",", ":"))
    choice = rng.randrange(10)
    if choice == 0:
        bad, what = text[:rng.randrange(1, len(text))], "cut JSON"
    elif choice == 1:
        bad, what = "[" * 200_000 + "]" * 200_000, "deep nesting"
    elif choice == 2:
        bad, what = '{"a":' * 50_000 + "1" + "}" * 50_000, "deep objects"
    elif choice == 3:
        bad, what = rng.choice(["[]", "null", "1", '"x"', "true", "{}", '{"__metadata__":5}',
                                '{"__metadata__":{"format":"llamavid.vidtok"}}']), "JSON of another type"
    elif choice == 4:
        bad, what = text.replace('"', "'", 1), "single quote"
    elif choice == 5:
        bad, what = text + "}", "trailing brace"
    elif choice == 6:
        bad, what = "\ufeff" + text, "BOM"
    elif choice == 7:
        bad, what = text.replace(":", ": NaN, \"z\":", 1), "NaN literal"
    elif choice == 8:
        bad, what = '{"n":' + "9" * 5000 + "}", "huge number"
    else:
        bad, what = text[:20] + "\udc80" + text[20:], "lone surrogate"
    return "header:not-json", what, assemble(bad, seed.data[seed.data_start:]), None


def m_duplicate(seed: Seed, rng: random.Random) -> Mutation:
    text = json.dumps(seed.header, separators=(",", ":"))
    names = [k for k in seed.header if k != "__metadata__"]
    choice = rng.randrange(4)
    if choice == 0:  # a tensor listed twice, the second time pointing elsewhere
        name = rng.choice(names)
        entry = dict(seed.header[name])
        other = rng.choice(names)
        entry["data_offsets"] = seed.header[other]["data_offsets"]
        bad = text[:-1] + f',"{name}":' + json.dumps(entry, separators=(",", ":")) + "}"
        what = f"tensor {name} twice"
    elif choice == 1:  # __metadata__ twice
        md = dict(seed.header["__metadata__"], format="llamavid.vidtok", format_version="1.0")
        bad = text[:-1] + ',"__metadata__":' + json.dumps(md) + "}"
        what = "__metadata__ twice"
    elif choice == 2:  # a key twice inside __metadata__
        bad = text.replace('"format":"llamavid.vidtok"', '"format":"other","format":"llamavid.vidtok"', 1)
        what = "format twice"
    else:  # a key twice inside the llamavid object
        inner = seed.header["__metadata__"]["llamavid"]
        key = rng.choice(["fps", "num_frames", "storage", "subtitles"])
        value = {"fps": "3.0", "num_frames": "1", "storage": '"int8"', "subtitles": "[]"}[key]
        dup = inner[:-1] + f',"{key}":{value}' + "}"
        header = copy.deepcopy(seed.header)
        header["__metadata__"]["llamavid"] = dup
        bad, what = json.dumps(header, separators=(",", ":")), f"{key} twice in the llamavid object"
    return "header:duplicate-keys", what, assemble(bad, seed.data[seed.data_start:]), None


_FORMAT_EDITS: list[tuple[str, Any]] = [
    ("format", "llamavid.vidtok.chunk"), ("format", "llamavid.vidtoK"), ("format", ""), ("format", None),
    ("format", 5), ("format_version", "2.0"), ("format_version", "0.9"), ("format_version", "1"),
    ("format_version", "1.0.0"), ("format_version", "banana"), ("format_version", 1.0), ("format_version", None),
    ("format_version", "１.０"), ("format_version", "1.99"), ("format_version", " 1.0"), ("llamavid", None),
    ("llamavid", 5), ("llamavid", ["x"]), ("llamavid", {"a": 1}), ("llamavid", "not json"), ("llamavid", "[]"),
    ("llamavid", "[" * 100_000), ("llamavid", "{}"), ("llamavid_checksum", "0" * 32), ("llamavid_checksum", 5),
    ("llamavid_checksum", None), ("__metadata__", "remove"), ("__metadata__", "string"),
]


def m_format(seed: Seed, rng: random.Random) -> Mutation:
    key, value = rng.choice(_FORMAT_EDITS)
    header = copy.deepcopy(seed.header)
    md = header["__metadata__"]
    if key == "__metadata__":
        if value == "remove":
            del header["__metadata__"]
        else:
            header["__metadata__"] = "llamavid.vidtok"
    elif value is None and rng.random() < 0.5:
        md.pop(key, None)
        value = "(removed)"
    else:
        md[key] = value
    return "metadata:format", f"{key}={str(value)[:20]}", assemble(header, seed.data[seed.data_start:]), None


def _bad_values(key: str, value: Any) -> list[Any]:
    """Wrong types and ranges for one field of the llamavid object (``value`` is the right one)."""
    generic = [None, True, "x", -1, 0, 1.5, [], {}, 10**400, float("nan"), float("inf"), "1e400"]
    if key == "num_frames":
        specific = [value + 1, value - 1, -value, float(value), str(value), 2**64]
    elif key == "feature_shape":
        specific = [value[::-1], value + [1], value[:1], [0, value[1]], [-1, value[1]], [float(value[0]), value[1]],
                    [str(value[0]), value[1]], [2**40, 2**40]]
    elif key == "storage":
        specific = ["int8" if value == "float16" else "float16", "int4", "", "FLOAT16"]
    elif key == "fps":
        specific = [0, -2.0, 1e-320, 1e308, 3.0, "2.0", 10**400]
    elif key == "encoder":
        specific = ["eva", {"fingerprint": 5}, {"name": "x"}, {"fingerprint": ""}, {"fingerprint": "other"}]
    elif key == "source":
        specific = ["clip.mp4", {"name": "x"}, {"content_hash": 5}, {"content_hash": "s1:other"}]
    elif key == "subtitles":
        specific = ["abc", {"a": 1}, [[1, 2]], [[1, 2, 3, 4]], [["a", 2, "x"]], [[float("nan"), 2, "x"]],
                    [[1, 2, 3]], [[1, 2, None]], [5], [[10**400, 2, "x"]], [[0, 1, "other text"]], ["abc"]]
    elif key == "warnings":
        specific = ["one string", {"a": 1}, [1, 2], [None], 5, [["nested"]], ["another warning"]]
    elif key == "extra":
        specific = ["x", 5, {"other": 1}]
    elif key == "quantization":
        specific = ["x", 5, {"scheme": "other"}]
    elif key == "created_at":
        specific = [5, "yesterday"]
    else:
        specific = []
    return specific + generic


def m_meta_field(seed: Seed, rng: random.Random) -> Mutation:
    inner = inner_meta(seed)
    key = rng.choice(list(inner) + ["checksums.algorithm", "checksums.block_frames", "checksums.timestamps",
                                    "checksums.blocks", "checksums.blocks[0]", "unknown_key", "remove"])
    seal = rng.choice(["stale", "reseal", "reseal", "drop"])
    if key == "remove":
        victim = rng.choice(list(inner))
        del inner[victim]
        detail = f"remove {victim}"
    elif key == "unknown_key":
        inner["a_future_key"] = {"x": [1, 2]}  # readers must ignore keys they do not know
        detail = "unknown key"
    elif key.startswith("checksums."):
        sums = inner["checksums"]
        field = key.split(".", 1)[1]
        if field == "blocks[0]":
            sums["blocks"][0] = rng.choice(["0" * 32, sums["blocks"][0].upper(), sums["blocks"][0][:-1], 5, None])
        elif field == "blocks":
            sums["blocks"] = rng.choice([sums["blocks"][:-1], sums["blocks"] + sums["blocks"][:1], "x", None,
                                         sums["blocks"][::-1]])
        elif field == "block_frames":
            sums["block_frames"] = rng.choice([0, -64, 32, 128, 1, 64.0, "64", True, 2**64, None])
        elif field == "algorithm":
            sums["algorithm"] = rng.choice(["sha256", "", None, "BLAKE2B-128"])
        else:
            sums["timestamps"] = rng.choice(["0" * 32, None, 5, sums["timestamps"].upper()])
        detail = f"{key} edited"
    else:
        value = rng.choice(_bad_values(key, inner[key]))
        inner[key] = value
        detail = f"{key}={str(value)[:24]}"
    data, expect = with_inner(seed, inner, seal=seal)
    return f"metadata:fields:{seal}", detail, data, expect


def m_valid_rewrite(seed: Seed, rng: random.Random) -> Mutation:
    """Changes that keep the file valid: it must read back exactly as the seed."""
    choice = rng.randrange(5)
    body = seed.data[seed.data_start:]
    if choice == 0:  # other padding: more spaces, to any 8-byte boundary
        text = json.dumps(seed.header, separators=(",", ":"))
        raw = text.encode() + b" " * (-len(text) % 8 + 8 * rng.randrange(0, 4))
        return "valid:padding", f"{len(raw) - len(text)} spaces", assemble(raw, body, pad=False), None
    if choice == 1:  # another JSON whitespace style, no padding
        text = json.dumps(seed.header, indent=rng.choice([None, 1, 2]), separators=(", ", ": "))
        return "valid:whitespace", "spaced JSON", assemble(text, body, pad=False), None
    if choice == 2:  # keys in another order
        items = list(seed.header.items())
        rng.shuffle(items)
        return "valid:key-order", "shuffled", assemble(dict(items), body), None
    if choice == 3:  # padding bytes replaced by other JSON whitespace
        data = bytearray(seed.data)
        a, b = seed.regions["padding"]
        for i in range(a, b):
            data[i] = rng.choice(b" \t\n\r")
        return "valid:padding", "tabs/newlines", bytes(data), None
    # the tensors' data in another order, offsets updated (the spec locates tensors by offsets only)
    names = [k for k in seed.header if k != "__metadata__"]
    rng.shuffle(names)
    header = {"__metadata__": seed.header["__metadata__"]}
    parts, offset = [], 0
    for name in names:
        b, e = seed.header[name]["data_offsets"]
        header[name] = dict(seed.header[name], data_offsets=[offset, offset + e - b])
        parts.append(body[b:e])
        offset += e - b
    return "valid:tensor-order", "/".join(names), assemble(header, b"".join(parts)), None


def m_foreign(seed: Seed, rng: random.Random) -> Mutation:
    from safetensors.numpy import save as st_save

    choice = rng.randrange(12)
    if choice == 0:
        tensors = {"w": np.zeros((rng.randrange(1, 5), 3), np.float32), "b": np.ones(2, np.float16)}
        return "foreign:safetensors", "model weights", st_save(tensors), None
    if choice == 1:
        tensors = {"features": np.zeros((2, 3, 4), np.float16), "timestamps": np.zeros(2)}
        return "foreign:safetensors", "right tensors, no metadata", st_save(tensors), None
    if choice == 2:
        tensors = {"features": np.zeros((2, 3, 4), np.float16), "timestamps": np.zeros(2)}
        meta = {"format": "llamavid.vidtok.chunk", "chunk_index": "0", "frame_start": "0", "frames": "2"}
        return "foreign:chunk", "a partial chunk", st_save(tensors, metadata=meta), None
    if choice == 3:
        obj = rng.choice([{"features": [1, 2, 3]}, list(range(50)), "text", np.zeros(3)])
        return "foreign:pickle", f"protocol-{choice}", pickle.dumps(obj, protocol=rng.randrange(0, 6)), None
    if choice == 4:
        import torch

        buf = io.BytesIO()
        torch.save({"features": torch.zeros(2, 3)}, buf, _use_new_zipfile_serialization=rng.random() < 0.5)
        return "foreign:torch-save", "state dict", buf.getvalue(), None
    if choice == 5:
        buf = io.BytesIO()
        np.save(buf, np.zeros((2, 3), np.float16))
        return "foreign:numpy", ".npy", buf.getvalue(), None
    if choice == 6:
        return "foreign:empty", "0 bytes", b"", None
    if choice == 7:
        n = rng.choice([1, 7, 8, 9, 64, 4096])
        return "foreign:zeros", f"{n} zero bytes", b"\0" * n, None
    if choice == 8:
        n = rng.randrange(1, 3000)
        return "foreign:random", f"{n} random bytes", bytes(rng.randrange(256) for _ in range(n)), None
    if choice == 9:
        text = rng.choice(['{"features": [1, 2]}\n', "hello\n" * 50, "\x00\x00\x00\x20ftypisom" + "x" * 100,
                           "1\n00:00:01,000 --> 00:00:02,000\nsubtitle\n"])
        return "foreign:text", text[:12], text.encode(), None
    if choice == 10:  # a safetensors header claiming a .vidtok, nothing else right
        md = {"format": "llamavid.vidtok", "format_version": "1.0", "llamavid": "{}"}
        return ("foreign:safetensors", "vidtok metadata, other tensors",
                st_save({"x": np.zeros(3, np.float32)}, metadata=md), None)
    # two seeds glued: header of one, data of another
    other = rng.choice([b"", seed.data[seed.data_start:][::-1], seed.data])
    return "foreign:spliced", "seed + seed", seed.data[:seed.data_start] + other, None


def m_double(seed: Seed, rng: random.Random) -> Mutation:
    """Two byte-level mutations at once."""
    _, d1, data, _ = rng.choice([m_flip_bit, m_set_byte, m_run])(seed, rng)
    tmp = Seed(seed.name, data, seed.header, seed.data_start, seed.regions, seed.expected)
    _, d2, data, _ = rng.choice([m_flip_bit, m_set_byte, m_truncate])(tmp, rng)
    return "double", f"{d1}; {d2}", data, None


# (mutation, weight): weights sum to 100
CLASSES: list[tuple[Callable[[Seed, random.Random], Mutation], int]] = [
    (m_truncate, 10), (m_append, 3), (m_flip_bit, 22), (m_set_byte, 10), (m_run, 6), (m_shift, 5),
    (m_length_field, 4), (m_entries, 10), (m_not_json, 4), (m_duplicate, 4), (m_format, 5), (m_meta_field, 10),
    (m_valid_rewrite, 3), (m_foreign, 3), (m_double, 1),
]


def sweep_truncations(seeds: list[Seed]) -> Iterator[tuple[Seed, Mutation]]:
    """Every cut of the smallest seed, so each byte boundary of a header and a data section is tried."""
    small = min(seeds, key=lambda s: len(s.data))
    for cut in range(len(small.data)):
        yield small, ("truncate", f"at {cut} (sweep)", small.data[:cut], None)


def generate(seeds: list[Seed], cases: int, seed: int) -> Iterator[tuple[Seed, Mutation]]:
    rng = random.Random(seed)
    produced = 0
    for item in sweep_truncations(seeds):
        if produced >= cases:
            return
        produced += 1
        yield item
    makers = [m for m, _ in CLASSES]
    weights = [w for _, w in CLASSES]
    while produced < cases:
        base = rng.choice(seeds)
        maker = rng.choices(makers, weights)[0]
        produced += 1
        cls, detail, data, expect = maker(base, rng)
        if data == base.data:  # e.g. offsets swapped with themselves: counted apart, as what they are
            cls = "unchanged"
        yield base, (cls, detail, data, expect)


# ---------------------------------------------------------------------------------------------------------
# The oracle


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and (json.dumps(a, sort_keys=True, default=str)
                                   == json.dumps(b, sort_keys=True, default=str))


def _valid_by_spec(got: dict) -> str | None:
    """For an accepted file whose edited metadata was resealed: the values must still be valid."""
    import math

    if not (isinstance(got["fps"], float) and math.isfinite(got["fps"]) and got["fps"] > 0):
        return f"fps {got['fps']!r}"
    if not all(isinstance(s, float) and isinstance(e, float) and math.isfinite(s) and math.isfinite(e)
               and isinstance(t, str) for s, e, t in got["subtitles"]):
        return "subtitles"
    if not all(isinstance(w, str) for w in got["warnings"]):
        return "warnings"
    if not (isinstance(got["encoder"], dict) and isinstance(got["encoder"].get("fingerprint"), str)
            and got["encoder"]["fingerprint"]):
        return "encoder"
    if not (isinstance(got["source"], dict) and isinstance(got["source"].get("content_hash"), str)):
        return "source"
    return None


def check_case(path: Path, seed: Seed, mutation: Mutation) -> tuple[str, str]:
    """(outcome, detail): outcome is "refused:<ErrorType>", "accepted", or "FAIL:<why>"."""
    cls, detail, data, expect = mutation
    if path.exists():
        path.unlink()  # a new file each time: never overwrite one that a reader may still map
    path.write_bytes(data)
    try:
        got = read_everything(path)
    except LlamaVidError as e:
        message = str(e)
        if "\n" in message or len(message) > MAX_MESSAGE or str(path) not in message:
            return "FAIL:message", f"{type(e).__name__}: {message[:300]!r}"
        return f"refused:{type(e).__name__}", message
    except BaseException as e:  # noqa: BLE001 - exactly what the fuzz test hunts for
        if isinstance(e, KeyboardInterrupt):
            raise
        return "FAIL:raised", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    want = seed.expected
    for key in ("num_frames", "len", "storage", "feature_shape", "timestamps", "features", "picks", "picked"):
        if not _equal(got[key], want[key]):
            return "FAIL:different-data", f"{key} differs"
    if expect is None:
        for key in ("fps", "format_version", "encoder", "source", "subtitles", "warnings", "meta"):
            if not _equal(got[key], want[key]):
                return "FAIL:different-data", f"{key} differs"
    else:  # a resealed edit: the reader must return what the file says, and only valid values
        problem = _valid_by_spec(got)
        if problem:
            return "FAIL:invalid-accepted", problem
        inner = dict(got["meta"])
        if inner.pop("format") != expect["format"] or inner.pop("format_version") != expect["format_version"]:
            return "FAIL:different-data", "format differs"
        if not _equal(inner, expect["inner"]):
            return "FAIL:different-data", "metadata differs from the file's"
    return "accepted", ""


@dataclass
class Report:
    cases: int
    seconds: float
    by_class: dict[str, Counter]
    failures: list[tuple[str, str, str, str]]  # (class, mutation detail, outcome, detail)

    def table(self) -> str:
        outcomes = sorted({o for c in self.by_class.values() for o in c})
        width = max(len(c) for c in self.by_class) + 2
        head = "class".ljust(width) + "".join(f"{o:>22}" for o in outcomes) + f"{'total':>8}"
        lines = [head, "-" * len(head)]
        for cls in sorted(self.by_class):
            c = self.by_class[cls]
            lines.append(cls.ljust(width) + "".join(f"{c.get(o, 0):>22}" for o in outcomes) + f"{sum(c.values()):>8}")
        total = Counter()
        for c in self.by_class.values():
            total.update(c)
        lines.append("-" * len(head))
        lines.append("all".ljust(width) + "".join(f"{total.get(o, 0):>22}" for o in outcomes)
                     + f"{sum(total.values()):>8}")
        return "\n".join(lines)


def run(cases: int, seed: int, folder: Path, *, progress: Callable[[int], None] | None = None) -> Report:
    seeds = build_seeds(folder / "seeds")
    work = folder / "cases"
    work.mkdir(exist_ok=True)
    by_class: dict[str, Counter] = {}
    failures = []
    t0 = time.perf_counter()
    for i, (base, mutation) in enumerate(generate(seeds, cases, seed)):
        path = work / f"case-{i % 4}.vidtok"
        outcome, detail = check_case(path, base, mutation)
        by_class.setdefault(mutation[0], Counter())[outcome] += 1
        if outcome.startswith("FAIL"):
            failures.append((mutation[0], f"{base.name}: {mutation[1]}", outcome, detail))
        if progress and (i + 1) % 10_000 == 0:
            progress(i + 1)
    return Report(cases, time.perf_counter() - t0, by_class, failures)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=None, help="number of cases (default 12,000; 200,000 with --long)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default 0; random with --long)")
    ap.add_argument("--long", action="store_true", help="200,000 cases with a random seed")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args()
    cases = args.cases or (200_000 if args.long else 12_000)
    seed = args.seed if args.seed is not None else (random.SystemRandom().randrange(2**32) if args.long else 0)
    print(f"fuzzing the .vidtok reader: {cases} cases, seed {seed}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vidtok-fuzz-") as tmp:
        report = run(cases, seed, Path(tmp), progress=lambda n: print(f"  {n} cases", file=sys.stderr))
    if args.json:
        print(json.dumps({"cases": report.cases, "seed": seed, "seconds": round(report.seconds, 1),
                          "by_class": {k: dict(v) for k, v in sorted(report.by_class.items())},
                          "failures": report.failures[:50], "failed": len(report.failures)}, indent=1))
    else:
        print(report.table())
        print(f"\n{report.cases} cases in {report.seconds:.1f} s ({report.cases / report.seconds:.0f}/s), "
              f"seed {seed}: {len(report.failures)} failures")
        for cls, what, outcome, detail in report.failures[:30]:
            print(f"  {outcome} [{cls}] {what}: {detail}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
