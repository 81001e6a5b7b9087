"""Evidence: the time ranges of the video that an answer rests on, best first.

Every frame is its own pair of tokens in the LLM's prompt, so what the model makes of each frame can be
measured. Three methods, all through the one teacher-forced scorer (``likelihood.PromptScorer``), all
measured on the very prompt (visual tokens included) that the answer was generated from:

* ``attention`` (the default): the LLM's attention from the positions that predict the answer's tokens
  (the last prompt token and the answer fed back) to each frame's tokens, averaged over layers and
  heads. One pass of those few positions with eager attention (sdpa returns no weights) on the KV cache
  that generating the answer left behind: the video is not computed again.
* ``sufficiency``: the answer's likelihood when the prompt keeps ONLY a stretch of frames (the others'
  tokens, and in the long-video prompt their subtitle text, are left out, as if the video were just that
  stretch). It asks "does this part alone give this answer?", so a shape seen in several frames is found
  even though any one of them could be dropped. A variant costs its own tokens and the question.
* ``occlusion``: the answer's likelihood when the prompt LEAVES OUT a stretch; its drop from the full
  prompt's. A variant costs the whole video minus the stretch, and a stretch whose content is repeated
  elsewhere shows no drop.

docs/RESULTS.md compares them on held-out clips (accuracy and cost); attention and sufficiency localise
equally well there, and attention costs a fraction of an answer, so it is the default.

Ranges come from stretch scores the same way for every method: stretches are scored (attention: every
frame at once; the others: every frame of a video of up to ``SEGMENTS`` frames, and for a longer one
``SEGMENTS`` contiguous segments, the best ``REFINE`` of which are split again, down to single frames);
neighbouring frames that stand out (at
least ``KEEP_FRACTION`` of the way from the median frame's score to the best one's) are joined into
ranges, and each range is scored as a whole. A range's ``score``: for attention, the share of the
answer's attention to frames that lands in it; for sufficiency, exp(mean log p) of the answer's tokens
(and end token) from the range alone, the per-token probability it gives the answer; for occlusion,
the share of that per-token probability lost without it. All in [0, 1]. A range runs from its first frame's time
to its last frame's time plus one sampling step (1/fps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..model.likelihood import PromptScorer, answer_ids

METHODS = ("attention", "sufficiency", "occlusion")
DEFAULT_METHOD = "attention"
SEGMENTS = 24  # stretches scored per round
REFINE = 2  # stretches split again per round
KEEP_FRACTION = 0.5  # how far from the median frame's score to the best a frame must be to join a range
MAX_RANGES = 5
MIN_DROP = 0.01  # occlusion: a range whose absence costs the answer less than 1% is not evidence
MAX_ANSWER_TOKENS = 64  # an answer is scored on its first tokens (and its end)


@dataclass(frozen=True)
class EvidenceRange:
    """A stretch of the video (seconds from the start of the whole video) and how much the answer rests on it."""

    start: float
    end: float
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 4)}


def scored_answer(model, text: str) -> list[int]:
    """The answer's tokens that evidence is measured on: its first ``MAX_ANSWER_TOKENS`` and the end token."""
    ids = answer_ids(model, text)
    if len(ids) > MAX_ANSWER_TOKENS + 1:
        ids = ids[:MAX_ANSWER_TOKENS] + [ids[-1]]
    return ids


def find_evidence(model, embeds: torch.Tensor, prompt, answer: str, timestamps: Sequence[float], *,
                  step: float, frame_subtitles: Sequence[str] | None = None, method: str = DEFAULT_METHOD,
                  is_image: bool = False, duration: float | None = None, max_ranges: int = MAX_RANGES,
                  cache=None) -> list[EvidenceRange]:
    """The ranges that ``answer`` rests on, best first.

    ``embeds``: the prompt as the answer was generated from (``LlamaVid.prompt_embeddings``);
    ``timestamps``: the times of the prompt's frames, in order; ``step``: the sampling step (1/fps);
    ``frame_subtitles``: the subtitle text the long-video prompt was built with (counted as part of its
    frame). A still image's only range is the image itself (0-0). ``cache``: the KV cache generating the
    answer left behind (see ``likelihood.PromptScorer``); it is reused, not computed again.
    """
    if method not in METHODS:
        from ..core.errors import InputError

        raise InputError(f"evidence method {method!r}: expected one of {', '.join(METHODS)}")
    spans = model.frame_spans(prompt, frame_subtitles if prompt.long_video else None)
    times = np.asarray(timestamps, dtype=np.float64)
    if len(spans) != len(times):
        raise ValueError(f"{len(spans)} frames in the prompt but {len(times)} timestamps")
    ids = scored_answer(model, answer)
    measure = _Measure(model, embeds, spans, ids, method, cache)
    if method == "attention":  # every frame's share is known from the one pass: no search needed
        frame_scores, segments = measure.attention.copy(), {}
    else:
        frame_scores, segments = _search(measure, len(spans))
    ranges = _ranges(frame_scores, segments)
    scores = measure.final(measure.stretches(ranges)) if ranges else []
    found = []
    floor = MIN_DROP if method == "occlusion" else 0.0
    for (a, b), score in sorted(zip(ranges, scores), key=lambda x: (-x[1], x[0][1] - x[0][0], x[0][0])):
        if score <= floor:
            break
        end = 0.0 if is_image else float(times[b - 1] + step)
        if duration is not None and not is_image:
            end = min(end, max(float(duration), float(times[b - 1])))
        found.append(EvidenceRange(0.0 if is_image else float(times[a]), end, float(score)))
        if len(found) == max_ranges:
            break
    return found


class _Measure:
    """Scores stretches of frames (as [a, b) frame positions) by one method."""

    def __init__(self, model, embeds: torch.Tensor, spans: list[tuple[int, int]], ids: list[int], method: str,
                 cache=None):
        self.ids, self.method = ids, method
        length = int(embeds.shape[0])
        # which frame each prompt position belongs to (-1: text that belongs to no frame)
        self.frame_of = torch.full((length,), -1, dtype=torch.long)
        for k, (s, e) in enumerate(spans):
            self.frame_of[s:e] = k
        first, last = spans[0][0], spans[-1][1]
        # occlusion and sufficiency recompute from the first frame on; attention keeps the video in the cache
        self.scorer = PromptScorer(model, embeds, last if method == "attention" else first, cache=cache)
        self.base = self.scorer.score([ids])[0].mean if method == "occlusion" else None
        if method == "attention":
            weights = self.scorer.attention(ids)
            per_frame = np.array([float(weights[s:e].sum()) for s, e in spans])
            self.attention = per_frame / max(float(per_frame.sum()), 1e-12)

    def stretches(self, stretches: list[tuple[int, int]]) -> np.ndarray:
        """Each stretch's raw score: mean log p(answer) from it alone (sufficiency), its drop without it
        (occlusion), or its share of the attention."""
        if self.method == "attention":
            return np.array([float(self.attention[a:b].sum()) for a, b in stretches])
        frames = self.frame_of >= 0
        masks = []
        for a, b in stretches:
            inside = (self.frame_of >= a) & (self.frame_of < b)
            masks.append(frames & ~inside if self.method == "sufficiency" else inside)
        scored = np.array([s.mean for s in self.scorer.score([self.ids] * len(stretches), hide=masks)])
        return scored if self.method == "sufficiency" else self.base - scored

    def final(self, raw: np.ndarray) -> list[float]:
        """Raw range scores -> the reported ones, in [0, 1]."""
        if self.method == "attention":
            return [float(x) for x in raw]
        if self.method == "sufficiency":
            return [math.exp(min(0.0, float(x))) for x in raw]
        return [1.0 - math.exp(-max(0.0, float(x))) for x in raw]


def _split(a: int, b: int, parts: int) -> list[tuple[int, int]]:
    """[a, b) cut into at most ``parts`` contiguous stretches of near-equal length."""
    edges = np.unique(np.linspace(a, b, min(parts, b - a) + 1).round().astype(int))
    return [(int(x), int(y)) for x, y in zip(edges[:-1], edges[1:])]


def _search(measure: _Measure, n: int) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """Coarse to fine: per-frame scores where the search went down to single frames (NaN elsewhere),
    and the stretches left coarse with their scores."""
    frame = np.full(n, np.nan)
    coarse: dict[tuple[int, int], float] = {}
    todo = _split(0, n, SEGMENTS)
    while todo:
        scores = measure.stretches(todo)
        wider = []
        for (a, b), s in zip(todo, scores):
            if b - a == 1:
                frame[a] = s
            else:
                coarse[(a, b)] = float(s)
                wider.append(((a, b), float(s)))
        wider.sort(key=lambda x: -x[1])
        todo = []
        for a, b in [ab for ab, _ in wider[:REFINE]]:
            del coarse[(a, b)]
            todo += _split(a, b, SEGMENTS)
    return frame, coarse


def _ranges(frame: np.ndarray, coarse: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """Runs of neighbouring single frames that stand out (at least KEEP_FRACTION of the way from the
    median score to the best), plus the coarse stretches that score as well as such a frame."""
    known = ~np.isnan(frame)
    if not known.any():
        return list(coarse)
    values = frame[known]
    best, median = float(values.max()), float(np.median(np.concatenate([values, list(coarse.values())])))
    bar = median + KEEP_FRACTION * (best - median)
    strong = known & (np.nan_to_num(frame, nan=-np.inf) >= bar)
    out = [ab for ab, s in coarse.items() if s >= bar and s > median]
    i = 0
    while i < len(frame):
        if strong[i]:
            j = i
            while j + 1 < len(frame) and strong[j + 1]:
                j += 1
            out.append((i, j + 1))
            i = j + 1
        else:
            i += 1
    return out


def format_ranges(ranges: Sequence[EvidenceRange]) -> str:
    """``00:24-00:30 (0.82), 01:10-01:12 (0.31)`` (hours shown when the video has them)."""
    from ..core.timecode import format_clock

    if not ranges:
        return "none"
    long = any(r.end >= 3600 for r in ranges)
    return ", ".join(f"{format_clock(r.start, hours=long)}-{format_clock(r.end, hours=long, up=True)} ({r.score:.2f})"
                     for r in ranges)


__all__ = ["DEFAULT_METHOD", "METHODS", "EvidenceRange", "find_evidence", "format_ranges", "scored_answer"]
