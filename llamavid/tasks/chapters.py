"""Chapters: where a video changes, found in its stored vision features, then a title and a summary of
each part from the model.

Boundaries need no model and no decoding, only the features already in the ``.vidtok``:

1. Each frame's patch grid is average-pooled into ``GRID`` x ``GRID`` cells (4 x 4: cells of 4 x 4 patches
   for a 16 x 16 grid; the class token left out; features of another layout are averaged over their
   tokens into one cell).
2. At every point between two frames, for every cell: the RMS distance between a frame before and a
   frame after, for the pairs of each of the ``WINDOW`` (2) frames before with each frame of the next
   ``reach`` and each frame of the last ``reach`` with each of the ``WINDOW`` frames after, where ``reach``
   is the shortest chapter (below) in frames; the smallest of those distances. So a change counts only
   when the look before does not come back within the shortest chapter and the look after was not
   there within it: one odd frame, a flash, a picture that flickers between two looks score nothing.
   Then the largest over the cells, so that a change in one region counts as much as a change of the
   whole picture (a new object on the same backdrop, not only a new backdrop). In units of the cells' RMS
   over the video, so that the rule does not depend on the encoder's scale.
3. A chapter starts where that change is the largest within the shortest chapter on either side, at
   least ``MIN_CHANGE`` (a still video gets no chapters) and at least ``THRESHOLD`` times the video's lower
   quartile of changes (a video that changes all the time gets only what stands out; the lower quartile,
   not the median, so that a short clip that changes at most of its frames still has a usual change).
   The shortest chapter is ``MIN_SECONDS`` (video sites ask for at least 10 s), or ``MIN_FRACTION`` of the
   video when that is shorter: a 9-s clip of three shapes gets three chapters. The first chapter must be
   that long, the last half that. The boundary's time is halfway between the last frame before the
   change and the first frame after it.

How it was chosen (training split only; held-out figures in docs/RESULTS.md): 60 scene clips (backdrop
changes), 60 content clips (one backdrop; at each change a new shape, of any size and place, replaces
the old), 12 three-shape sequences of 9 s and a one-hour video of 12 slowly moving scenes, all encoded by
the demo model; and, watched but not a goal, 60 content clips whose changes are also a shape joining the
one on screen or one of two leaving. Each candidate's ``MIN_CHANGE`` was set where the worst of (scene
changes found, scene boundaries real, content changes found, content boundaries real, sequences with
three right chapters) was best, with no false boundary in the hour; the other constants as below.
Found / real (within 1 s):

    candidate (MIN_CHANGE)                    scenes       content      sequences  hour:      joins and
                                                                                   in-scene   leaves too
    the previous rule (token mean, 1 frame    99.1 / 98.2  86.4 / 92.9    0%       0.27       70.3 / 86.5
      each side, 8 x median, 0.3, 10 s)
    token mean, 1 frame each side (0.45)      100 / 99.1   92.0 / 92.0  100%       0.27       69.4 / 84.3
    token mean, 2 x 2 frame pairs (0.4)       100 / 98.6   91.5 / 91.5  100%       0.27       71.8 / 85.7
    4 x 4 cells, max, 1 frame each side (.45) 100 / 98.6   95.3 / 93.1  100%       0.27       82.8 / 86.5
    4 x 4 cells, max, 2 x 2 pairs (0.45)      100 / 98.6   94.8 / 92.7  100%       0.27       83.7 / 88.8
    8 x 8 cells, max, 2 x 2 pairs (0.8)       99.1 / 97.7  96.2 / 96.7  100%       0.32       83.3 / 94.1
    token mean, pairs + return check (0.3)    100 / 100    94.8 / 97.1  100%       0.27       76.6 / 95.8
    2 x 2 cells, max, pairs + return (0.3)    100 / 100    96.7 / 96.7  100%       0.28       80.4 / 96.0
    4 x 4 cells, max, pairs + return (0.4)    100 / 100    97.7 / 98.1  100%       0.27       83.7 / 97.2
      (this rule; 0.5 below)
    8 x 8 cells, max, pairs + return (0.6)    100 / 96.9   98.1 / 97.7  100%       0.32       87.1 / 96.3
    16 x 16 patches, max, pairs + return      95.9 / 89.3  94.4 / 91.0  100%       0.70       85.6 / 86.9
      (1.0)

("return check": the look before must not come back, nor the look after have been there, within the
shortest chapter.) 8 x 8 cells find a few more joins and leaves and add a few false scene boundaries, for
four times the memory (a one-hour video of the published encoder's size: 1.3 GB of cells instead of 0.3
GB); 4 x 4 it is. ``MIN_CHANGE``: 0.4 was best on the figures above (0.35 ties), but
benchmarks/chapters.py's one-hour video of slowly moving shapes, which must get no false boundary, has an
in-scene step of 0.46 (the demo encoder changing its mind about a shape, every cell at once; the training
hour's steps reach 0.27, the previous rule's comment said up to 0.45 there): 0.5 it is, the midpoint
between that step and 0.6, where content changes found drop under 90% and one sequence in 12 loses a
chapter. At 0.5 on training: scenes 100 / 100, content 94.8 / 99.0, sequences 100%, no false boundary in
the hour; joins and leaves 75.6 / 98.1. ``THRESHOLD`` 1.25: any factor from 0 to 1.5 gives the same
figures, 2 leaves one sequence in 12 with fewer chapters. ``MIN_FRACTION`` 0.25: 0.2 gives nearly the same, 0.3
leaves a third of the sequences with fewer chapters. The price of short chapters: the 550 single parts of
the training scene and content clips, cut out as videos of their own (12-24 s of one look), get 33 false
boundaries (the previous rule, which allowed no chapter under 10 s: 4); 40 longer single looks (40-80 s)
get 8 (the previous rule: 16). What is missed: a small shape (under about 60 px across) joining another or
leaving it changes the demo encoder's features little (its tokens carry mostly the whole picture); a few
content changes lose to a jump of the features while a small shape stays on screen, and such jumps are
also the false boundaries of single looks.

Each chapter is then asked about through the usual path (``qa.answer_questions``, its frames as the
plan's candidates; a chapter too long for the context is described from frames spread evenly): a short
title and a summary. The terminal output is the chapter list video sites accept: ``00:00 Title`` lines,
the first at the start of the video (or of ``--start``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
GRID = 4  # each frame's patch grid is pooled into GRID x GRID cells, so that a change in one region counts
WINDOW = 2  # frames on each side of a point, each compared with the frames of the shortest chapter beyond
MIN_CHANGE = 0.5  # a boundary's change must be at least this (in units of the cells' RMS): a still video gets no
# chapters, and the in-scene steps of a slowly moving picture never pass (benchmarks/chapters.py's one-hour video
# has one of 0.46, where the demo encoder changes its mind about a shape; the training hour's reach 0.27)
THRESHOLD = 1.25  # ... and at least this many times the video's usual change: the QUANTILE-th percentile of its
QUANTILE = 25  # changes (the lower quartile, so that a short clip that changes at most frames still has one)
MIN_SECONDS = 10.0  # shortest chapter (video sites ask for at least 10 s) ...
MIN_FRACTION = 0.25  # ... or this fraction of the video, when that is shorter (a 9-s clip can have three parts)
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
    """The chosen frames' features (all by default) pooled into cells -> (T, K, C) float32.

    Tokens laid out as a class token and a square patch grid (``1 + g * g``, the EVA layout) are pooled
    into ``GRID x GRID`` cells of the grid (row-major; the class token left out); any other layout is
    averaged over all its tokens (K = 1). A contiguous stretch is read ``read_frames`` at a time (a
    ``.vidtok`` checks each block's checksum as it is read, and float16 features are pooled without a
    float32 copy of the block).
    """
    indices = list(range(len(features))) if indices is None else [int(i) for i in indices]
    if not indices:
        return np.zeros((0, 1, 0), dtype=np.float32)
    lo, hi = indices[0], indices[-1] + 1
    if indices != list(range(lo, hi)):
        picked = (features.frames(indices) if hasattr(features, "frames")
                  else torch.as_tensor(np.asarray(features)[indices]))
        return pool_cells(picked).numpy()
    parts = [pool_cells(_read(features, a, min(hi, a + read_frames))).numpy() for a in range(lo, hi, read_frames)]
    return np.concatenate(parts)


def pool_cells(block: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """(n, N, C) features -> (n, K, C) float32 cells: the patch grid average-pooled into ``grid x grid``
    cells (row-major; ``adaptive_avg_pool2d``'s cells where the grid does not divide evenly) when the tokens
    are a class token and a square grid of at least ``grid x grid`` patches, else the mean over all tokens
    (K = 1). Float16 features are pooled as they are (float32 sums, no float32 copy of the block)."""
    n, tokens, channels = block.shape
    side = math.isqrt(max(tokens - 1, 0))
    if tokens < 2 or side * side != tokens - 1 or side < grid:
        return block.mean(dim=1, keepdim=True, dtype=torch.float32)
    patches = block[:, 1:].reshape(n, side, side, channels).permute(0, 3, 1, 2)  # a view, channels last
    cells = F.adaptive_avg_pool2d(patches, grid)  # (n, C, grid, grid)
    return cells.permute(0, 2, 3, 1).reshape(n, grid * grid, channels).float()


def _read(features, start: int, stop: int) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features[start:stop]
    if isinstance(features, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(features[start:stop]))
    half = getattr(features, "storage", None) == "float16"
    return features.features(start, stop, dtype=torch.float16 if half else torch.float32)


def change_scores(vectors: np.ndarray, window: int = WINDOW, reach: int | None = None, *,
                  chunk: int = 512) -> np.ndarray:
    """For every point i between frame i-1 and frame i (i = 1 .. T-1): how much the picture changes there.

    ``vectors``: (T, K, C) cells from ``frame_vectors`` (or (T, C), one cell per frame). For every cell,
    the RMS distance between a frame before and a frame after, over the pairs: each of the ``window``
    frames before with each of the ``reach`` frames after, and each of the ``reach`` frames before with
    each of the ``window`` frames after (``reach``: ``window`` unless given; ``find_boundaries`` passes
    the shortest chapter, in frames). The smallest of those distances: a change counts only when the
    look before does not come back within ``reach`` and the look after was not there within ``reach``
    (one odd frame, a flash, a picture that flickers between two looks score nothing). Then the largest
    over the cells, so that a change in one region counts; divided by the RMS of all the cells (the rule
    does not depend on the encoder's scale). The first entry, before frame 0, is 0.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, None, :]
    t = len(x)
    scores = np.zeros(t, dtype=np.float64)
    if t < 2:
        return scores
    reach = window if reach is None else max(1, int(reach))
    pairs = ({(back, ahead) for back in range(1, window + 1) for ahead in range(reach)}
             | {(back, ahead) for back in range(1, reach + 1) for ahead in range(window)})
    square = sum(float(np.sum(np.square(x[a:a + chunk], dtype=np.float64))) for a in range(0, t, chunk))
    scale = max(float(np.sqrt(square / max(x.size, 1))), 1e-12)
    least = np.full((t, x.shape[1]), np.inf, dtype=np.float32)
    for lag in sorted({back + ahead for back, ahead in pairs}):
        if lag >= t:
            continue
        # distance[j]: per cell, between frame j and frame j + lag
        distance = np.concatenate([np.sqrt(np.mean(np.square(x[a + lag:b + lag] - x[a:b]), axis=2))
                                   for a, b in ((a, min(t - lag, a + chunk)) for a in range(0, t - lag, chunk))])
        for back, ahead in pairs:
            if back + ahead != lag:
                continue
            lo, hi = back, t - ahead  # points i with frame i - back and frame i + ahead in the video
            np.minimum(least[lo:hi], distance[lo - back:hi - back], out=least[lo:hi])
    scores[1:] = least[1:].max(axis=1) / scale
    return scores


def find_boundaries(timestamps: Sequence[float], vectors: np.ndarray, *, min_seconds: float = MIN_SECONDS,
                    threshold: float = THRESHOLD, min_change: float = MIN_CHANGE) -> list[int]:
    """Positions i (1 .. T-1) where a new chapter starts at frame i, in order (see the module docstring).

    ``vectors``: (T, K, C) cells from ``frame_vectors``, or (T, C). The shortest chapter is ``min_seconds``,
    or ``MIN_FRACTION`` of the frames' span when that is shorter; a look that comes back within it is no
    new chapter."""
    times = np.asarray(timestamps, dtype=np.float64)
    if len(times) < 2:
        return []
    start, end = float(times[0]), float(times[-1])
    shortest = min(min_seconds, MIN_FRACTION * (end - start))
    step = float(np.median(np.diff(times)))
    reach = max(1, int(round(shortest / step))) if step > 0 else WINDOW
    scores = change_scores(vectors, reach=reach)
    floor = max(min_change, threshold * float(np.percentile(scores[1:], QUANTILE)))
    cut_times = (times[:-1] + times[1:]) / 2  # cut_times[i - 1]: the time of a boundary before frame i
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        i = int(i)
        if i == 0 or scores[i] < floor:
            break  # in order of change: none of the rest stands out either
        t = cut_times[i - 1]
        if t - start < shortest or end - t < shortest * 0.5:
            continue  # a first or last chapter too short to stand alone
        if any(abs(t - cut_times[j - 1]) < shortest for j in chosen):
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
           "find_boundaries", "frame_vectors", "make_chapters", "pool_cells", "short_title"]
