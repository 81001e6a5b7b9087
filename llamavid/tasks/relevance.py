"""Relevance: how much each frame of a video matters to a question, before it is answered.

Pass 1 of look-closer (``ask --look-closer``, llamavid.tasks.qa) and a library call of its own
(``score_frames`` on an open input, ``relevance`` on a path): per frame a score, higher = more relevant,
comparable between the frames of one call. Scorers (``SCORERS``):

* ``tokens`` (the default, chosen by measurement: docs/RESULTS.md, "Look closer"): the token generator's
  own text-guided attention, no LLM. Every frame's context token is the question's 32 queries attending
  over the frame's patches; the score is the log of that softmax's normaliser (the log-sum-exp of the
  queries' scores over the patches, averaged over the queries): high when some patch matches what the
  question asks about. It costs the QFormer over the frames (what the frames' tokens cost anyway) and
  runs in chunks of ``CHUNK_FRAMES`` frames, so a video of any length is scored, whatever the context.
* ``attention``: the LLM's attention from a first answer to each frame (what ``ask --evidence``
  measures). The frames go in contiguous chunks that each fit the model's context; in each, a short
  greedy answer is generated and the attention of the positions that predict it to each frame's tokens
  is summed (not normalised per chunk, so chunks compare). It costs an LLM pass over every frame;
  ``max_chunks`` bounds that: a video that needs more chunks is scored on a subsample spread evenly
  (``FrameScores.positions`` says which frames were scored).

A search over many files can call ``score_frames`` per file; scores of different files compare for the
``tokens`` scorer (the same question's queries against each frame's patches).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError
from ..core.options import AskOptions
from ..model.generation import generate
from ..model.likelihood import PromptScorer, empty_cache
from ..pipeline.planning import most_frames, plan_question, resolve_long_video, uniform_indices
from .evidence import scored_answer

SCORERS = ("tokens", "attention")
DEFAULT_SCORER = "tokens"
CHUNK_FRAMES = 64  # frames through the QFormer at a time (the tokens scorer)
FIRST_ANSWER_TOKENS = 8  # the attention scorer's first answer, per chunk


@dataclass(frozen=True)
class FrameScores:
    """Per scored frame: its position in the features, its time and its relevance (higher = more)."""

    positions: np.ndarray
    timestamps: np.ndarray
    scores: np.ndarray
    scorer: str
    step: float  # seconds between sampled frames
    seconds: float = 0.0  # what scoring took

    def __len__(self) -> int:
        return len(self.positions)

    def normalised(self) -> np.ndarray:
        """The scores mapped to [0, 1] within this call (the median frame at 0, the best at 1)."""
        if not len(self.scores):
            return self.scores
        low, high = float(np.median(self.scores)), float(np.max(self.scores))
        return np.clip((self.scores - low) / max(high - low, 1e-12), 0.0, 1.0)


def score_frames(model, vin, question: str, options: AskOptions = AskOptions(), *, scorer: str = DEFAULT_SCORER,
                 positions: Sequence[int] | None = None, max_chunks: int | None = None,
                 callbacks: Callbacks = NO_CALLBACKS) -> FrameScores:
    """Every frame's relevance to ``question`` (``positions``: only these frames of the features; default:
    every frame, or those in ``options``' start/end). ``vin``: an open input (``llamavid.pipeline.inputs``:
    anything with ``features``, ``timestamps`` and ``step``). ``callbacks.progress(done, total)`` as chunks
    are scored."""
    if scorer not in SCORERS:
        raise InputError(f"relevance scorer {scorer!r}: expected one of {', '.join(SCORERS)}")
    t0 = time.perf_counter()
    if positions is None:
        from ..pipeline.planning import range_candidates

        picked = range_candidates(vin, options)
        positions = list(picked) if picked is not None else list(range(len(vin.timestamps)))
    positions = np.asarray(list(positions), dtype=np.int64)
    if len(positions) == 0:
        raise InputError("no frames to score", where=getattr(vin, "source", None))
    long_video = resolve_long_video(model, options.long)
    if scorer == "tokens":
        scores = token_scores(model, vin.features, question, positions, long_video=long_video, callbacks=callbacks)
    else:
        positions, scores = attention_scores(model, vin, question, positions, options, max_chunks=max_chunks,
                                             callbacks=callbacks)
        positions = np.asarray(positions, dtype=np.int64)
    return FrameScores(positions, np.asarray(vin.timestamps, dtype=np.float64)[positions], scores, scorer,
                       float(getattr(vin, "step", 1.0)), time.perf_counter() - t0)


def token_scores(model, features, question: str, positions: Sequence[int], *, long_video: bool,
                 statistic: str = "lse", callbacks: Callbacks = NO_CALLBACKS,
                 chunk_frames: int = CHUNK_FRAMES) -> np.ndarray:
    """The ``tokens`` scorer: the text-guided attention's log-sum-exp per frame (``LlamaVid.context_relevance``).
    ``features``: anything read like a ``.vidtok``, or a tensor (n, N, C) of pictures (a search's summaries)."""
    out = model.context_relevance(features, question, long_video=long_video, chunk_frames=chunk_frames,
                                  frame_indices=list(int(p) for p in positions), statistics=(statistic,),
                                  on_chunk=callbacks.advance)
    return out[statistic].numpy().astype(np.float64)


def attention_scores(model, vin, question: str, positions: Sequence[int], options: AskOptions, *,
                     max_chunks: int | None = None,
                     callbacks: Callbacks = NO_CALLBACKS) -> tuple[list[int], np.ndarray]:
    """The ``attention`` scorer: contiguous chunks of the frames that each fit one prompt (at most
    ``max_chunks``: then a subsample spread evenly); per chunk a short greedy answer and the attention from it
    to each frame (summed over the frame's tokens). (the frames scored, their scores)"""
    positions = [int(p) for p in positions]
    opts = options.replace(max_frames=None, start=None, end=None, strict_context=False, evidence=False, choices=None,
                           temperature=0.0, max_new_tokens=FIRST_ANSWER_TOKENS, look_closer=False)
    per_chunk = most_frames(model, vin, question, opts, candidates=positions)
    if per_chunk < 1:
        raise InputError("not even one frame fits the context beside the question", where=vin.source)
    chunks = max(1, -(-len(positions) // per_chunk))
    if max_chunks is not None and chunks > max_chunks:
        chunks = max_chunks
        positions = [positions[i] for i in uniform_indices(len(positions), chunks * per_chunk)]
    bounds = np.linspace(0, len(positions), chunks + 1).round().astype(int)
    scores = np.zeros(len(positions), dtype=np.float64)
    where = {p: i for i, p in enumerate(positions)}
    for a, b in zip(bounds[:-1], bounds[1:]):
        plan = plan_question(model, vin, question, opts, candidates=positions[a:b])
        frames = list(plan.frame_indices) if plan.frame_indices is not None else positions[a:b]
        [embeds] = model.prompt_embeddings(vin.features, [plan.prompt], frame_indices=frames)
        cache = empty_cache(model)
        [answer] = generate(model, [embeds], [plan.prompt], sampling=plan.sampling, max_new=plan.max_new,
                            cache_mode="full", cache=cache)
        subs = vin.frame_subtitles(frames) if plan.long_video else None
        spans = model.frame_spans(plan.prompt, subs)
        weights = PromptScorer(model, embeds, spans[-1][1], cache=cache).attention(scored_answer(model, answer.text))
        for frame, (s, e) in zip(frames, spans):
            scores[where[frame]] = float(weights[s:e].sum())
        callbacks.advance(int(b), len(positions))
    return positions, scores


def relevance(model, source: str | os.PathLike, question: str, options: AskOptions | None = None, *,
              scorer: str = DEFAULT_SCORER, callbacks: Callbacks = NO_CALLBACKS) -> FrameScores:
    """``score_frames`` on a video, image or ``.vidtok`` (encoded through the cache like ``ask``)."""
    from ..pipeline.inputs import open_input

    options = options or AskOptions()
    with open_input(model, source, options, callbacks=callbacks) as vin:
        return score_frames(model, vin, question, options, scorer=scorer, callbacks=callbacks)


__all__ = ["DEFAULT_SCORER", "SCORERS", "FrameScores", "attention_scores", "relevance", "score_frames",
           "token_scores"]
