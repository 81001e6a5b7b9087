"""Chapters: where a video changes, found in its stored vision features, then a title and a summary of
each part from the model.

Boundaries need no model and no decoding: every frame's features (already in the ``.vidtok``) are
averaged over their tokens into one vector, and at every point between two frames the mean of the
``WINDOW`` frames after is compared with the mean of the ``WINDOW`` frames before (RMS distance, in units
of the features' own RMS, so that the rule does not depend on the encoder's scale). A chapter starts
where that change is the largest within ``min_seconds`` on either side and stands out from the video's
usual change: at least ``THRESHOLD`` times its median, and at least ``MIN_CHANGE`` (so that a still
video gets no chapters). The boundary's time is halfway between the last frame before the change and
the first frame after it. (The rule and its constants were chosen on scene clips of the training split,
whose scene changes all measure 0.5 or more, and a one-hour synthetic video; docs/RESULTS.md reports the
rule on held-out clips.)

Each chapter is then asked about through the usual path (``qa.answer_questions``, its frames as the
plan's candidates; a chapter too long for the context is described from frames spread evenly): a short
title and a summary. The terminal output is the chapter list video sites accept: ``00:00 Title`` lines,
the first at the start of the video (or of ``--start``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError
from ..core.options import AskOptions
from ..core.timecode import format_clock
from ..pipeline.inputs import VideoInput
from ..pipeline.materialize import materialized
from ..pipeline.planning import plan_question, range_candidates
from ..pipeline.prepare import prepared
from .qa import Question, answer_questions

TITLE_QUESTION = "Give a short title for this part of the video."
SUMMARY_QUESTION = "Describe what happens in this part of the video."
WINDOW = 1  # frames averaged on each side of a candidate boundary
THRESHOLD = 8.0  # a boundary's change must be at least THRESHOLD times the median change ...
MIN_CHANGE = 0.3  # ... and at least this (in units of the features' RMS): a still video gets no chapters, and
# the small steps of a slowly moving picture (up to 0.45 in a one-hour synthetic video) rarely pass
MIN_SECONDS = 10.0  # shortest chapter (video sites ask for at least 10 s)
TITLE_CHARS = 60
READ_FRAMES = 256  # frames read from the token file at a time


@dataclass
class Chapter:
    start: float
    end: float
    title: str
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "title": self.title, "summary": self.summary}


@dataclass
class Chapters:
    input: str
    model: str
    chapters: list[Chapter]
    boundary_seconds: float  # time spent finding the boundaries (reading features included)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"chapters": [c.to_json() for c in self.chapters], "input": self.input, "model": self.model,
                "boundary_seconds": round(self.boundary_seconds, 3), "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------------------------------------------------
# boundaries


def frame_vectors(features, indices: Sequence[int] | None = None, *, read_frames: int = READ_FRAMES) -> np.ndarray:
    """The chosen frames' features (all by default) averaged over their tokens -> (T, C) float32.

    A contiguous stretch is read ``read_frames`` at a time (a ``.vidtok`` checks each block's checksum as
    it is read, and float16 features are averaged without a float32 copy of the block).
    """
    indices = list(range(len(features))) if indices is None else [int(i) for i in indices]
    if not indices:
        return np.zeros((0, 0), dtype=np.float32)
    lo, hi = indices[0], indices[-1] + 1
    if indices != list(range(lo, hi)):
        picked = (features.frames(indices) if hasattr(features, "frames")
                  else torch.as_tensor(np.asarray(features)[indices]))
        return picked.mean(dim=1, dtype=torch.float32).numpy()
    parts = [_read(features, a, min(hi, a + read_frames)).mean(dim=1, dtype=torch.float32).numpy()
             for a in range(lo, hi, read_frames)]
    return np.concatenate(parts)


def _read(features, start: int, stop: int) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features[start:stop]
    if isinstance(features, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(features[start:stop]))
    half = getattr(features, "storage", None) == "float16"
    return features.features(start, stop, dtype=torch.float16 if half else torch.float32)


def change_scores(vectors: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """For every point i between frame i-1 and frame i (i = 1 .. T-1): the RMS distance between the mean
    of the ``window`` frames after and the mean of the ``window`` frames before, divided by the RMS of
    the vectors (the first entry, before frame 0, is 0)."""
    t = len(vectors)
    scores = np.zeros(t, dtype=np.float64)
    if t < 2:
        return scores
    x = vectors.astype(np.float64)
    x /= max(float(np.sqrt(np.mean(x * x))), 1e-12)
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    i = np.arange(1, t)
    a, b = np.maximum(0, i - window), np.minimum(t, i + window)
    before = (csum[i] - csum[a]) / (i - a)[:, None]
    after = (csum[b] - csum[i]) / (b - i)[:, None]
    scores[1:] = np.sqrt(np.mean((after - before) ** 2, axis=1))
    return scores


def find_boundaries(timestamps: Sequence[float], vectors: np.ndarray, *, min_seconds: float = MIN_SECONDS,
                    threshold: float = THRESHOLD, min_change: float = MIN_CHANGE) -> list[int]:
    """Positions i (1 .. T-1) where a new chapter starts at frame i, in order (see the module docstring)."""
    times = np.asarray(timestamps, dtype=np.float64)
    if len(times) < 2:
        return []
    scores = change_scores(vectors)
    floor = max(min_change, threshold * float(np.median(scores[1:])))
    cut_times = (times[:-1] + times[1:]) / 2  # cut_times[i - 1]: the time of a boundary before frame i
    start, end = float(times[0]), float(times[-1])
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        i = int(i)
        if scores[i] < floor:
            break  # in order of change: none of the rest stands out either
        t = cut_times[i - 1]
        if t - start < min_seconds or end - t < min_seconds * 0.5:
            continue  # a first or last chapter too short to stand alone
        if any(abs(t - cut_times[j - 1]) < min_seconds for j in chosen):
            continue  # a stronger change nearby already starts a chapter
        chosen.append(i)
    return sorted(chosen)


# ---------------------------------------------------------------------------------------------------------
# chapters


def short_title(text: str, index: int) -> str:
    """The model's title reply as one short line: first line, no quotes or end punctuation, <= 60 characters."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "").strip()
    line = re.sub(r"^(title|chapter\s*\d*)\s*:\s*", "", line, flags=re.IGNORECASE).strip().strip("\"'").rstrip(".!:;,")
    if len(line) > TITLE_CHARS:
        cut = line[:TITLE_CHARS].rsplit(" ", 1)[0]
        line = (cut or line[:TITLE_CHARS]).rstrip(",;:") + "..."
    return line or f"Chapter {index + 1}"


def make_chapters(model, video, options: AskOptions | None = None, *,
                  min_seconds: float = MIN_SECONDS, on_chapter: Callable[[Chapter], None] | None = None,
                  callbacks: Callbacks = NO_CALLBACKS, **overrides: Any) -> Chapters:
    """Chapters of the video (or of ``start``/``end`` of it): boundaries from its features, then a title
    and a summary of each from the model. ``on_chapter`` gets each chapter as it is done.

    ``video``: a path, or an input already prepared or materialized (``llamavid.pipeline``); the range is
    checked before the video is encoded."""
    t0 = time.perf_counter()
    options = (options or AskOptions()).replace(**overrides)
    options = options.replace(strict_context=False, evidence=False, choices=None)
    with prepared(model, video, options, callbacks=callbacks) as timeline:
        if not (range_candidates(timeline, options) or range(len(timeline.timestamps))):
            raise InputError("no frames to make chapters from", where=timeline.source)
        vin, owned = materialized(model, timeline, callbacks=callbacks)
        try:
            return _make_chapters(model, vin, options, min_seconds, on_chapter, callbacks, t0)
        finally:
            if owned:
                vin.close()


def _make_chapters(model, vin: VideoInput, options: AskOptions, min_seconds: float,
                   on_chapter: Callable[[Chapter], None] | None, callbacks: Callbacks, t0: float) -> Chapters:
    frames = list(range_candidates(vin, options) or range(vin.num_frames))
    if not frames:
        raise InputError("no frames to make chapters from", where=vin.source)
    stamps = vin.timestamps[frames]
    vectors = frame_vectors(vin.features, frames)
    cuts = find_boundaries(stamps, vectors, min_seconds=min_seconds)
    boundary_seconds = time.perf_counter() - t0
    first = float(options.start) if options.start is not None else 0.0
    last = min(vin.duration, options.end) if options.end is not None else vin.duration
    last = max(last, float(stamps[-1]))
    edges = [0] + cuts + [len(frames)]
    starts = [first] + [float((stamps[i - 1] + stamps[i]) / 2) for i in cuts]
    ends = starts[1:] + [last]
    chapters: list[Chapter] = []
    left_out = False
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        members = frames[a:b]
        plans = [plan_question(model, vin, q, options, candidates=members) for q in (TITLE_QUESTION, SUMMARY_QUESTION)]
        left_out = left_out or any(p.note for p in plans)
        results = answer_questions(model, vin, [Question(TITLE_QUESTION, options), Question(SUMMARY_QUESTION, options)],
                                   plans=[dataclasses.replace(p, note=None) for p in plans])  # warned once below
        for r in results:
            if r.error is not None:
                raise r.error
        title, summary = (r.answer.text for r in results)
        chapter = Chapter(starts[k], ends[k], short_title(title, k), summary.strip())
        chapters.append(chapter)
        if on_chapter is not None:
            on_chapter(chapter)
    if left_out:
        callbacks.warn("chapters too long for the model's context were described from frames spread evenly")
    return Chapters(vin.source, model.name, chapters, boundary_seconds, time.perf_counter() - t0)


def chapter_list(chapters: Sequence[Chapter]) -> str:
    """``00:00 Title`` lines (``0:00:00`` style when the video runs past an hour), one per chapter."""
    hours = any(c.end >= 3600 for c in chapters)
    return "".join(f"{format_clock(c.start, hours=hours)} {c.title}\n" for c in chapters)


__all__ = ["Chapter", "Chapters", "SUMMARY_QUESTION", "TITLE_QUESTION", "change_scores", "chapter_list",
           "find_boundaries", "frame_vectors", "make_chapters", "short_title"]
