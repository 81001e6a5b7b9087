"""What a question is answered from: ``VideoInput``, a video's features (a ``.vidtok``) and the subtitles
that apply, once its preparation is materialized; and ``FeaturesInMemory``, features already at hand.

``open_input`` is the two steps at once (``prepare`` then ``materialize``) for callers that plan nothing
before the features exist.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError
from ..core.fileio import Closing
from ..core.options import AskOptions
from ..features.vidtok import Vidtok
from ..media import subtitles as subs
from .planning import Frames
from .prepare import cache_path_for, input_key, video_duration  # noqa: F401  (re-exported)


@dataclass
class VideoInput(Frames, Closing):
    """A video ready for questions: its features (a ``.vidtok``), and the subtitles to use."""

    source: str
    features: Vidtok
    subtitle_lines: list[subs.SubtitleLine]
    encoded: bool = False  # the features were computed now, not found in the cache
    cache_entry: Path | None = None
    video_path: Path | None = None  # the video the features came from, when it is at hand (not a .vidtok)
    _tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def timestamps(self) -> np.ndarray:
        return self.features.timestamps


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


class FrameView(Frames):
    """Some stored frames of an input and frames taken from its video at more frames per second, in time
    order, read like one input (look-closer's pass 2): ``features``, ``timestamps``, ``frame_subtitles``.
    ``positions``: each frame's position in the input's features (-1: a frame taken from the video)."""

    def __init__(self, base, positions: Sequence[int], extra_times: Sequence[float] = (), extra_features=None):
        times = np.asarray(base.timestamps, dtype=np.float64)
        items = [(float(times[p]), int(p), -1) for p in positions]
        items += [(float(t), -1, k) for k, t in enumerate(extra_times)]
        items.sort()
        self.source = base.source
        self.subtitle_lines = list(base.subtitle_lines)
        self.timestamps = np.asarray([t for t, _, _ in items], dtype=np.float64)
        self.positions = np.asarray([p for _, p, _ in items], dtype=np.int64)
        self.step = float(base.step)
        self.is_image = bool(getattr(base, "is_image", False))
        self.duration = float(getattr(base, "duration", self.timestamps[-1] if len(items) else 0.0))
        self.features = _ViewFeatures(base.features, [(p, k) for _, p, k in items], extra_features)


class _ViewFeatures:
    """A ``FrameView``'s features: each frame from the stored features or from the extra ones."""

    def __init__(self, stored, picks: list[tuple[int, int]], extra):
        self.stored, self.picks, self.extra = stored, picks, extra

    def __len__(self) -> int:
        return len(self.picks)

    def features(self, start: int = 0, stop: int | None = None, *, dtype=None):
        return self.frames(range(start, len(self.picks) if stop is None else stop), dtype=dtype)

    def frames(self, indices: Sequence[int], dtype=None):
        import torch

        picks = [self.picks[int(i)] for i in indices]
        stored = [p for p, _ in picks if p >= 0]
        got = self.stored.frames(stored, dtype=dtype) if stored else None
        out, s = [], 0
        for p, k in picks:
            if p >= 0:
                out.append(got[s])
                s += 1
            else:
                out.append(self.extra[k] if dtype is None else self.extra[k].to(dtype))
        return torch.stack(out)


def open_input(model, source: str | os.PathLike, options: AskOptions = AskOptions(), *,
               callbacks: Callbacks = NO_CALLBACKS) -> VideoInput:
    """A video, image or .vidtok, ready for this model's questions (encoding a video if needed): ``prepare``
    and ``materialize`` at once. To refuse a question that cannot be answered before encoding, plan it in
    between (``llamavid.tasks.qa.answer_about`` does)."""
    from .materialize import materialize
    from .prepare import prepare

    with prepare(model, source, options, callbacks=callbacks) as prepared:
        return materialize(model, prepared, callbacks=callbacks)
