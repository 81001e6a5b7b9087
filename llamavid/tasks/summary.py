"""``summarize``: a summary of a whole video, in one piece when it fits the context, else segment by
segment followed by a merge of the segment summaries (repeated while even they do not fit)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.choices import SUMMARY_STYLES
from ..core.errors import ContextOverflowError, Opt, OptionError
from ..core.options import AskOptions
from ..core.timecode import format_clock
from ..model.generation import SamplingOptions, generate
from ..pipeline.inputs import VideoInput
from ..pipeline.materialize import materialized, timeline_held
from ..pipeline.planning import (
    Plan,
    answer_reserve,
    fits,
    most_frames,
    plan_question,
    plan_text,
    range_candidates,
    resolve_long_video,
)
from ..pipeline.prepare import prepared
from .qa import Question, answer_questions

SUMMARY_QUESTIONS = {
    "brief": "Summarize the video in two or three sentences.",
    "detailed": "Describe the video in detail: what happens, who appears, and in what order.",
}
STYLES = SUMMARY_STYLES
assert tuple(SUMMARY_QUESTIONS) == STYLES
SEGMENT_QUESTION = "Describe what happens in this part of the video."
MERGE_INSTRUCTION = ("Here are descriptions of consecutive parts of one video, in order:\n{parts}\n"
                     "Write one {style} summary of the whole video.")


@dataclass
class Segment:
    start: float
    end: float
    frames: int
    summary: str


@dataclass
class Summary:
    input: str
    style: str
    summary: str
    model: str
    frames: int
    segments: list[Segment]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fmt_time(seconds: float) -> str:
    """A segment's time as summaries write it: ``H:MM:SS``, to the nearest second."""
    return format_clock(seconds, hours=True, nearest=True)


def summarize(model, video, options: AskOptions | None = None, *, style: str = "brief",
              stream: Callable[[str], None] | None = None, on_segment: Callable[[Segment], None] | None = None,
              callbacks: Callbacks = NO_CALLBACKS, **overrides: Any) -> Summary:
    """A summary of the whole video, or of ``start``/``end`` of it (every frame: a summary leaves nothing
    out, so ``max_frames`` is ignored); a video too long for the context is cut into equal contiguous
    segments that each fit. Segment times are those of the whole video.

    ``video``: a path, or an input already prepared or materialized (``llamavid.pipeline``). Every part
    is planned before the video is encoded (a summary that cannot be made is refused first)."""
    t0 = time.perf_counter()
    if style not in SUMMARY_QUESTIONS:
        raise OptionError("style", style, f"expected one of {', '.join(STYLES)}")
    options = (options or AskOptions()).replace(strict_context=True, max_frames=None, evidence=False, choices=None,
                                                **overrides)
    with prepared(model, video, options, callbacks=callbacks) as timeline:
        whole, parts = _plan_parts(model, timeline, style, options)
        vin, owned = materialized(model, timeline, callbacks=callbacks)
        try:
            if not timeline_held(timeline, vin):
                whole, parts = _plan_parts(model, vin, style, options)
            return _summarize(model, vin, whole, parts, style, options, stream, on_segment, callbacks, t0)
        finally:
            if owned:
                vin.close()


def _plan_parts(model, timeline, style: str, options: AskOptions) -> tuple[bool, list[tuple[Plan, int, int]]]:
    """(whether the whole video fits one prompt, (plan, first, end) of each part to describe): the whole
    video (one part, the summary question), or equal contiguous segments that each fit (a segment whose
    subtitles make it too long is halved)."""
    question = SUMMARY_QUESTIONS[style]
    frames = list(range_candidates(timeline, options) or range(len(timeline.timestamps)))
    n = len(frames)
    if most_frames(model, timeline, question, options) >= n:
        return True, [(plan_question(model, timeline, question, options), 0, n)]
    fit = most_frames(model, timeline, SEGMENT_QUESTION, options)
    if fit < 1:
        raise ContextOverflowError(f"the model's context ({model.context_length} tokens) cannot hold even one frame "
                                   "and a summary", where=timeline.source, context=model.context_length, frames_fit=0)
    bounds = np.linspace(0, n, math.ceil(n / fit) + 1).round().astype(int)
    parts: list[tuple[Plan, int, int]] = []
    pending = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    while pending:
        a, b = pending.pop(0)
        try:
            parts.append((plan_question(model, timeline, SEGMENT_QUESTION, options, candidates=frames[a:b]), a, b))
        except ContextOverflowError:
            if b - a < 2:
                raise
            mid = (a + b) // 2  # this part's subtitles make it too long: halve it
            pending[:0] = [(a, mid), (mid, b)]
    return False, parts


def _summarize(model, vin: VideoInput, whole: bool, parts: list[tuple[Plan, int, int]], style: str,
               options: AskOptions,
               stream: Callable[[str], None] | None, on_segment: Callable[[Segment], None] | None,
               callbacks: Callbacks, t0: float) -> Summary:
    frames = list(range_candidates(vin, options) or range(vin.num_frames))
    stamps = vin.timestamps[frames]
    n = len(frames)
    if whole:
        text = _answer(model, vin, parts[0][0], options, stream, callbacks)
        seg = Segment(float(stamps[0]), float(stamps[-1]), n, text)
        return Summary(vin.source, style, text, model.name, n, [seg], round(time.perf_counter() - t0, 3))
    segments: list[Segment] = []
    for plan, a, b in parts:
        seg = Segment(float(stamps[a]), float(stamps[b - 1]), b - a,
                      _answer(model, vin, plan, options, None, callbacks))
        segments.append(seg)
        if on_segment:
            on_segment(seg)
    sampling = options.sampling(resolve_long_video(model, options.long))
    texts = [f"[{fmt_time(s.start)}-{fmt_time(s.end)}] {s.summary}" for s in segments]
    final = merge_summaries(model, texts, style, sampling, stream, kv_cache=options.kv_cache, callbacks=callbacks)
    return Summary(vin.source, style, final, model.name, n, segments, round(time.perf_counter() - t0, 3))


def _answer(model, vin: VideoInput, plan: Plan, options: AskOptions, stream: Callable[[str], None] | None,
            callbacks: Callbacks) -> str:
    [result] = answer_questions(model, vin, [Question(plan.question, options)], plans=[plan], callbacks=callbacks,
                                on_text=None if stream is None else (lambda _i, piece: stream(piece)))
    if result.error is not None:
        raise result.error
    return result.answer.text


def merge_summaries(model, texts: list[str], style: str, sampling: SamplingOptions,
                    stream: Callable[[str], None] | None = None, *, kv_cache: str = "auto",
                    callbacks: Callbacks = NO_CALLBACKS) -> str:
    """Merge part descriptions with text-only prompts, in groups that fit the context.

    Each part is first cut to at most half of the room the instruction leaves, so every group holds at
    least two parts and each round shrinks the list: the merge always ends, however small the context.
    """
    ctx = model.context_length
    length = lambda text: model.text_prompt(text).tokens  # noqa: E731
    room = ctx - answer_reserve(sampling) - length(MERGE_INSTRUCTION.format(parts="", style=style))
    per_part = room // 2 - 2  # "\n" joins and tokenizer boundary effects
    if per_part < 4:
        raise ContextOverflowError(f"the model's context ({ctx}) leaves no room to merge segment summaries; lower ",
                                   Opt("max_new_tokens"), context=ctx)

    def reply(prompt: str, on_text: Callable[[str], None] | None = None) -> str:
        plan = plan_text(model, prompt, sampling, kv_cache=kv_cache)
        if plan.cache_note:
            callbacks.say(plan.cache_note)
        relay = None if on_text is None else (lambda _row, piece: on_text(piece))
        [answer] = generate(model, [model.embed_prompt(plan.prompt.ids, [])], [plan.prompt], sampling=sampling,
                            max_new=plan.max_new, cache_mode=plan.cache_mode, on_text=relay)
        return answer.text

    while True:
        texts = [_trim_tokens(model, t, per_part) for t in texts]
        groups: list[list[str]] = [[]]
        for text in texts:
            trial = groups[-1] + [text]
            prompt = MERGE_INSTRUCTION.format(parts="\n".join(trial), style=style)
            if groups[-1] and not fits(ctx, length(prompt), sampling):
                groups.append([text])
            else:
                groups[-1] = trial
        if len(groups) == 1:
            return reply(MERGE_INSTRUCTION.format(parts="\n".join(groups[0]), style=style), stream)
        if len(groups) >= len(texts):
            raise ContextOverflowError("the segment summaries are too long to merge within the model's context",
                                       context=ctx)
        texts = [reply(MERGE_INSTRUCTION.format(parts="\n".join(g), style=style)) for g in groups]


def _trim_tokens(model, text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` LLM tokens (a long part description must not block the merge)."""
    ids = model.text_tokenizer.encode(text)
    return text if len(ids) <= limit else model.text_tokenizer.decode(ids[:limit])


__all__ = ["Segment", "Summary", "summarize", "merge_summaries", "fmt_time", "STYLES", "SEGMENT_QUESTION",
           "SUMMARY_QUESTIONS"]
