"""Fuzzing the .vidtok reader: 20,000 damaged, edited and foreign files, each written and read back.

The mutations and the oracle live in ``benchmarks/fuzz_vidtok.py`` (which also has a ``--long`` run);
this test runs a fixed seed so that a failure reproduces. The property: the reader refuses with a
one-line ``LlamaVidError`` naming the file, or returns exactly what was written. Below it, a few of the
bugs the fuzzer found, as plain regression tests with their messages.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llamavid.core.errors import LlamaVidError, VidtokError
from llamavid.features import vidtok
from llamavid.features.vidtok import open_vidtok, write_vidtok

CASES = 20_000


def load_fuzzer():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_vidtok.py"
    spec = importlib.util.spec_from_file_location("fuzz_vidtok", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return load_fuzzer().run(CASES, 0, tmp_path_factory.mktemp("fuzz"))


@pytest.mark.slow
def test_every_fuzzed_file_is_refused_clearly_or_read_exactly(report):
    total = sum(sum(c.values()) for c in report.by_class.values())
    assert total == report.cases == CASES
    shown = "\n".join(f"{outcome} [{cls}] {what}: {detail}" for cls, what, outcome, detail in report.failures[:20])
    assert not report.failures, f"{len(report.failures)} of {total} cases failed:\n{shown}"


@pytest.mark.slow
def test_the_fuzzer_covers_every_class_of_damage(report):
    counts = {cls: sum(c.values()) for cls, c in report.by_class.items()}
    families = {}
    for cls, n in counts.items():
        families[cls.split(":")[0]] = families.get(cls.split(":")[0], 0) + n
    assert counts["truncate"] >= 2000  # the sweep over every cut of a small file, plus random cuts
    for region in ("prefix", "header", "metadata", "padding", "timestamps", "scales", "features"):
        assert counts.get(f"bitflip:{region}", 0) >= 100, region
        assert counts.get(f"byte:{region}", 0) >= 30, region
    for cls in ("header:tensors", "header:length", "header:not-json", "header:duplicate-keys", "metadata:format",
                "metadata:fields:stale", "metadata:fields:reseal", "metadata:fields:drop", "append", "insert",
                "delete", "run", "double"):
        assert counts.get(cls, 0) >= 100, cls
    for cls in ("foreign:safetensors", "foreign:chunk", "foreign:pickle", "foreign:torch-save", "foreign:numpy",
                "foreign:empty", "foreign:zeros", "foreign:random", "foreign:text", "valid:padding",
                "valid:whitespace", "valid:key-order", "valid:tensor-order"):
        assert counts.get(cls, 0) >= 20, cls


@pytest.mark.slow
def test_damage_is_refused_and_valid_rewrites_are_read(report):
    """Not just "no crash": damaged data is never accepted, and a valid file is never refused."""
    for cls, c in report.by_class.items():
        if cls.startswith(("bitflip:", "truncate", "append", "insert", "delete", "foreign:", "header:length",
                           "header:not-json", "header:duplicate-keys", "metadata:format", "metadata:fields:stale")):
            assert c.get("accepted", 0) == 0, (cls, dict(c))
        if cls.startswith("valid:") or cls == "unchanged":
            assert c == {"accepted": sum(c.values())}, (cls, dict(c))


# ---------------------------------------------------------------------------------------------------------
# Bugs the fuzzer found in the reader, one each


@pytest.fixture
def good(tmp_path) -> Path:
    x = np.random.default_rng(0).standard_normal((70, 3, 4)).astype(np.float32)
    return write_vidtok(tmp_path / "clip.vidtok", x, np.arange(70) * 0.5, encoder={"fingerprint": "eva-x"}, fps=2.0,
                        source={"content_hash": "s1:abc", "name": "clip.mp4"},
                        subtitles=[(0.0, 1.0, "the code is 1234")])


def split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def rewrite(path: Path, header: dict | str, body: bytes) -> None:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def refused(path: Path, match: str) -> str:
    with pytest.raises(VidtokError, match=match) as err:
        with open_vidtok(path) as vt:
            vt.verify()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and len(message) < 300, message
    return message


def test_a_flipped_bit_in_the_subtitles_is_caught(good):
    data = bytearray(good.read_bytes())
    at = data.index(b"the code is 1234") + len("the code is ")
    data[at] ^= 0x01  # "1234" -> "0234": valid JSON, valid metadata, a different answer
    good.write_bytes(bytes(data))
    refused(good, "metadata fails its checksum")


def test_deeply_nested_headers_are_refused_not_a_recursion_error(good):
    _, body = split(good)
    rewrite(good, "[" * 100_000 + "]" * 100_000, body)
    refused(good, "header is garbage")
    md_deep = {"__metadata__": {"format": "llamavid.vidtok", "format_version": "1.0", "llamavid": "[" * 100_000}}
    rewrite(good, md_deep, body)
    refused(good, "metadata is not valid JSON")


def test_metadata_of_the_wrong_types_is_refused(good):
    header, body = split(good)
    md = header["__metadata__"]
    inner = json.loads(md["llamavid"])
    for field, value in [("fps", 10**400), ("fps", 0), ("warnings", 5), ("subtitles", [[1, 2]]),
                         ("subtitles", [["a", 2, "x"]]), ("encoder", {"name": "x"})]:
        edited = dict(md, format_version="1.0", llamavid=json.dumps(dict(inner, **{field: value})))
        edited.pop("llamavid_checksum")  # as a 1.0 writer would have made it: only the structure protects it
        rewrite(good, dict(header, __metadata__=edited), body)
        refused(good, f"invalid '{field}'")
    rewrite(good, dict(header, __metadata__=dict(md, format_version=1.0)), body)
    refused(good, "not a string map")


def test_duplicate_keys_are_refused(good):
    header, body = split(good)
    text = json.dumps(header)
    rewrite(good, text[:-1] + ', "timestamps": ' + json.dumps(header["features"]) + "}", body)
    refused(good, "names 'timestamps' twice")


def test_pickles_and_torch_checkpoints_are_named_for_what_they_are(tmp_path):
    pkl = tmp_path / "a.vidtok"
    pkl.write_bytes(pickle.dumps({"features": [1, 2, 3]}, protocol=4))
    assert "never unpickles" in refused(pkl, "Python pickle")
    ckpt = tmp_path / "b.vidtok"
    buf = io.BytesIO()
    torch.save({"features": torch.zeros(2)}, buf)
    ckpt.write_bytes(buf.getvalue())
    refused(ckpt, "zip archive")


def test_error_messages_quote_file_contents_briefly(good):
    header, body = split(good)
    header["__metadata__"]["format"] = "x" * 5000 + "\n\u202e"
    rewrite(good, header, body)
    message = refused(good, "not a .vidtok file")
    assert message.isascii()


def test_a_1_0_file_still_reads(good):
    """Files written before the metadata checksum existed keep working."""
    header, body = split(good)
    header["__metadata__"].pop("llamavid_checksum")
    header["__metadata__"]["format_version"] = "1.0"
    rewrite(good, header, body)
    with open_vidtok(good) as vt:
        assert vt.format_version == "1.0" and vt.subtitles == [(0.0, 1.0, "the code is 1234")]
        vt.verify()
    assert isinstance(VidtokError("x"), LlamaVidError) and vidtok.FORMAT_VERSION == "1.1"
