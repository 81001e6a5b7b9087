"""What a question is asked about: a video (encoded once into the user cache), an image, or a ``.vidtok``.

A video's features are kept in the user cache under its content hash, the vision encoder and the frame
rate, so the next question about the same file starts at once: the file is hashed (sampled bytes, fast)
and the cache entry opened and checked, and nothing else is read. Only a video that is not cached yet is
probed (once) and encoded, under the encoder's lock on the entry (``llamavid.core.locking``), so two processes
asking about the same new video encode it once. A cache entry that fails its checksums is encoded again,
with a warning, never used.

Subtitles are what they are now, not when the video was cached: ``--subtitles FILE`` if given, else a
sidecar ``NAME.srt`` beside the video, else the stream embedded in the video (stored at encode time).

A question about part of a video (``--start``/``--end``) uses the whole video's cache entry when there
is one, and a ``.vidtok`` as it is: both are sliced by the planner, nothing is encoded again. A video
not cached yet is encoded for that range only, into its own cache entry (keyed by the range). Frame
times are always seconds from the start of the whole video.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..media import subtitles as subs
from ..media import video
from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..model.checkpoint import user_cache_dir
from ..features.encode import EncodeOptions, encode_file, range_record
from ..core.errors import InputError, VidtokError
from ..core.fileio import Closing
from ..core.options import AskOptions
from ..media.video import frames_in_range
from .planning import check_range
from ..features.vidtok import Vidtok, content_hash, looks_like_vidtok, open_vidtok

CACHE_STORAGE = "float16"


@dataclass
class VideoInput(Closing):
    """A video ready for questions: its features (a ``.vidtok``), and the subtitles to use."""

    source: str
    features: Vidtok
    subtitle_lines: list[subs.SubtitleLine]
    encoded: bool = False  # the features were computed now, not found in the cache
    cache_entry: Path | None = None
    _tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def timestamps(self) -> np.ndarray:
        return self.features.timestamps

    @property
    def num_frames(self) -> int:
        return len(self.features)

    @property
    def step(self) -> float:
        """Seconds between sampled frames (1 / the sampling rate)."""
        return 1.0 / float(self.features.fps)

    @property
    def is_image(self) -> bool:
        return bool(self.features.source.get("is_image"))

    @property
    def duration(self) -> float:
        """The whole video's length in seconds (as probed when it was encoded, else up to its last frame)."""
        return video_duration(self.features)

    def frame_subtitles(self, indices: Sequence[int] | None = None) -> list[str]:
        """Per-frame subtitle text for the chosen frames (all by default), by the published rule."""
        times = self.timestamps if indices is None else self.timestamps[list(indices)]
        return subs.attach_to_frames(self.subtitle_lines, times.tolist())

    def close(self) -> None:
        self.features.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class FeaturesInMemory:
    """Features already at hand (a tensor or array (T, N, C), e.g. from ``LlamaVid.encode_frames``), read
    like a ``.vidtok``: frame times default to one a second."""

    def __init__(self, features, timestamps: Sequence[float] | None = None, *, fps: float | None = None,
                 source: str = "features"):
        import torch

        self._features = torch.as_tensor(features) if not isinstance(features, torch.Tensor) else features
        n = int(self._features.shape[0])
        self.timestamps = (np.arange(n, dtype=np.float64) if timestamps is None
                           else np.asarray(timestamps, dtype=np.float64))
        if len(self.timestamps) != n:
            raise InputError(f"{len(self.timestamps)} timestamps for {n} frames of features")
        self.fps = float(fps) if fps is not None else 1.0
        self.source = {"name": source}
        self.subtitles: list = []

    def __len__(self) -> int:
        return int(self._features.shape[0])

    def features(self, start: int = 0, stop: int | None = None, *, dtype=None):
        chunk = self._features[start:stop]
        return chunk if dtype is None else chunk.to(dtype)

    def frames(self, indices: Sequence[int], dtype=None):
        chunk = self._features[list(indices)]
        return chunk if dtype is None else chunk.to(dtype)

    def close(self) -> None:
        pass


@dataclass
class PlannedTimeline:
    """A video's frames as encoding will give them, before encoding (for the context check)."""

    source: str
    timestamps: np.ndarray
    subtitle_lines: list[subs.SubtitleLine]

    def frame_subtitles(self, indices: Sequence[int] | None = None) -> list[str]:
        times = self.timestamps if indices is None else self.timestamps[list(indices)]
        return subs.attach_to_frames(self.subtitle_lines, times.tolist())


def cache_path_for(source_hash: str, encoder_fingerprint: str, fps: float,
                   time_range: tuple[float, float] | None = None) -> Path:
    """Where the features of a video (or of the part ``time_range`` of it) live in the user cache."""
    key = f"{source_hash.split(':')[-1][:24]}-{encoder_fingerprint.split(':')[-1][:12]}-fps{fps:g}"
    if time_range is not None:
        start, end = time_range
        key += f"-from{start:g}" + ("" if end == float("inf") else f"-to{end:g}")
    return user_cache_dir() / "vidtok" / f"{key}.vidtok"


def input_key(options: AskOptions) -> tuple:
    """The options ``open_input`` reads: inputs opened with equal keys are the same (a server shares them)."""
    return (options.fps, options.subtitles, options.cache, options.time_range)


def video_duration(features: Vidtok) -> float:
    """A token file's video length: the probed duration, else its last frame's time plus one step."""
    duration = features.source.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
        return float(duration)
    stamps = features.timestamps
    return float(stamps[-1]) + 1.0 / float(features.fps) if len(stamps) else 0.0


def open_input(
    model,
    source: str | os.PathLike,
    options: AskOptions = AskOptions(),
    *,
    callbacks: Callbacks = NO_CALLBACKS,
    check: Callable[[PlannedTimeline], object] | None = None,
) -> VideoInput:
    """A video, image or .vidtok, ready for this model's questions (encoding a video if needed).

    ``check`` sees the frames a video will have before it is encoded, so that a question that cannot
    be answered is refused before minutes of encoding (the ask path passes its planner).
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if path.is_dir():
        raise InputError(f"{source}: is a directory")
    explicit = subs.load_srt(options.subtitles, callbacks.warning) if options.subtitles is not None else None
    if path.suffix.lower() == ".vidtok" or looks_like_vidtok(path):
        features = open_vidtok(path)
        try:
            features.check_encoder(model.vision_identity()["fingerprint"])
            check_range(str(source), options.time_range, duration=video_duration(features),
                        is_image=bool(features.source.get("is_image")))
        except BaseException:
            features.close()
            raise
        lines = explicit if explicit is not None else [subs.SubtitleLine(*l) for l in features.subtitles]
        return VideoInput(str(source), features, lines)

    fingerprint = model.vision_identity()["fingerprint"]
    source_hash = content_hash(path)
    tmpdir = None
    features = None
    part = options.time_range
    if options.cache:
        entry = cache_path_for(source_hash, fingerprint, options.fps)
        features = _open_cache_entry(entry, source_hash, fingerprint, options.fps)  # None: encode (again)
        if features is not None or entry.is_file():
            part = None  # the whole video is cached (or its damaged entry is about to be redone): slice it
        elif part is not None:
            entry = cache_path_for(source_hash, fingerprint, options.fps, part)
            features = _open_cache_entry(entry, source_hash, fingerprint, options.fps, part)
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="llamavid-")
        entry = Path(tmpdir.name) / (path.stem + ".vidtok")
    encoded = False
    try:
        if features is not None:
            check_range(str(source), options.time_range, duration=video_duration(features),
                        is_image=bool(features.source.get("is_image")))
        else:
            info = video.probe(path)
            check_range(str(source), options.time_range, duration=info.duration, is_image=info.is_image)
            if check is not None:
                planned = np.asarray(video.sample_times(info, options.fps), dtype=np.float64)
                if part is not None:
                    planned = planned[frames_in_range(planned, part)]
                now = explicit if explicit is not None else _sidecar_lines(path, callbacks)
                check(PlannedTimeline(str(source), planned, now or []))
            entry.parent.mkdir(parents=True, exist_ok=True)
            # under the entry's lock: a damaged entry is encoded again (with a warning), a concurrent
            # encoding of the same video is waited for and reused
            result = encode_file(model.vision_encoder, path, entry,
                                 EncodeOptions(fps=options.fps, subtitles=options.subtitles, storage=CACHE_STORAGE,
                                               time_range=part),
                                 on_progress=callbacks.progress, on_warning=callbacks.warning, on_wait=callbacks.status,
                                 info=info, source_hash=source_hash)
            encoded = result.status != "skipped"
            features = open_vidtok(entry)
        where = entry if options.cache else "a temporary file"
        callbacks.say(f"encoded {len(features)} frames into {where}" if encoded else f"using cached features {where}")
        lines = explicit if explicit is not None else _current_lines(path, features, callbacks)
    except BaseException:
        if features is not None:
            features.close()
        if tmpdir is not None:
            tmpdir.cleanup()
        raise
    return VideoInput(str(source), features, lines, encoded=encoded, cache_entry=entry if options.cache else None,
                      _tmpdir=tmpdir)


def _open_cache_entry(entry: Path, source_hash: str, fingerprint: str, fps: float,
                      time_range: tuple[float, float] | None = None) -> Vidtok | None:
    """The cache entry, opened and verified, when it is whole and made for this job (this range of the
    video, None: all of it); else None."""
    if not entry.is_file():
        return None
    try:
        features = open_vidtok(entry)
    except VidtokError:
        return None
    try:
        same = (features.source.get("content_hash") == source_hash and features.encoder.get("fingerprint") == fingerprint
                and abs(features.fps - fps) < 1e-9 and features.storage == CACHE_STORAGE
                and features.source.get("range") == range_record(time_range))
        if same:
            features.verify()  # blocks stay verified: answering reads them without hashing again
            return features
    except VidtokError:
        pass
    features.close()
    return None


def _sidecar_lines(path: Path, callbacks: Callbacks) -> list[subs.SubtitleLine] | None:
    sidecar = subs.find_sidecar(path)
    return subs.load_srt(sidecar, callbacks.warning) if sidecar is not None else None


def _current_lines(path: Path, features: Vidtok, callbacks: Callbacks) -> list[subs.SubtitleLine]:
    """A sidecar .srt as it is now; else the embedded stream stored at encode time; else none."""
    sidecar = _sidecar_lines(path, callbacks)
    if sidecar is not None:
        return sidecar
    stored_from = str(features.source.get("subtitles") or "")
    if stored_from.lower().endswith(".srt"):  # came from a file that is no longer beside the video
        return []
    return [subs.SubtitleLine(*line) for line in features.subtitles]
