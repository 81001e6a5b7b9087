"""``.vidtok``: per-frame vision features of one video, stored once and read for many questions.

Encoding a movie with the frozen vision encoder is the slow part of answering questions about it, and the
result does not depend on the question or on the LLM. So the features are written once to a ``.vidtok``
file and memory-mapped later. The format is specified in ``docs/vidtok.md``; in short it is a plain
safetensors file (no pickle: opening a file never runs code) holding

* ``features``   (T, N, C) float16, or int8 in the compact storage mode,
* ``scales``     (T, N) float32, only in int8 mode (one symmetric scale per frame-token row),
* ``timestamps`` (T,) float64 seconds,

and, as JSON in the safetensors ``__metadata__``, everything else: who made it, from which video, with
which vision encoder, subtitles, warnings, and per-block checksums of the feature bytes.

Writing streams (a movie's features do not fit in memory), survives interruption (completed chunks are
kept in a hidden ``.<name>.partial/`` directory beside the target and reused by the next run), and is
atomic (the final file appears whole under its name or not at all). Reading is lazy: a frame range reads
and checks only the checksum blocks it touches.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as _safetensors_bytes

from llamavid import __version__
from llamavid.core.errors import InputError, VidtokError
from llamavid.core.fileio import atomic_output, fsync_dir
from llamavid.core.options import check_fps

FORMAT_NAME = "llamavid.vidtok"
FORMAT_VERSION = "1.1"
TRANSCRIPT_VERSION = "1.2"  # a file that holds a transcript of its speech (older 1.x readers pass it over)
FORMAT_MAJOR = 1
STORAGE_MODES = ("float16", "int8")
BLOCK_FRAMES = 64
CHECKSUM_ALGORITHM = "blake2b-128"
INT8_QMAX = 127

_DIGEST_BYTES = 16
_PLACEHOLDER_DIGEST = "0" * (2 * _DIGEST_BYTES)
_MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces
_CHUNK_FORMAT = "llamavid.vidtok.chunk"
_PARTIAL_KIND = "llamavid.vidtok.partial"
_PARTIAL_VERSION = 1
_MANIFEST = "manifest.json"
_ASSEMBLY = "assembly.tmp"
_CHUNK_RE = re.compile(r"^chunk-(\d{6,})\.safetensors$")

# content_hash: sizes of the sampled regions (see docs/vidtok.md, "Source content hash").
_HASH_WHOLE_LIMIT = 16 * 1024 * 1024
_HASH_EDGE = 4 * 1024 * 1024
_HASH_SAMPLE = 64 * 1024
_HASH_SAMPLES = 16

_NUMPY_DTYPES = {"F16": np.dtype("<f2"), "I8": np.dtype("i1"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_STORAGE_TAG = {"float16": "F16", "int8": "I8"}


# ---------------------------------------------------------------------------------------------------------
# Source content hash


def content_hash(path: str | os.PathLike) -> str:
    """A fast cache key for a (possibly multi-GB) video: ``"s1:"`` + sha256 hex over sampled bytes.

    Hashing a whole movie would take longer than many questions about it; size plus the head, the tail
    and 16 evenly spaced samples change whenever a re-encode, a trim or a different file is given.
    Files of at most 16 MiB are hashed whole. The ``s1`` prefix names the sampling scheme so that it can
    change later without old keys matching new ones.
    """
    label = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.sha256(size.to_bytes(8, "little"))
            for offset, length in content_hash_spans(size):
                f.seek(offset)
                data = f.read(length)
                if len(data) != length:
                    raise InputError("the file changed size while it was being hashed", where=label)
                digest.update(data)
    except OSError as e:
        raise InputError(f"cannot read the file ({e.strerror or e})", where=label) from None
    return "s1:" + digest.hexdigest()


def content_hash_spans(size: int) -> list[tuple[int, int]]:
    """The (offset, length) regions ``content_hash`` reads, in file order; public so the spec is testable."""
    if size <= _HASH_WHOLE_LIMIT:
        return [(0, size)]
    middle = size - 2 * _HASH_EDGE
    samples = [(_HASH_EDGE + i * (middle - _HASH_SAMPLE) // (_HASH_SAMPLES - 1), _HASH_SAMPLE)
               for i in range(_HASH_SAMPLES)]
    return [(0, _HASH_EDGE), *samples, (size - _HASH_EDGE, _HASH_EDGE)]


# ---------------------------------------------------------------------------------------------------------
# int8 storage


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``scale = max|row| / 127``, ``q = round(row / scale)`` in [-127, 127].

    One scale per (frame, token) row keeps the error proportional to that token's own magnitude (rows of
    a ViT output differ by orders of magnitude, e.g. the CLS token). Rows along the last axis; zero rows
    get scale 0 and decode to zeros. Returns (q int8, scales float32 with the last axis dropped).
    """
    x = np.asarray(x, dtype=np.float32)
    scales = (np.max(np.abs(x), axis=-1) / np.float32(INT8_QMAX)).astype(np.float32)
    divisor = np.where(scales > 0, scales, np.float32(1.0))[..., None]
    q = np.clip(np.rint(x / divisor), -INT8_QMAX, INT8_QMAX).astype(np.int8)
    return q, scales


def dequantize_int8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``q * scale`` per row, in float32 (the inverse of ``quantize_int8`` up to scale/2 per value)."""
    return q.astype(np.float32) * np.asarray(scales, dtype=np.float32)[..., None]


# ---------------------------------------------------------------------------------------------------------
# Small helpers shared by the writer and the reader


def _blake(*parts: np.ndarray) -> str:
    """blake2b-128 hex over the raw bytes of the arrays, in order."""
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for part in parts:
        h.update(np.ascontiguousarray(part).view(np.uint8).reshape(-1))
    return h.hexdigest()


def _utc_now() -> str:
    """Creation time, fixed-width ISO 8601 UTC (fixed width keeps header sizes stable between runs)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(target: Path, data: bytes, label: str) -> None:
    """``target`` exists whole or not at all (``llamavid.core.fileio.atomic_output``)."""
    try:
        with atomic_output(target) as f:
            f.write(data)
    except OSError as e:
        raise VidtokError(f"cannot write {target} ({e.strerror or e})", where=label) from None


def _json_copy(value: Any, what: str, label: str) -> Any:
    """A deep copy through JSON: proves the value can be stored and detaches it from the caller."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} cannot be stored as JSON ({e})", where=label) from None


def partial_dir_for(path: str | os.PathLike) -> Path:
    """Where an unfinished encoding of ``path`` keeps its completed chunks: ``<dir>/.<name>.partial``."""
    p = Path(path)
    return p.with_name(f".{p.name}.partial")


# ---------------------------------------------------------------------------------------------------------
# Writing


@dataclass
class _Frames:
    """Frames already in their stored representation (row-wise quantization makes this chunk-independent)."""

    features: np.ndarray
    scales: np.ndarray | None
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps)

    def split(self, n: int) -> tuple[_Frames, _Frames]:
        f, g = self.features[:n], self.features[n:]
        t, u = self.timestamps[:n], self.timestamps[n:]
        s, r = (self.scales[:n], self.scales[n:]) if self.scales is not None else (None, None)
        return _Frames(f, s, t), _Frames(g, r, u)

    @staticmethod
    def concat(parts: Sequence[_Frames]) -> _Frames:
        scales = None if parts[0].scales is None else np.concatenate([p.scales for p in parts])
        return _Frames(np.concatenate([p.features for p in parts]), scales,
                       np.concatenate([p.timestamps for p in parts]))


def _as_float_array(features: Any, label: str) -> np.ndarray:
    """(n, N, C) float array from a tensor or array of any float dtype; bf16/f16 widen exactly to f32."""
    if isinstance(features, torch.Tensor):
        t = features.detach().cpu()
        if not t.is_floating_point():
            raise InputError(f"features must be floating point, got {t.dtype}", where=label)
        arr = (t if t.dtype == torch.float64 else t.to(torch.float32)).numpy()
    else:
        arr = np.asarray(features)
        if arr.dtype.kind != "f":
            raise InputError(f"features must be floating point, got {arr.dtype}", where=label)
    if arr.ndim != 3:
        raise InputError(f"features must have shape (frames, tokens, channels), got {tuple(arr.shape)}", where=label)
    return arr


def _as_timestamps(timestamps: Any, n: int, label: str) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1) if n else np.zeros(0, np.float64)
    if len(ts) != n:
        raise InputError(f"{n} frames but {len(ts)} timestamps", where=label)
    if not np.isfinite(ts).all():
        raise InputError("timestamps contain NaN or infinite values", where=label)
    return ts.astype("<f8")


def _encode_frames(arr: np.ndarray, ts: np.ndarray, storage: str, label: str) -> _Frames:
    """Convert to the stored representation; refuse values the storage cannot hold."""
    if not np.isfinite(arr).all():
        raise InputError("features contain NaN or infinite values", where=label)
    if storage == "int8":
        q, scales = quantize_int8(arr)
        return _Frames(q, scales.astype("<f4"), ts)
    with np.errstate(over="ignore"):  # overflow is reported below, as an error
        half = arr.astype("<f2")
    if not np.isfinite(half).all():
        raise InputError("features exceed the float16 range (|x| > 65504); use int8 storage", where=label)
    return _Frames(half, None, ts)


def check_destination(path: str | os.PathLike, label: str | None = None) -> None:
    """Fail before any work if the .vidtok could not be written where asked (InputError naming the folder)."""
    path = Path(path)
    label = os.fspath(path) if label is None else label
    parent = path.parent
    if path.is_dir():
        raise InputError("is a directory; give a file name for the .vidtok", where=label)
    if parent.exists() and not parent.is_dir():
        raise InputError(f"is not a directory, so {label} cannot be written there", where=os.fspath(parent))
    if not parent.is_dir():
        raise InputError(f"output directory does not exist (for {label})", where=os.fspath(parent))
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write to the output directory ({e.strerror or e})", where=os.fspath(parent)) from None


class VidtokWriter:
    """Streams frames into a ``.vidtok``; resumable after Ctrl-C, kill -9 or power loss, atomic at the end.

    Frames are buffered and written as chunks of exactly ``chunk_frames`` frames (chunk k holds frames
    [k*chunk_frames, (k+1)*chunk_frames)) into ``.<name>.partial/``; each chunk file is fsync'ed and
    renamed into place, so it exists whole or not at all. A new writer for the same job (same encoder
    fingerprint, fps, source content hash, storage, chunk size) picks those chunks up: ``frames_done``
    tells the encoder where to continue, and because boundaries are fixed the result is byte-identical to
    an uninterrupted run. ``finalize`` streams the chunks into one safetensors file and renames it onto
    ``path``. One writer per destination at a time.
    """

    def __init__(self, path: str | os.PathLike, *, encoder: dict, fps: float, source: dict,
                 storage: str = "float16", chunk_frames: int = 64, resume: bool = True,
                 feature_shape: tuple[int, int] | None = None):
        self._path = Path(path)
        self._label = os.fspath(path)
        self._encoder = self._check_encoder(encoder)
        self._fps = self._check_fps(fps)
        self._source = self._check_source(source)
        if storage not in STORAGE_MODES:
            raise InputError(f"storage must be one of {', '.join(STORAGE_MODES)}, got {storage!r}", where=self._label)
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise InputError(f"chunk_frames must be a positive integer, got {chunk_frames!r}", where=self._label)
        self._storage = storage
        self._chunk_frames = chunk_frames
        self._shape: tuple[int, int] | None = tuple(int(v) for v in feature_shape) if feature_shape else None
        check_destination(self._path, self._label)
        self._partial = partial_dir_for(self._path)
        self._buffer: list[_Frames] = []
        self._buffered = 0
        self._chunks = 0  # complete chunk files on disk, contiguous from 0
        self._durable = 0  # frames in those chunk files
        self._manifest_written = False
        self._closed = False
        self._start(resume)

    # -- validation of the job description --------------------------------------------------------------

    def _check_encoder(self, encoder: dict) -> dict:
        if (not isinstance(encoder, dict) or not isinstance(encoder.get("fingerprint"), str)
                or not encoder["fingerprint"]):
            raise InputError("encoder must be a dict with a non-empty 'fingerprint' string", where=self._label)
        return _json_copy(encoder, "the encoder identity", self._label)

    def _check_fps(self, fps: float) -> float:
        try:
            return check_fps(fps)
        except InputError as exc:
            raise InputError(*exc.parts, where=self._label) from None

    def _check_source(self, source: dict) -> dict:
        if (not isinstance(source, dict) or not isinstance(source.get("content_hash"), str)
                or not source["content_hash"]):
            raise InputError("source must be a dict with a non-empty 'content_hash' string", where=self._label)
        src = {key: source.get(key) for key in ("name", "size", "duration", "content_hash")}
        src.update(source)
        return _json_copy(src, "the source description", self._label)

    # -- partial state ---------------------------------------------------------------------------------

    def _manifest(self) -> dict:
        """What must match for old chunks to be reused by this job."""
        return {
            "kind": _PARTIAL_KIND, "partial_version": _PARTIAL_VERSION, "format_version": FORMAT_VERSION,
            "target": self._path.name, "encoder_fingerprint": self._encoder["fingerprint"], "fps": self._fps,
            "content_hash": self._source["content_hash"], "storage": self._storage,
            "chunk_frames": self._chunk_frames, "feature_shape": list(self._shape) if self._shape else None,
        }

    def _read_manifest(self) -> dict | None:
        try:
            data = json.loads((self._partial / _MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _manifest_matches(self, old: dict) -> bool:
        new = self._manifest()
        same = all(old.get(key) == value for key, value in new.items() if key != "feature_shape")
        shape = old.get("feature_shape")
        return same and (self._shape is None or shape is None or list(self._shape) == shape)

    def _start(self, resume: bool) -> None:
        """Adopt matching partial state (``frames_done`` > 0) or discard it."""
        if self._partial.exists() and not self._partial.is_dir():
            self._partial.unlink()
        old = self._read_manifest() if resume and self._partial.is_dir() else None
        if old is None or not self._manifest_matches(old):
            self._discard_partial()
            return
        if self._shape is None and isinstance(old.get("feature_shape"), list):
            self._shape = tuple(int(v) for v in old["feature_shape"])
        self._manifest_written = True
        self._adopt_chunks()

    def _adopt_chunks(self) -> None:
        """Count whole, full chunks from 0; delete temp files, short tails and anything past a gap."""
        k = 0
        while self._chunk_is_whole(k):
            k += 1
        for entry in self._partial.iterdir():
            match = _CHUNK_RE.match(entry.name)
            if entry.name.endswith(".tmp") or ".tmp-" in entry.name or (match and int(match.group(1)) >= k):
                entry.unlink(missing_ok=True)
        self._chunks = k
        self._durable = k * self._chunk_frames

    def _chunk_is_whole(self, k: int) -> bool:
        path = self._chunk_path(k)
        if not path.is_file() or self._shape is None:
            return False
        try:
            with safe_open(path, framework="numpy") as f:
                meta = f.metadata() or {}
                shapes = {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()}
        except Exception:  # noqa: BLE001 - any unreadable chunk is simply redone
            return False
        n, (tokens, channels) = self._chunk_frames, self._shape
        want = {"features": (_STORAGE_TAG[self._storage], [n, tokens, channels]), "timestamps": ("F64", [n])}
        if self._storage == "int8":
            want["scales"] = ("F32", [n, tokens])
        return meta.get("format") == _CHUNK_FORMAT and meta.get("chunk_index") == str(k) and shapes == want

    def _discard_partial(self) -> None:
        shutil.rmtree(self._partial, ignore_errors=True)
        self._chunks = self._durable = 0
        self._manifest_written = False

    def _chunk_path(self, k: int) -> Path:
        return self._partial / f"chunk-{k:06d}.safetensors"

    def _ensure_manifest(self) -> None:
        if self._manifest_written:
            return
        try:
            self._partial.mkdir(exist_ok=True)
        except OSError as e:
            raise VidtokError(f"cannot create {self._partial} ({e.strerror or e})", where=self._label) from None
        fsync_dir(self._partial.parent)
        _atomic_write(self._partial / _MANIFEST, json.dumps(self._manifest(), indent=1).encode(), self._label)
        self._manifest_written = True

    # -- public state ----------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def partial_dir(self) -> Path:
        return self._partial

    @property
    def frames_done(self) -> int:
        """Frames durably on disk (whole chunks from frame 0): where a resumed encoder continues."""
        return self._durable

    @property
    def next_frame(self) -> int:
        """Index of the next frame ``append`` expects (``frames_done`` plus buffered frames)."""
        return self._durable + self._buffered

    @property
    def frames_total(self) -> int:
        """Frames the file will hold if finalized now (resumed ones included); same as ``next_frame``."""
        return self.next_frame

    @property
    def feature_shape(self) -> tuple[int, int] | None:
        return self._shape

    # -- writing ---------------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self._label}: this VidtokWriter was already finalized or aborted")

    def append(self, features: torch.Tensor | np.ndarray, timestamps: Sequence[float], *,
               first_frame: int | None = None) -> None:
        """Add frames (n, N, C) with their timestamps; full chunks are written as soon as they fill.

        Frames continue at ``next_frame``. With ``first_frame`` (the index of ``features[0]``) frames
        already stored are skipped, so an encoder may simply restart its current batch after a resume.
        """
        self._require_open()
        arr = _as_float_array(features, self._label)
        ts = _as_timestamps(timestamps, arr.shape[0], self._label)
        if first_frame is not None:
            skip = self.next_frame - int(first_frame)
            if skip < 0:
                raise InputError(f"frames {first_frame}.. given, but frame {self.next_frame} is next",
                                 where=self._label)
            arr, ts = arr[skip:], ts[skip:]
        if arr.shape[0] == 0:
            return
        self._check_shape(tuple(arr.shape[1:]))
        self._buffer.append(_encode_frames(arr, ts, self._storage, self._label))
        self._buffered += arr.shape[0]
        self._flush(final=False)

    def _check_shape(self, shape: tuple[int, int]) -> None:
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            had = f"{self._shape[0]}x{self._shape[1]}"
            if self._durable:
                self._discard_partial()
                raise VidtokError(f"{self._label}: new frames have {shape[0]}x{shape[1]} features but the unfinished "
                                  f"encoding has {had}; its partial state was discarded, encode again from frame 0")
            raise InputError(f"features have {shape[0]}x{shape[1]} per frame, earlier frames {had}", where=self._label)

    def _take(self, n: int) -> _Frames:
        parts: list[_Frames] = []
        need = n
        while need:
            head = self._buffer[0]
            if len(head) <= need:
                parts.append(self._buffer.pop(0))
                need -= len(head)
            else:
                part, self._buffer[0] = head.split(need)
                parts.append(part)
                need = 0
        self._buffered -= n
        return parts[0] if len(parts) == 1 else _Frames.concat(parts)

    def _flush(self, final: bool) -> None:
        """Write every full chunk; at finalize also the short tail."""
        while self._buffered >= self._chunk_frames or (final and self._buffered):
            frames = self._take(min(self._chunk_frames, self._buffered))
            self._write_chunk(self._chunks, frames)
            self._chunks += 1
            self._durable += len(frames)

    def _write_chunk(self, k: int, frames: _Frames) -> None:
        self._ensure_manifest()
        tensors = {"features": frames.features, "timestamps": frames.timestamps}
        if frames.scales is not None:
            tensors["scales"] = frames.scales
        meta = {"format": _CHUNK_FORMAT, "chunk_index": str(k), "frame_start": str(k * self._chunk_frames),
                "frames": str(len(frames))}
        _atomic_write(self._chunk_path(k), _safetensors_bytes(tensors, metadata=meta), self._label)

    def finalize(self, subtitles: list[tuple[float, float, str]] | None = None, warnings: list[str] | None = None,
                 extra_meta: dict | None = None, transcript: dict | None = None) -> Path:
        """Assemble the final file from the chunks (streaming), rename it into place, drop partial state.

        ``transcript``: the speech's transcript, ``{"lines": [[start, end, text], ...], "provenance": {...},
        "key": str}`` (how it was made, as a cache key); the file is then format 1.2."""
        self._require_open()
        meta_parts = (_check_subtitles(subtitles, self._label), _check_warnings(warnings, self._label),
                      _json_copy(extra_meta or {}, "extra_meta", self._label),
                      _check_transcript(transcript, self._label))
        if self.next_frame == 0:
            raise VidtokError("no frames were given; a .vidtok needs at least one frame", where=self._label)
        self._flush(final=True)
        assembly = self._partial / _ASSEMBLY
        meta = self._final_meta(*meta_parts)
        try:
            _assemble(assembly, [self._chunk_path(k) for k in range(self._chunks)], meta, self._label)
            _check_opens(assembly, self._label)
            os.replace(assembly, self._path)
        except OSError as e:
            assembly.unlink(missing_ok=True)
            raise VidtokError(f"cannot write the file ({e.strerror or e})", where=self._label) from None
        except VidtokError as e:  # an unreadable chunk: resuming from it again would fail again
            self.abort()
            raise VidtokError(f"{e}; the unfinished encoding was discarded, so running the same command again "
                              f"encodes from frame 0") from None
        fsync_dir(self._path.parent)
        self._discard_partial()
        self._closed = True
        return self._path

    def _final_meta(self, subtitles: list, warnings: list, extra: dict, transcript: dict | None) -> dict:
        assert self._shape is not None
        return ({"transcript": transcript} if transcript is not None else {}) | {
            "created_by": f"llamavid {__version__}", "llamavid_version": __version__, "created_at": _utc_now(),
            "encoder": self._encoder, "fps": self._fps, "source": self._source, "num_frames": self._durable,
            "feature_shape": list(self._shape), "storage": self._storage,
            "quantization": ({"scheme": "symmetric-per-row", "qmax": INT8_QMAX, "scale_dtype": "float32"}
                             if self._storage == "int8" else None),
            "subtitles": subtitles, "warnings": warnings, "extra": extra,
        }

    def abort(self) -> None:
        """Give up this encoding: remove partial state and buffered frames (a finished file is untouched)."""
        self._buffer.clear()
        self._buffered = 0
        self._discard_partial()
        self._closed = True


def _check_subtitles(subtitles: Any, label: str) -> list[list]:
    out = []
    for item in subtitles or []:
        try:
            start, end, text = item
            entry = [float(start), float(end), str(text)]
        except (TypeError, ValueError):
            raise InputError(f"subtitles must be (start, end, text) triples, got {item!r:.60}", where=label) from None
        if not (math.isfinite(entry[0]) and math.isfinite(entry[1])):
            raise InputError(f"subtitle times must be finite numbers, got {item!r:.60}", where=label)
        out.append(entry)
    return out


def _stored_lines(lines: Any) -> bool:
    """Lines as a file stores them (subtitles, a transcript): [start, end, text] with finite times."""
    return isinstance(lines, list) and all(
        isinstance(item, list) and len(item) == 3 and _finite(item[0]) and _finite(item[1]) and isinstance(item[2], str)
        for item in lines)


def _check_transcript(transcript: Any, label: str) -> dict | None:
    """A transcript as stored: lines like subtitles, a JSON provenance object, and its key (a string)."""
    if transcript is None:
        return None
    if not isinstance(transcript, dict) or set(transcript) != {"lines", "provenance", "key"} or \
            not isinstance(transcript["key"], str) or not isinstance(transcript["provenance"], dict):
        raise InputError("a transcript is {lines, provenance, key}", where=label)
    lines = _check_subtitles(transcript["lines"], label)
    return {"lines": lines, "provenance": _json_copy(transcript["provenance"], "the transcript's provenance", label),
            "key": transcript["key"]}


def _check_warnings(warnings: Any, label: str) -> list[str]:
    if isinstance(warnings, str):
        raise InputError("warnings must be a list of strings, not one string", where=label)
    return [str(w) for w in warnings or []]


# ---------------------------------------------------------------------------------------------------------
# Assembly: one safetensors file, header written by hand, data streamed chunk by chunk


def _header_bytes(entries: dict[str, dict], metadata: dict[str, str]) -> bytes:
    """Header JSON padded with spaces so the data section starts 8-byte aligned (as the spec allows)."""
    raw = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return raw + b" " * (-len(raw) % 8)


def _tensor_entries(num_frames: int, shape: tuple[int, int], storage: str) -> dict[str, dict]:
    """Data layout in file order: timestamps, scales (int8 only), features; each naturally aligned."""
    tokens, channels = shape
    specs = [("timestamps", "F64", [num_frames])]
    if storage == "int8":
        specs.append(("scales", "F32", [num_frames, tokens]))
    specs.append(("features", _STORAGE_TAG[storage], [num_frames, tokens, channels]))
    entries, offset = {}, 0
    for name, tag, dims in specs:
        size = _NUMPY_DTYPES[tag].itemsize * math.prod(dims)
        entries[name] = {"dtype": tag, "shape": dims, "data_offsets": [offset, offset + size]}
        offset += size
    return entries


def _file_metadata(meta: dict, checksums: dict) -> dict[str, str]:
    inner = dict(meta, checksums=checksums)
    version = TRANSCRIPT_VERSION if "transcript" in meta else FORMAT_VERSION
    metadata = {"format": FORMAT_NAME, "format_version": version,
                "llamavid": json.dumps(inner, separators=(",", ":"), ensure_ascii=True, allow_nan=False)}
    metadata["llamavid_checksum"] = metadata_checksum(metadata)
    return metadata


def _assemble(target: Path, chunks: list[Path], meta: dict, label: str) -> None:
    """Write the final file without holding more than one chunk in memory.

    Block checksums are only known after the data is streamed, so the header is written first with
    fixed-width placeholder digests and rewritten in place (same length) at the end.
    """
    timestamps = np.concatenate([_read_chunk_tensor(c, "timestamps", label) for c in chunks])
    num_frames = len(timestamps)
    if num_frames != meta["num_frames"]:
        raise VidtokError(f"{label}: the unfinished encoding's chunks hold {num_frames} frames, "
                          f"expected {meta['num_frames']}; run the encoding again")
    num_blocks = -(-num_frames // BLOCK_FRAMES)
    entries = _tensor_entries(num_frames, tuple(meta["feature_shape"]), meta["storage"])
    checksums = {"algorithm": CHECKSUM_ALGORITHM, "block_frames": BLOCK_FRAMES,
                 "timestamps": _blake(timestamps), "blocks": [_PLACEHOLDER_DIGEST] * num_blocks}
    header = _header_bytes(entries, _file_metadata(meta, checksums))
    hashers = [hashlib.blake2b(digest_size=_DIGEST_BYTES) for _ in range(num_blocks)]
    with open(target, "wb") as out:
        out.write(struct.pack("<Q", len(header)))
        out.write(header)
        out.write(timestamps.astype("<f8").tobytes())
        for name in [n for n in ("scales", "features") if n in entries]:
            _stream_tensor(out, chunks, name, hashers, label)
        checksums["blocks"] = [h.hexdigest() for h in hashers]
        final_header = _header_bytes(entries, _file_metadata(meta, checksums))
        if len(final_header) != len(header):  # cannot happen: digests are fixed-width hex
            raise VidtokError("internal error: header size changed while writing", where=label)
        out.seek(8)
        out.write(final_header)
        out.flush()
        os.fsync(out.fileno())


def _stream_tensor(out: Any, chunks: list[Path], name: str, hashers: list[Any], label: str) -> None:
    """Append one tensor's data chunk by chunk, feeding each checksum block the rows it covers."""
    frame = 0
    for chunk in chunks:
        data = np.ascontiguousarray(_read_chunk_tensor(chunk, name, label))
        out.write(data.view(np.uint8).reshape(-1).data)
        stop = frame + len(data)
        for block in range(frame // BLOCK_FRAMES, -(-stop // BLOCK_FRAMES)):
            lo, hi = max(frame, block * BLOCK_FRAMES), min(stop, (block + 1) * BLOCK_FRAMES)
            hashers[block].update(data[lo - frame:hi - frame].view(np.uint8).reshape(-1).data)
        frame = stop


def _read_chunk_tensor(chunk: Path, name: str, label: str) -> np.ndarray:
    try:
        with safe_open(chunk, framework="numpy") as f:
            return f.get_tensor(name)
    except Exception as e:  # noqa: BLE001 - a damaged chunk must not surface as a raw library error
        raise VidtokError(f"{label}: the unfinished encoding's {chunk.name} is unreadable "
                          f"({type(e).__name__})") from None


def _check_opens(path: Path, label: str) -> None:
    """The assembled file must open with stock safetensors before it may replace anything."""
    try:
        with safe_open(path, framework="numpy") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001
        raise VidtokError(f"internal error: the assembled file does not open with safetensors ({e})",
                          where=label) from None


def write_vidtok(path: str | os.PathLike, features: torch.Tensor | np.ndarray, timestamps: Sequence[float], *,
                 encoder: dict, fps: float, source: dict, storage: str = "float16", chunk_frames: int = 64,
                 subtitles: list[tuple[float, float, str]] | None = None, warnings: list[str] | None = None,
                 extra_meta: dict | None = None) -> Path:
    """One-shot write of frames already in memory (small inputs, tests); same file as the streaming path."""
    writer = VidtokWriter(path, encoder=encoder, fps=fps, source=source, storage=storage,
                          chunk_frames=chunk_frames, resume=False)
    try:
        writer.append(features, timestamps)
        return writer.finalize(subtitles=subtitles, warnings=warnings, extra_meta=extra_meta)
    except BaseException:
        writer.abort()
        raise


# ---------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _Header:
    entries: dict[str, Any]
    metadata: dict[str, str]
    size: int  # of the whole file
    data_start: int  # 8 + header length


class _Duplicate(ValueError):
    """A JSON object with the same key twice: parsers disagree on which one counts, so it is refused."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Duplicate(key)
    return out


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strict_json(text: str | bytes) -> Any:
    """json.loads that refuses duplicate keys and NaN/Infinity (which stock safetensors would not read alike)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_not_a_number)


def _short(value: Any, limit: int = 40) -> str:
    """A value for an error message: repr, ASCII only, cut short (file contents can be anything)."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _sniff(prefix: bytes) -> str | None:
    """What a non-safetensors file most likely is, from its first bytes."""
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (e.g. a torch.save checkpoint)"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (llamavid never unpickles)"
    if prefix.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    return None


def _read_header(path: Path, label: str) -> _Header:
    """Parse and sanity-check the safetensors header ourselves, for precise one-line errors."""
    _check_is_file(path, label)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise VidtokError(f"file is empty or truncated ({size} bytes); not a .vidtok file", where=label)
            (length,) = struct.unpack("<Q", prefix)
            kind = _sniff(prefix) if length == 0 or 8 + length > size else None  # a real length wins
            if kind:
                raise VidtokError(f"is {kind}, not a .vidtok file", where=label)
            if length == 0 or length > _MAX_HEADER_BYTES:
                raise VidtokError("not a .vidtok file (no safetensors header; the length field is garbage)",
                                  where=label)
            if 8 + length > size:
                raise VidtokError(f"{label}: file is truncated (the header alone needs {8 + length} bytes, "
                                  f"the file has {size})")
            raw = f.read(length)
    except OSError as e:
        raise InputError(f"cannot read the file ({e.strerror or e})", where=label) from None
    if len(raw) != length:
        raise VidtokError("file is truncated (it changed while being read)", where=label)
    try:
        header = _strict_json(raw.decode("utf-8"))
    except _Duplicate as e:
        raise VidtokError(f"the safetensors header names {_short(str(e))} twice; the file is damaged",
                          where=label) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise VidtokError(f"{label}: the safetensors header is garbage (not a JSON object); the file is damaged "
                          f"or not a .vidtok file")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise VidtokError("the safetensors metadata is not a string map; the file is damaged", where=label)
    return _Header(entries=header, metadata=metadata, size=size, data_start=8 + length)


def _check_is_file(path: Path, label: str) -> None:
    if path.is_file():
        return
    if path.is_dir():
        hint = " (an unfinished encoding's partial directory)" if path.name.endswith(".partial") else ""
        raise InputError(f"is a directory{hint}, not a .vidtok file", where=label)
    if partial_dir_for(path).is_dir():
        raise InputError(f"{label}: does not exist; an unfinished encoding is in {partial_dir_for(path).name} "
                         f"(run the encoder again to resume it)")
    raise InputError("file not found", where=label)


def metadata_checksum(metadata: dict[str, str]) -> str:
    """The ``llamavid_checksum`` of a file's ``__metadata__`` (format 1.1; see docs/vidtok.md, section 4).

    BLAKE2b-128 over ``format + "\\n" + format_version + "\\n" + llamavid`` (the three strings, UTF-8).
    """
    text = "\n".join(str(metadata.get(key, "")) for key in ("format", "format_version", "llamavid"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES).hexdigest()


def _check_format(metadata: dict[str, str], label: str) -> dict:
    """Format name, version and metadata checksum, then the JSON metadata; returns the inner dict."""
    fmt = metadata.get("format")
    if fmt == _CHUNK_FORMAT:
        raise VidtokError("is one chunk of an unfinished encoding, not a .vidtok file", where=label)
    if fmt != FORMAT_NAME:
        raise VidtokError(f"is a safetensors file but not a .vidtok file (format {_short(fmt)})", where=label)
    version = metadata.get("format_version", "")
    match = re.fullmatch(r"([0-9]{1,6})\.([0-9]{1,6})", version)
    if not match:
        raise VidtokError(f"unreadable .vidtok format version {_short(version)}", where=label)
    major, minor = int(match.group(1)), int(match.group(2))
    if major > FORMAT_MAJOR:
        raise VidtokError(f"{label}: .vidtok format version {version} is newer than this llamavid "
                          f"({__version__}) reads ({FORMAT_MAJOR}.x); upgrade llamavid")
    if major < FORMAT_MAJOR:
        raise VidtokError(f".vidtok format version {version} is not supported", where=label)
    stored = metadata.get("llamavid_checksum")
    if stored is None and minor >= 1:  # 1.0 files predate the metadata checksum
        raise VidtokError("the .vidtok metadata lacks its checksum; the file is damaged", where=label)
    if stored is not None and stored != metadata_checksum(metadata):
        raise VidtokError("the .vidtok metadata fails its checksum; the file is damaged or was modified", where=label)
    try:
        inner = _strict_json(metadata.get("llamavid", ""))
    except (ValueError, RecursionError):
        inner = None
    if not isinstance(inner, dict):
        raise VidtokError("the .vidtok metadata is not valid JSON; the file is damaged", where=label)
    return inner


def _require(meta: dict, key: str, kind: type | tuple[type, ...], label: str) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise VidtokError(f"the .vidtok metadata lacks a valid {key!r}; the file is damaged", where=label)
    return value


def _finite(value: Any) -> bool:
    """A JSON number that fits a float and is finite (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_HEX_DIGEST = re.compile(r"[0-9a-f]{32}")
_QUANTIZATION = {"scheme": "symmetric-per-row", "qmax": INT8_QMAX, "scale_dtype": "float32"}


class Vidtok:
    """A memory-mapped ``.vidtok``: metadata up front, features read (and checked) per range on demand."""

    def __init__(self, path: str | os.PathLike):
        self._path = Path(path)
        self._label = os.fspath(path)
        header = _read_header(self._path, self._label)
        self._meta = _check_format(header.metadata, self._label)
        self._format_version = header.metadata["format_version"]
        self._identity = metadata_checksum(header.metadata)  # == llamavid_checksum since 1.1
        self._parse_meta()
        self._check_layout(header)
        try:
            self._file = safe_open(self._path, framework="numpy")
        except Exception as e:  # noqa: BLE001 - never leak raw safetensors errors
            raise VidtokError(f"cannot be read as safetensors ({' '.join(str(e).split())})",
                              where=self._label) from None
        self._verified: set[int] = set()
        self._timestamps = self._read_timestamps()

    # -- opening ---------------------------------------------------------------------------------------

    def _parse_meta(self) -> None:
        """Every key the reader uses, with its type and range (docs/vidtok.md, section 3)."""
        meta, label = self._meta, self._label

        def bad(key: str) -> VidtokError:
            return VidtokError(f"the .vidtok metadata has an invalid {key!r}; the file is damaged", where=label)

        self._num_frames = _require(meta, "num_frames", int, label)
        if self._num_frames < 1:
            raise bad("num_frames")
        shape = _require(meta, "feature_shape", list, label)
        if len(shape) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise VidtokError(f"the .vidtok metadata has an invalid feature_shape {_short(shape)}", where=label)
        self._shape = (shape[0], shape[1])
        self._storage = _require(meta, "storage", str, label)
        if self._storage not in STORAGE_MODES:
            raise VidtokError(f"unknown storage {_short(self._storage)} in the .vidtok metadata", where=label)
        if meta.get("quantization") != (_QUANTIZATION if self._storage == "int8" else None):
            raise bad("quantization")
        fps = meta.get("fps")
        if not _finite(fps) or fps <= 0:
            raise bad("fps")
        self._fps = float(fps)
        encoder = _require(meta, "encoder", dict, label)
        if not isinstance(encoder.get("fingerprint"), str) or not encoder["fingerprint"]:
            raise bad("encoder")
        source = _require(meta, "source", dict, label)
        if not isinstance(source.get("content_hash"), str):
            raise bad("source")
        if not _stored_lines(meta.get("subtitles", [])):
            raise bad("subtitles")
        warnings = meta.get("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise bad("warnings")
        if not isinstance(meta.get("extra", {}), dict):
            raise bad("extra")
        transcript = meta.get("transcript", {"lines": [], "provenance": {}, "key": ""})
        if not (isinstance(transcript, dict) and set(transcript) == {"lines", "provenance", "key"}
                and _stored_lines(transcript["lines"]) and isinstance(transcript["provenance"], dict)
                and isinstance(transcript["key"], str)):
            raise bad("transcript")
        for key in ("created_by", "llamavid_version", "created_at"):
            if not isinstance(meta.get(key, ""), str):
                raise bad(key)
        checksums = _require(meta, "checksums", dict, label)
        blocks = _require(checksums, "blocks", list, label)
        self._block_frames = _require(checksums, "block_frames", int, label)
        if checksums.get("algorithm") != CHECKSUM_ALGORITHM or self._block_frames < 1 or \
                len(blocks) != -(-self._num_frames // self._block_frames) or \
                not all(isinstance(b, str) and _HEX_DIGEST.fullmatch(b) for b in blocks) or \
                not (isinstance(checksums.get("timestamps"), str) and _HEX_DIGEST.fullmatch(checksums["timestamps"])):
            raise VidtokError("the .vidtok checksum table is inconsistent; the file is damaged", where=label)
        self._block_digests = list(blocks)
        # A block size above the frame count means one block of all frames; cap it so that index arithmetic
        # stays within int64 (numpy) for any stored value.
        self._block_frames = min(self._block_frames, self._num_frames)

    def _check_layout(self, header: _Header) -> None:
        """Tensors, dtypes, shapes, offsets and total size must be exactly what the metadata and the spec say.

        The reader then trusts the data section to hold what the header says; stock safetensors re-checks
        the same header when it maps the file, so the two never disagree about where a tensor lies.
        """
        label = self._label
        want = _tensor_entries(self._num_frames, self._shape, self._storage)
        entries = header.entries
        if set(entries) != set(want) or not all(isinstance(e, dict) and set(e) == {"dtype", "shape", "data_offsets"}
                                                for e in entries.values()):
            raise VidtokError("the tensors do not match the .vidtok metadata; the file is damaged", where=label)
        if any(entries[n]["dtype"] != want[n]["dtype"] or entries[n]["shape"] != want[n]["shape"] for n in want) or \
                any(type(d) is not int for n in want for d in entries[n]["shape"]):
            raise VidtokError("the tensors do not match the .vidtok metadata; the file is damaged", where=label)
        spans = []
        for name, entry in entries.items():
            offsets = entry["data_offsets"]
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int for v in offsets)
                    and 0 <= offsets[0] <= offsets[1]
                    and offsets[1] - offsets[0] == want[name]["data_offsets"][1] - want[name]["data_offsets"][0]):
                raise VidtokError(f"the safetensors header is damaged (bad data offsets of {name})", where=label)
            spans.append((offsets[0], offsets[1]))
        spans.sort()
        end = 0
        for begin, stop in spans:
            if begin != end:
                raise VidtokError("the safetensors header is damaged (tensors overlap or leave gaps)", where=label)
            end = stop
        expected = header.data_start + end
        if header.size < expected:
            raise VidtokError(f"{label}: file is truncated ({header.size} of {expected} bytes); "
                              f"it was cut short while copying or writing")
        if header.size > expected:
            raise VidtokError(f"{label}: file has {header.size - expected} unexpected bytes at the end; "
                              f"the file is damaged")

    def _read_timestamps(self) -> np.ndarray:
        ts = self._get("timestamps", 0, self._num_frames)
        if _blake(ts) != self._meta["checksums"].get("timestamps"):
            raise VidtokError("the timestamps fail their checksum; the file is damaged or was modified",
                              where=self._label)
        ts.flags.writeable = False
        return ts

    # -- metadata --------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def num_frames(self) -> int:
        return self._num_frames

    def __len__(self) -> int:
        return self._num_frames

    @property
    def timestamps(self) -> np.ndarray:
        """Seconds since the start of the video, one per frame (read-only float64 array)."""
        return self._timestamps

    @property
    def fps(self) -> float:
        """The sampling rate the frames were taken at (frames per second of video time)."""
        return self._fps

    @property
    def encoder(self) -> dict:
        return copy.deepcopy(self._meta["encoder"])

    @property
    def source(self) -> dict:
        return copy.deepcopy(self._meta["source"])

    @property
    def subtitles(self) -> list[tuple[float, float, str]]:
        return [(float(s), float(e), str(t)) for s, e, t in self._meta.get("subtitles", [])]

    @property
    def warnings(self) -> list[str]:
        return list(self._meta.get("warnings", []))

    @property
    def transcript(self) -> dict | None:
        """The speech's transcript, when the file holds one: ``{"lines": [(start, end, text), ...],
        "provenance": {...}, "key": str}``."""
        t = self._meta.get("transcript")
        if t is None:
            return None
        return {"lines": [(float(a), float(b), str(c)) for a, b, c in t["lines"]], "provenance": dict(t["provenance"]),
                "key": t["key"]}

    @property
    def storage(self) -> str:
        return self._storage

    @property
    def feature_shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def format_version(self) -> str:
        return self._format_version

    @property
    def meta(self) -> dict:
        """Everything in the metadata, plus ``format`` and ``format_version`` (a copy)."""
        return {"format": FORMAT_NAME, "format_version": self._format_version, **copy.deepcopy(self._meta)}

    @property
    def identity(self) -> str:
        """What names this file's content exactly: the digest of its metadata strings (``llamavid_checksum``
        since format 1.1), which hold the digests of its timestamps and of every block of features. A file
        encoded again (even from the same video) has another identity (its ``created_at`` differs)."""
        return self._identity

    @property
    def verified_blocks(self) -> frozenset[int]:
        """Checksum blocks already verified through this reader (each is checked at most once)."""
        return frozenset(self._verified)

    def check_encoder(self, fingerprint: str) -> None:
        """Refuse features from another vision encoder: they would be meaningless to this model."""
        made_with = self._meta["encoder"].get("fingerprint")
        if made_with != fingerprint:
            raise VidtokError(f"{self._label}: made with vision encoder {made_with}, but the model uses "
                              f"{fingerprint}; re-encode the video with this model")

    # -- data ------------------------------------------------------------------------------------------

    def _get(self, name: str, start: int, stop: int) -> np.ndarray:
        if self._file is None:
            raise RuntimeError(f"{self._label}: this Vidtok is closed")
        try:
            return self._file.get_slice(name)[start:stop]
        except Exception as e:  # noqa: BLE001
            raise VidtokError(f"{self._label}: cannot read {name} frames {start}-{stop - 1} "
                              f"({' '.join(str(e).split())})") from None

    def _blocks(self, start: int, stop: int) -> range:
        return range(start // self._block_frames, -(-stop // self._block_frames))

    def _read_stored(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Stored rows [start, stop) after checking every not yet verified block they touch.

        Unverified blocks are read whole (a checksum needs all of its bytes) in the same read as the
        requested rows, then the requested rows are cut out.
        """
        todo = [b for b in self._blocks(start, stop) if b not in self._verified]
        lo, hi = start, stop
        if todo:
            lo = min(start, todo[0] * self._block_frames)
            hi = max(stop, min((todo[-1] + 1) * self._block_frames, self._num_frames))
        features = self._get("features", lo, hi)
        scales = self._get("scales", lo, hi) if self._storage == "int8" else None
        for block in todo:
            self._check_block(block, features, scales, lo)
        cut = slice(start - lo, stop - lo)
        return features[cut], (scales[cut] if scales is not None else None)

    def _check_block(self, block: int, features: np.ndarray, scales: np.ndarray | None, offset: int) -> None:
        b_lo = block * self._block_frames
        b_hi = min(b_lo + self._block_frames, self._num_frames)
        rows = slice(b_lo - offset, b_hi - offset)
        parts = ([scales[rows]] if scales is not None else []) + [features[rows]]
        if _blake(*parts) != self._block_digests[block]:
            raise VidtokError(f"{self._label}: frames {b_lo}-{b_hi - 1} fail their checksum; "
                              f"the file is damaged or was modified")
        self._verified.add(block)

    def _to_tensor(self, features: np.ndarray, scales: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if scales is None:
            return torch.from_numpy(features).to(dtype)
        return torch.from_numpy(dequantize_int8(features, scales)).to(dtype)

    def features(self, start: int = 0, stop: int | None = None, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Frames [start, stop) as a (stop - start, N, C) tensor; int8 storage is dequantized."""
        stop = self._num_frames if stop is None else int(stop)
        start = int(start)
        if not 0 <= start <= stop <= self._num_frames:
            raise InputError(f"{self._label}: frames {start}:{stop} are out of range; the file has "
                             f"{self._num_frames} frames")
        if start == stop:
            return torch.zeros((0, *self._shape), dtype=dtype)
        return self._to_tensor(*self._read_stored(start, stop), dtype)

    def frames(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Selected frames (any order, repeats allowed), e.g. a uniform subsample; one read per block."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self._num_frames):
            bad = int(idx.min() if idx.min() < 0 else idx.max())
            raise InputError(f"frame {bad} is out of range; the file has {self._num_frames} frames", where=self._label)
        out = torch.empty((len(idx), *self._shape), dtype=dtype)
        blocks = idx // self._block_frames
        for block in np.unique(blocks):
            positions = np.nonzero(blocks == block)[0]
            wanted = idx[positions]
            lo, hi = int(wanted.min()), int(wanted.max()) + 1
            features, scales = self._read_stored(lo, hi)
            rows = wanted - lo
            out[torch.from_numpy(positions)] = self._to_tensor(
                features[rows], scales[rows] if scales is not None else None, dtype)
        return out

    def verify(self) -> None:
        """Check every block's checksum now (re-checking blocks verified earlier), one block at a time."""
        self._verified.clear()
        for block in range(len(self._block_digests)):
            lo = block * self._block_frames
            self._read_stored(lo, min(lo + self._block_frames, self._num_frames))

    # -- lifetime --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the memory map (arrays already returned stay valid: they are copies)."""
        self._file = None

    def __enter__(self) -> Vidtok:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Vidtok({self._label!r}, frames={self._num_frames}, shape={self._shape}, "
                f"storage={self._storage!r})")


def looks_like_vidtok(path: str | os.PathLike) -> bool:
    """Whether a file is a .vidtok whatever its name (its safetensors header names our format first)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8 + 256)
    except OSError:
        return False
    return len(head) > 8 and head[8:].lstrip().startswith(b'{"__metadata__":{"format":"' + FORMAT_NAME.encode() + b'"')


def open_vidtok(path: str | os.PathLike) -> Vidtok:
    """Open a ``.vidtok`` for reading (metadata and timestamps now, features lazily)."""
    return Vidtok(path)


__all__ = [
    "BLOCK_FRAMES", "FORMAT_NAME", "FORMAT_VERSION", "STORAGE_MODES", "Vidtok", "VidtokWriter", "content_hash",
    "content_hash_spans", "check_destination", "dequantize_int8", "looks_like_vidtok", "metadata_checksum",
    "open_vidtok", "partial_dir_for", "quantize_int8", "write_vidtok",
]
