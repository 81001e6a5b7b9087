"""The search index of a ``.vidtok``: what a library search needs of a file that does not depend on the query,
made once per file and kept beside it as ``NAME.vidtok.index`` (a sidecar; the ``.vidtok`` is never changed).

A search ranks *stretches* of a video, not frames (``llamavid.tasks.search``). The index holds:

* the stretches: runs of frames cut where the stored features change (a new shot, a new slide; the cosine
  distance between neighbouring frames' pooled features above ``IndexSettings.change``), runs merged into
  stretches of at most ``max_seconds`` and ``max_parts`` runs, and a run longer than ``max_seconds`` cut into
  pieces;
* per stretch, a summary of what it shows: one frame of each of its runs (the middle one), each pooled to a
  ``grid`` x ``grid`` grid of its patches, and their mean class token. A query's visual relevance is the
  model's text-guided attention over that summary as if it were one picture (``LlamaVid.context_relevance``),
  so a query reads the index and never the file's features: ten hours of features are 1.6 GB for the demo
  model and 260 GB at real width; their index is about 1/40 of that at ``grid`` 4 (1/90 at real width).

The sidecar is a safetensors file (no pickle) with the tensors ``stretches`` (S, 2) int64 (first frame, frame
after the last), ``offsets`` (S + 1,) int64 (the summary frames of stretch s are ``offsets[s]:offsets[s+1]``),
``positions`` (R,) int64 (their frame positions), ``cls`` (R, C) and ``patches`` (R, grid * grid, C) float16,
and metadata ``format`` (``llamavid.search-index``), ``format_version`` (``1.0``), ``llamavid`` (JSON: the
``.vidtok``'s identity, frame count and vision encoder, the settings, a BLAKE2b-128 digest of every tensor)
and ``llamavid_checksum`` (the digest of the three, as in a ``.vidtok``). An index is used only when every
digest holds and it was made from the very ``.vidtok`` beside it (``Vidtok.identity``, which changes whenever
the file is encoded again) with the same settings; otherwise it is *stale* and made again. Writing takes
the sidecar's OS file lock and renames a whole file into place, so concurrent searches build it once and a
reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as _safetensors_bytes

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError, VidtokError
from ..core.fileio import write_bytes_atomic
from ..core.locking import LockError, exclusive
from .vidtok import Vidtok

INDEX_FORMAT = "llamavid.search-index"
INDEX_VERSION = "1.0"
INDEX_SUFFIX = ".index"
_TENSORS = ("stretches", "offsets", "positions", "cls", "patches")
READ_FRAMES = 256  # frames of features read at a time while building (memory stays flat)


@dataclass(frozen=True)
class IndexSettings:
    """How a file is cut into stretches and summarised (part of the index: other settings make it stale)."""

    max_seconds: float = 10.0  # a stretch's longest span of video time
    max_parts: int = 3  # runs of unchanged content in one stretch (frames in its summary)
    change: float = 0.02  # cosine distance between neighbouring frames that starts a new run
    grid: int = 4  # each summary frame's patches pooled to grid x grid

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise InputError(f"max_seconds={self.max_seconds!r}: must be a positive number of seconds")
        if not (isinstance(self.max_parts, int) and self.max_parts >= 1):
            raise InputError(f"max_parts={self.max_parts!r}: must be a whole number >= 1")
        if not (math.isfinite(self.change) and 0 <= self.change <= 2):
            raise InputError(f"change={self.change!r}: must be a cosine distance in [0, 2]")
        if not (isinstance(self.grid, int) and self.grid >= 1):
            raise InputError(f"grid={self.grid!r}: must be a whole number >= 1")


@dataclass
class SearchIndex:
    """A file's stretches and their summaries (see the module docstring), in memory."""

    stretches: np.ndarray  # (S, 2) int64: [first frame, frame after the last)
    offsets: np.ndarray  # (S + 1,) int64
    positions: np.ndarray  # (R,) int64
    cls: np.ndarray  # (R, C) float16
    patches: np.ndarray  # (R, grid * grid, C) float16
    identity: str  # the .vidtok's
    num_frames: int
    encoder: str  # the vision encoder's fingerprint
    settings: IndexSettings

    def __len__(self) -> int:
        return len(self.stretches)

    def parts(self) -> np.ndarray:
        """Summary frames per stretch."""
        return np.diff(self.offsets)

    def summaries(self, stretches: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The summaries of the given stretches, all with the same number of parts k, as pictures of
        1 + k * grid * grid tokens (the mean class token first, as a frame's class token), in ``dtype``
        (``torch.float16``, as stored, leaves the conversion to the model's device)."""
        counts = self.parts()[stretches]
        if len(stretches) and not (counts == counts[0]).all():
            raise ValueError("summaries() takes stretches with equally many parts")
        k = int(counts[0]) if len(stretches) else 0
        rows = (self.offsets[stretches][:, None] + np.arange(k)[None, :]).reshape(-1)
        cls = torch.from_numpy(self.cls[rows].astype(np.float32)).view(len(stretches), k, -1).mean(1, keepdim=True)
        patches = torch.from_numpy(self.patches[rows]).view(len(stretches), k * self.patches.shape[1], -1)
        out = torch.empty(len(stretches), 1 + patches.shape[1], patches.shape[2], dtype=dtype)
        out[:, :1] = cls
        out[:, 1:] = patches
        return out

    def part_pictures(self, rows: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Summary frames ``rows`` (indices into ``positions``), each as a picture of its own: its class token,
        then its ``grid * grid`` pooled patches -> (len(rows), 1 + grid * grid, C) in ``dtype``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = torch.empty(len(rows), 1 + self.patches.shape[1], self.patches.shape[2], dtype=dtype)
        out[:, 0] = torch.from_numpy(self.cls[rows])
        out[:, 1:] = torch.from_numpy(self.patches[rows])
        return out

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _TENSORS)


def index_path_for(vidtok_path: str | os.PathLike) -> Path:
    """Where the index of a ``.vidtok`` is kept: ``NAME.vidtok.index`` beside it."""
    p = Path(vidtok_path)
    return p.with_name(p.name + INDEX_SUFFIX)


# ---------------------------------------------------------------------------------------------------------
# building


def _descriptors(patches: torch.Tensor) -> torch.Tensor:
    """(n, P, C) patches -> (n, 4C) unit vectors: the patches pooled 2 x 2 (where a change happens matters)."""
    from ..model.tokens import pool_content

    side = int(round(patches.shape[1] ** 0.5))
    pooled = pool_content(patches, "grid:2") if side * side == patches.shape[1] and side >= 2 else \
        patches.mean(1, keepdim=True)
    flat = pooled.flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _split(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, N, C) -> (class tokens (n, C), patches (n, P, C)): with an odd N the first token is the class token."""
    if features.shape[1] % 2 == 1 and features.shape[1] > 1:
        return features[:, 0], features[:, 1:]
    return features.mean(1), features


def _pool(patches: torch.Tensor, grid: int) -> torch.Tensor:
    from ..model.tokens import pool_content

    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1] or grid > side:
        return patches.mean(1, keepdim=True).expand(-1, grid * grid, -1)
    return patches.mean(1, keepdim=True).expand(-1, 1, -1) if grid == 1 else pool_content(patches, f"grid:{grid}")


def runs_of(distances: np.ndarray, change: float) -> list[tuple[int, int]]:
    """Runs [a, b) of frames between changes: frame i + 1 starts a new run when ``distances[i] > change``."""
    n = len(distances) + 1
    cuts = [0] + [i + 1 for i in np.nonzero(distances > change)[0].tolist()] + [n]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def stretches_of(runs: list[tuple[int, int]], timestamps: np.ndarray, step: float,
                 settings: IndexSettings) -> list[list[tuple[int, int]]]:
    """Runs grouped into stretches (each a list of runs): a run longer than ``max_seconds`` is cut into pieces;
    neighbouring runs are merged while the stretch spans at most ``max_seconds`` and ``max_parts`` runs."""

    def span(a: int, b: int) -> float:
        return float(timestamps[b - 1] - timestamps[a]) + step

    pieces: list[tuple[int, int]] = []
    for a, b in runs:
        while span(a, b) > settings.max_seconds + 1e-9 and b - a > 1:
            cut = a + 1
            while cut < b and span(a, cut + 1) <= settings.max_seconds + 1e-9:
                cut += 1
            pieces.append((a, cut))
            a = cut
        pieces.append((a, b))
    out: list[list[tuple[int, int]]] = []
    for piece in pieces:
        if out and len(out[-1]) < settings.max_parts and span(out[-1][0][0], piece[1]) <= settings.max_seconds + 1e-9:
            out[-1].append(piece)
        else:
            out.append([piece])
    return out


def build_index(vt: Vidtok, settings: IndexSettings = IndexSettings(), *,
                callbacks: Callbacks = NO_CALLBACKS) -> SearchIndex:
    """Read a ``.vidtok``'s features once, ``READ_FRAMES`` at a time (every block's checksum is checked), and
    make its index. No model is needed: it works on the stored features alone."""
    n = vt.num_frames
    step = 1.0 / vt.fps
    distances = np.zeros(max(n - 1, 0), dtype=np.float64)
    previous = None
    for start in range(0, n, READ_FRAMES):
        stop = min(n, start + READ_FRAMES)
        _, patches = _split(vt.features(start, stop))
        d = _descriptors(patches)
        if previous is not None:
            d = torch.cat([previous, d])
        distances[max(start - 1, 0):stop - 1] = (1.0 - (d[1:] * d[:-1]).sum(1)).double().numpy()
        previous = d[-1:]
        callbacks.advance(stop, 2 * n)
    groups = stretches_of(runs_of(distances, settings.change), vt.timestamps, step, settings)
    stretches = np.asarray([[g[0][0], g[-1][1]] for g in groups], dtype=np.int64).reshape(-1, 2)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(g) for g in groups])
    positions = np.asarray([(a + b - 1) // 2 for g in groups for a, b in g], dtype=np.int64)
    cls_rows, patch_rows = [], []
    for start in range(0, len(positions), READ_FRAMES):
        chosen = positions[start:start + READ_FRAMES]
        cls, patches = _split(vt.frames(chosen.tolist()))
        cls_rows.append(cls.to(torch.float16).numpy())
        patch_rows.append(_pool(patches, settings.grid).to(torch.float16).numpy())
        callbacks.advance(n + int(n * min(1.0, (start + len(chosen)) / max(len(positions), 1))), 2 * n)
    width = vt.feature_shape[1]
    cls = np.concatenate(cls_rows) if cls_rows else np.zeros((0, width), np.float16)
    pooled = np.concatenate(patch_rows) if patch_rows else np.zeros((0, settings.grid ** 2, width), np.float16)
    return SearchIndex(stretches, offsets, positions, cls, pooled, vt.identity, n, vt.encoder["fingerprint"], settings)


# ---------------------------------------------------------------------------------------------------------
# the sidecar file


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


def _metadata_checksum(fmt: str, version: str, body: str) -> str:
    return hashlib.blake2b("\n".join((fmt, version, body)).encode("utf-8"), digest_size=16).hexdigest()


def index_bytes(index: SearchIndex) -> bytes:
    """The sidecar file's bytes (safetensors)."""
    tensors = {name: np.ascontiguousarray(getattr(index, name)) for name in _TENSORS}
    body = json.dumps({"vidtok": {"identity": index.identity, "num_frames": index.num_frames,
                                  "encoder": index.encoder},
                       "settings": asdict(index.settings),
                       "checksums": {name: _digest(t) for name, t in tensors.items()}}, sort_keys=True)
    metadata = {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "llamavid": body,
                "llamavid_checksum": _metadata_checksum(INDEX_FORMAT, INDEX_VERSION, body)}
    return _safetensors_bytes(tensors, metadata=metadata)


def write_index(index: SearchIndex, path: str | os.PathLike) -> None:
    """Write the sidecar atomically (a whole file appears under its name, or nothing changes)."""
    write_bytes_atomic(path, index_bytes(index))


def read_index(path: str | os.PathLike) -> SearchIndex:
    """A sidecar, every digest checked; a file that is not one, of an unknown major version, or damaged is a
    ``VidtokError`` naming it."""
    label = os.fspath(path)

    def damaged(what: str) -> VidtokError:
        return VidtokError(f"search index {what}; it will be made again", where=label)

    try:
        with safe_open(label, framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != INDEX_FORMAT:
                raise damaged("is not a llamavid search index")
            version = str(metadata.get("format_version", ""))
            if version.split(".")[0] != INDEX_VERSION.split(".")[0]:
                raise damaged(f"has format version {version!r}, which this llamavid does not read")
            body = metadata.get("llamavid", "")
            if metadata.get("llamavid_checksum") != _metadata_checksum(INDEX_FORMAT, version, body):
                raise damaged("fails its metadata checksum")
            meta = json.loads(body)
            tensors = {name: f.get_tensor(name) for name in _TENSORS}
    except VidtokError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON: the file is not a whole index
        raise damaged(f"cannot be read ({' '.join(str(exc).split())[:120]})") from None
    try:
        sums = meta["checksums"]
        if any(_digest(tensors[name]) != sums[name] for name in _TENSORS):
            raise damaged("fails its checksums")
        vid, settings = meta["vidtok"], IndexSettings(**meta["settings"])
        index = SearchIndex(tensors["stretches"], tensors["offsets"], tensors["positions"], tensors["cls"],
                            tensors["patches"], str(vid["identity"]), int(vid["num_frames"]), str(vid["encoder"]),
                            settings)
    except VidtokError:
        raise
    except (KeyError, TypeError, ValueError, InputError):
        raise damaged("has inconsistent metadata") from None
    s, o, p = index.stretches, index.offsets, index.positions
    if not (s.ndim == 2 and s.shape[1] == 2 and o.shape == (len(s) + 1,) and o[0] == 0 and o[-1] == len(p)
            and (np.diff(o) >= 1).all() and len(index.cls) == len(p) == len(index.patches)
            and (len(p) == 0 or (p.min() >= 0 and p.max() < index.num_frames))
            and (len(s) == 0 or (s[:, 0] < s[:, 1]).all() and s.min() >= 0 and s.max() <= index.num_frames)):
        raise damaged("has inconsistent tensors")
    return index


def index_for(vt: Vidtok, settings: IndexSettings = IndexSettings(), *, callbacks: Callbacks = NO_CALLBACKS,
              label: str | None = None) -> tuple[SearchIndex, str]:
    """The index of an open ``.vidtok``: the sidecar when it is whole and made from this very file with these
    settings, else made now and kept (under the sidecar's lock, written atomically). A sidecar that cannot
    be written (a read-only folder) is made for this search only, with a warning.

    Returns (the index, what happened: ``"used"``, ``"built"``, ``"rebuilt"`` (a stale or damaged sidecar was
    replaced) or ``"unsaved"``)."""
    path = index_path_for(vt.path)
    label = label or os.fspath(vt.path)

    def current() -> tuple[SearchIndex | None, bool]:
        if not path.exists():
            return None, False
        try:
            index = read_index(path)
        except VidtokError as exc:
            callbacks.warn(f"{label}{INDEX_SUFFIX}: {exc.render().split(': ', 1)[-1]}")
            return None, True
        fresh = (index.identity == vt.identity and index.num_frames == vt.num_frames
                 and index.encoder == vt.encoder["fingerprint"] and index.settings == settings)
        return (index, False) if fresh else (None, True)

    found, stale = current()
    if found is not None:
        return found, "used"
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive(path, on_wait=callbacks.say))
            found, stale_now = current()  # another search may have made it while this one waited
            if found is not None:
                return found, "used"
            stale = stale or stale_now
            writable = True
        except LockError:  # a read-only folder: no lock file, and no index kept either
            writable = False
        index = build_index(vt, settings, callbacks=callbacks)
        if writable:
            try:
                write_index(index, path)
                return index, "rebuilt" if stale else "built"
            except InputError:
                pass
        callbacks.warn(f"{label}: its search index cannot be kept beside it (the folder is not writable); "
                       "made for this search only")
        return index, "unsaved"


__all__ = ["INDEX_FORMAT", "INDEX_SUFFIX", "INDEX_VERSION", "IndexSettings", "SearchIndex", "build_index",
           "index_bytes", "index_for", "index_path_for", "read_index", "runs_of", "stretches_of", "write_index"]
