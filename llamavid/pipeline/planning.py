"""One plan per question: prompt style, frames, context fit and sampling, decided once.

Everything downstream (answering, batching, chat turns, summary segments) uses the ``Plan``; nothing
else decides whether a prompt fits the context. The rules:

* **Prompt style**: ``--long``/``--short`` if given, else as the model was trained (``resolve_long_video``).
* **Frames**: all frames of the video (or of ``candidates``, e.g. one summary segment), or
  ``--max-frames N`` of them spread evenly (first and last included). With ``--start``/``--end`` only
  the frames whose time t has start <= t < end are candidates (``frames_in_range``); none is an error.
* **Fit**: a prompt fits when its tokens (text + frames x tokens per frame) plus room for the answer,
  ``min(max_new_tokens, 256)`` tokens (with ``--choice``: the longest option's tokens and its end
  token, since nothing is generated), are within the model's context. When the frames do not fit, the
  plan takes the most frames that do, spread evenly, and says so in ``Plan.note``; with
  ``strict_context`` it refuses instead, naming a ``--max-frames`` that fits. A question (or a
  conversation) too long to fit with even one frame is refused with that reason.
* **Sampling**: the published defaults for the prompt style, with the options set on top.
* **Answer room**: the new tokens generation may produce, ``min(max_new_tokens, context - prompt)``.
* **KV cache**: the mode the prompt's keys and values are kept in (``kv_cache``: auto picks full precision
  when it fits the memory left, else int8, then int4; llamavid.model.kvcache). A question asking for
  evidence or choices keeps a full-precision cache (it is scored afterwards). A prompt that fits no mode
  is refused, naming a ``max_frames`` that fits. Questions answered together are one batch, whose cache
  is planned for the batch (``plan_batches``).

* **Look closer** (``look_closer``): two plans instead of one. The first is the plain plan with what pass 1
  scores (``Plan.closer``: every candidate frame, by ``CloserSettings.scorer``); once the frames are
  scored (llamavid.tasks.relevance), ``plan_closer`` makes the second from the scores: the best
  ``ranges`` ranges (the best frames with ``pad`` seconds either side), every stored frame inside them and
  more from the video at ``fps`` when it is at hand (``closer_times``), the ``key_frames`` best frames
  with ``grid`` x ``grid`` more content tokens, and the rest of the video at two tokens a frame spread
  evenly in the room left (``rest="keep"``) or left out (``"drop"``). It turns on when asked
  (``look_closer=True``) and, by default (``None``), when the frames do not fit the context
  (``AUTO_WHEN_OVERFLOW``; the measurements that set these defaults are in docs/RESULTS.md).

Refusals are ``ContextOverflowError`` / ``MemoryLimitError`` carrying their figures; options they
suggest are ``Opt`` references that each front end words (``--max-frames 12``, ``"max_frames": 12``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import torch

from ..core.errors import ContextOverflowError, InputError, MemoryLimitError, Opt
from ..core.options import SamplingOptions
from ..core.timecode import format_clock
from ..media.subtitles import attach_to_frames
from ..media.video import frames_in_range
from ..model.generation import PREFILL_CHUNK
from ..model.kvcache import CacheShape, plan_cache
from ..model.memory import SYSTEM

if TYPE_CHECKING:
    from ..core.options import AskOptions
    from ..model.modeling import LlamaVid, Prompt

ANSWER_RESERVE = 256  # answer tokens a plan keeps room for (at most max_new_tokens)


class Timeline(Protocol):
    """What planning needs of a video: its name, its frames' times and their subtitle text."""

    source: str

    @property
    def timestamps(self) -> np.ndarray: ...

    def frame_subtitles(self, indices: Sequence[int] | None = None) -> list[str]: ...


class Frames:
    """A ``Timeline`` from frame times and subtitle lines (``Prepared`` and ``VideoInput`` alike)."""

    timestamps: np.ndarray
    subtitle_lines: list

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    def frame_subtitles(self, indices: Sequence[int] | None = None) -> list[str]:
        """Per-frame subtitle text for the chosen frames (all by default), by the published rule."""
        times = self.timestamps if indices is None else self.timestamps[list(indices)]
        return attach_to_frames(self.subtitle_lines, times.tolist())


def answer_reserve(sampling: SamplingOptions) -> int:
    return max(1, min(sampling.max_new_tokens, ANSWER_RESERVE))


def answer_space(model: "LlamaVid", options: "AskOptions", sampling: SamplingOptions) -> int:
    """Tokens a plan keeps free after the prompt: room to generate the answer, or, when the answer is
    one of ``choices``, the longest option as it is scored (its tokens and the end token)."""
    if options.choices:
        from ..model.likelihood import answer_ids

        return max(len(answer_ids(model, c)) for c in options.choices)
    return answer_reserve(sampling)


def fits(context_length: int, prompt_tokens: int, sampling: SamplingOptions, reserve: int | None = None) -> bool:
    """The context rule: the prompt plus room for the answer (``reserve``, by default as sampling
    allows) are within the context."""
    return prompt_tokens + (answer_reserve(sampling) if reserve is None else reserve) <= context_length


def _seconds(t: float) -> str:
    return format_clock(t) if float(t).is_integer() else f"{t:g} s"


def check_range(source: str, time_range: tuple[float, float] | None, *, duration: float | None,
                is_image: bool = False) -> None:
    """A range must start inside the video (it may run on past the end); a still image has no times."""
    if time_range is None:
        return
    if is_image:
        raise InputError("is a still image; ", Opt("start"), "/", Opt("end"), " apply to videos", where=source)
    start, _ = time_range
    if duration is not None and start >= duration:
        raise InputError(Opt("start", format_clock(start)), " is past the end of the video "
                         f"({format_clock(duration, up=True)} long)", where=source)


def range_candidates(video: Timeline, options: "AskOptions",
                     candidates: Sequence[int] | None = None) -> Sequence[int] | None:
    """The candidate frames narrowed to ``--start``/``--end`` (unchanged when no range was asked for)."""
    if options.time_range is None:
        return candidates
    check_range(video.source, options.time_range, duration=getattr(video, "duration", None),
                is_image=bool(getattr(video, "is_image", False)))
    inside = frames_in_range(video.timestamps, options.time_range)
    if candidates is not None:
        allowed = set(int(c) for c in candidates)
        inside = [i for i in inside if i in allowed]
    if not inside:
        start, end = options.time_range
        until = "the end" if end == np.inf else _seconds(end)
        raise InputError(f"no sampled frame lies between {_seconds(start)} and {until}; widen ", Opt("start"), "/",
                         Opt("end"), " or sample more frames (", Opt("fps"), ")", where=video.source)
    return inside


def answer_room(context_length: int, prompt_tokens: int, max_new_tokens: int, *, n_frames: int,
                tokens_per_frame: int) -> int:
    """How many new tokens generation may produce; refuses a prompt that leaves no room at all.

    Plans never get here with a prompt that overflows; this refusal is the last line of defence.
    """
    room = context_length - prompt_tokens
    if room < 1:
        raise ContextOverflowError(
            f"the prompt needs {prompt_tokens} tokens ({n_frames} frames x {tokens_per_frame} tokens + text) "
            f"but the model's context holds {context_length}; sample fewer frames (", Opt("fps"), " or ",
            Opt("max_frames"), ")", needed=prompt_tokens, context=context_length)
    return min(max_new_tokens, room)


def resolve_long_video(model: "LlamaVid", flag: bool | None) -> bool:
    """The prompt style: as asked, else as the model was trained (the one place this is decided)."""
    return model.config.long_video if flag is None else bool(flag)


def uniform_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total // 2]
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, count)})


@dataclass(frozen=True)
class CloserSettings:
    """What look-closer's two passes use (defaults set by measurement, docs/RESULTS.md "Look closer")."""

    scorer: str = "tokens"  # pass 1 (llamavid.tasks.relevance.SCORERS)
    chunks: int | None = 1  # the attention scorer: at most this many context-sized chunks (None: every frame);
    # fewer than the video needs score a subsample spread evenly, and pass 2 takes every stored frame of its ranges
    ranges: int = 1  # best ranges pass 2 looks at (1 and no pad: chosen on the needle set's dev split)
    pad: float = 0.0  # seconds either side of a best frame
    fps: float = 4.0  # pass 2's sampling inside the ranges, from the video when it is at hand
    key_frames: int = 2  # best frames given in detail ...
    grid: int = 4  # ... with grid x grid more content tokens (0: no detail)
    rest: str = "drop"  # the rest of the video: "keep" (two tokens a frame, spread evenly) or "drop"
    min_score: float = 0.25  # a range's best frame is at least this far from the median frame's score to the best

    def __post_init__(self) -> None:
        if self.rest not in ("keep", "drop"):
            raise ValueError(f"rest {self.rest!r}: keep or drop")
        if self.ranges < 1 or self.pad < 0 or self.fps <= 0 or self.key_frames < 0 or self.grid < 0:
            raise ValueError(f"invalid look-closer settings {self}")


DEFAULT_CLOSER = CloserSettings()
AUTO_WHEN_OVERFLOW = False  # look_closer None: on when the frames do not fit (off by measurement: RESULTS.md)


@dataclass(frozen=True)
class LookRange:
    """A stretch pass 2 looked at: seconds from the start of the whole video, and its relevance in [0, 1]
    (its best frame's pass-1 score, the median frame at 0 and the best at 1)."""

    start: float
    end: float
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class Plan:
    """What one question about one video will use."""

    source: str
    long_video: bool
    frame_indices: tuple[int, ...] | None  # positions in the features file; None: every frame
    frames: int  # frames used
    frames_available: int  # frames the question could have used
    prompt: "Prompt"
    sampling: SamplingOptions
    note: str | None = None  # set when frames were left out to fit the context
    max_new: int = 0  # the answer room: new tokens generation may produce
    cache_mode: str = "full"  # how the prompt's KV cache is kept (for this question alone)
    cache_note: str | None = None  # set when auto chose a quantized cache
    kv_cache: str = "auto"  # the mode asked for (a batch of these plans is planned again as a whole)
    keep_cache: bool = False  # the answer is scored afterwards (evidence, choices): a full cache, kept
    text_tokens: int = 0  # the prompt's tokens that are not visual tokens
    closer: CloserSettings | None = None  # look closer: this is pass 1's plan (the plain one); pass 2 follows
    looked_at: tuple[LookRange, ...] | None = None  # pass 2's plan: the ranges it looks at
    view: Any = None  # pass 2's plan: its frames (``inputs.FrameView``); frame_indices index into it
    detail: tuple[tuple[int, int], ...] = ()  # (frame position, grid): frames given in detail

    @property
    def question(self) -> str:
        return self.prompt.question

    def batch_key(self) -> tuple:
        """Plans with equal keys may go through the model together (same frames, style, sampling, generation
        controls and cache)."""
        s = self.sampling
        key = (self.frame_indices, self.long_video, self.prompt.template, s.max_new_tokens, s.temperature,
               s.top_p, s.seed, self.kv_cache, *s.controls)
        return key if self.view is None else key + (id(self.view), self.detail)


def check_controls(model: "LlamaVid", sampling: SamplingOptions) -> None:
    """Generation controls the model can follow, checked before a question joins a batch: every token a
    ``logit_bias`` names is one of the model's, and a ``json_schema`` compiles into a grammar over its tokens."""
    if sampling.plain:
        return
    from ..model.generation import logits_size

    vocab = logits_size(model.llm)
    outside = [token for token, _ in sampling.logit_bias if token >= vocab]
    if outside:
        raise InputError(Opt("logit_bias"), f": token {outside[0]} is not in the model's vocabulary of {vocab:,} "
                         "tokens")
    if sampling.json_schema is not None:
        from ..model.constrain import schema_grammar

        schema_grammar(sampling.json_schema, model.text_tokenizer, vocab)


class _Selector:
    """Builds the prompt for n frames spread evenly over the candidate frames (memoized by n)."""

    def __init__(self, model: "LlamaVid", video: Timeline, question: str, long_video: bool,
                 candidates: Sequence[int] | None, history: Sequence[tuple[str, str]], template: str | None,
                 reserve: int, system: str | None = None):
        self.model, self.video, self.question, self.long_video = model, video, question, long_video
        self.reserve = reserve
        self.system = system
        self.candidates = list(candidates) if candidates is not None else None
        self.available = len(self.candidates) if self.candidates is not None else len(video.timestamps)
        self.history, self.template = history, template
        self._built: dict[int, tuple[tuple[int, ...] | None, "Prompt"]] = {}

    def indices(self, n: int) -> tuple[int, ...] | None:
        if self.candidates is None and n >= self.available:
            return None
        picked = uniform_indices(self.available, n)
        return tuple(self.candidates[i] for i in picked) if self.candidates is not None else tuple(picked)

    def build(self, n: int) -> tuple[tuple[int, ...] | None, "Prompt"]:
        if n not in self._built:
            sel = self.indices(n)
            subs = self.video.frame_subtitles(sel) if self.long_video else None
            prompt = self.model.prompt(self.question, n_frames=n, long_video=self.long_video, frame_subtitles=subs,
                                       history=self.history, template=self.template, system=self.system)
            self._built[n] = (sel, prompt)
        return self._built[n]


def _most_frames(sel: _Selector, ceiling: int, sampling: SamplingOptions) -> int:
    """The largest n <= ceiling whose prompt fits (0 if not even one frame does).

    The prompt grows by tokens_per_frame per frame plus text that barely depends on n (subtitles are
    attached to whichever frames are chosen), so an estimate from the full prompt is checked and then
    refined by bisection.
    """
    model = sel.model
    ctx, per = model.context_length, model.tokens_per_frame
    full = sel.build(ceiling + 1)[1]  # already built by the caller
    text_tokens = full.tokens - (ceiling + 1) * per
    guess = max(1, min(ceiling, (ctx - sel.reserve - text_tokens) // per))
    ok = lambda n: fits(ctx, sel.build(n)[1].tokens, sampling, sel.reserve)  # noqa: E731
    # invariant: n = lo fits (0 by convention), n = hi does not (ceiling + 1 by convention)
    if ok(guess):
        if guess == ceiling or not ok(guess + 1):
            return guess  # the usual case: the estimate is exact
        lo, hi = guess + 1, ceiling + 1
    else:
        lo, hi = 0, guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def plan_question(model: "LlamaVid", video: Timeline, question: str, options: "AskOptions", *,
                  candidates: Sequence[int] | None = None, history: Sequence[tuple[str, str]] = (),
                  template: str | None = None, system: str | None = None,
                  closer: CloserSettings | None = None) -> Plan:
    """The plan for one question about ``video`` (see the module docstring for the rules). ``system``: a system
    message for the prompt (``ConvTemplate.render``). With look-closer (``options.look_closer``, or by default
    when the frames do not fit), the plan is pass 1's: the plain plan with ``closer`` set (``closer``: the
    settings, default ``DEFAULT_CLOSER``)."""
    plain = options.replace(strict_context=False) if getattr(options, "look_closer", None) and \
        options.strict_context else options  # pass 2 plans its own frames: nothing to refuse here
    plan = _plan_question(model, video, question, plain, candidates=candidates, history=history,
                          template=template, system=system)
    if looks_closer(options, plan, video):
        return dataclasses.replace(plan, closer=closer or DEFAULT_CLOSER)
    return plan


def looks_closer(options: "AskOptions", plan: Plan, video: Timeline) -> bool:
    """Whether a question is answered in two passes: when asked; by default (``look_closer`` None) when its
    frames do not fit the context (``AUTO_WHEN_OVERFLOW``). Never for a still image."""
    if getattr(options, "look_closer", False) is False or bool(getattr(video, "is_image", False)):
        return False
    if options.look_closer is None:
        return AUTO_WHEN_OVERFLOW and plan.note is not None
    return plan.frames_available > 1


def _plan_question(model: "LlamaVid", video: Timeline, question: str, options: "AskOptions", *,
                   candidates: Sequence[int] | None = None, history: Sequence[tuple[str, str]] = (),
                   template: str | None = None, system: str | None = None) -> Plan:
    long_video = resolve_long_video(model, options.long)
    sampling = options.sampling(long_video)
    check_controls(model, sampling)
    reserve = answer_space(model, options, sampling)
    candidates = range_candidates(video, options, candidates)
    sel = _Selector(model, video, question, long_video, candidates, history, template, reserve, system)
    if sel.available == 0:
        raise InputError("no frames to answer from", where=video.source)
    count = min(options.max_frames, sel.available) if options.max_frames else sel.available
    indices, prompt = sel.build(count)
    ctx = model.context_length
    if fits(ctx, prompt.tokens, sampling, reserve):
        return _finish(model, options, Plan(video.source, long_video, indices, count, sel.available, prompt, sampling))
    most = _most_frames(sel, count - 1, sampling) if count > 1 else 0
    if most == 0:
        alone = sel.build(1)[1].tokens - model.tokens_per_frame
        if alone + reserve >= ctx:
            what = "the question and the conversation so far take" if history else "the question takes"
            if options.choices:  # the room kept is the longest option's: say so, not "shorten the question"
                raise ContextOverflowError(
                    f"{what} {alone} tokens, the longest option takes {reserve}, and the model's context holds "
                    f"{ctx}; shorten the options (", Opt("choices"), ") or the question",
                    needed=alone + reserve, context=ctx, frames_fit=0)
            raise ContextOverflowError(
                f"{what} {alone} tokens, the answer needs room for {reserve}, and the model's context "
                f"holds {ctx}; shorten it" + (" or start a new conversation (/reset)" if history else ""),
                needed=alone + reserve, context=ctx, frames_fit=0)
        raise ContextOverflowError(
            f"not even one frame ({model.tokens_per_frame} tokens) fits the model's {ctx}-token context beside "
            f"the prompt ({alone} tokens) and room for the answer ({reserve}); lower ", Opt("max_new_tokens"),
            where=video.source, needed=alone + model.tokens_per_frame + reserve, context=ctx, frames_fit=0)
    if options.strict_context:
        raise ContextOverflowError(
            f"{count} frames x {model.tokens_per_frame} tokens + the prompt need {prompt.tokens} tokens "
            f"(+{reserve} for the answer) but the model's context holds {ctx}; use ", Opt("max_frames", most),
            " (or a lower ", Opt("fps"), "), or leave out ", Opt("strict_context"), f" to use {most} frames spread "
            "evenly", where=video.source, needed=prompt.tokens + reserve, context=ctx, frames_fit=most)
    indices, prompt = sel.build(most)
    note = (f"{video.source}: {count} frames do not fit the model's {ctx}-token context; using {most} frames "
            f"spread evenly (strict context refuses instead)")
    return _finish(model, options, Plan(video.source, long_video, indices, most, sel.available, prompt, sampling, note))


def _finish(model: "LlamaVid", options: "AskOptions", plan: Plan) -> Plan:
    """The plan with its answer room and KV cache decided."""
    p = plan.prompt
    text_tokens = p.tokens - p.n_frames * model.tokens_per_frame
    keep = bool(options.choices or options.evidence)
    if options.choices:
        max_new = plan.sampling.max_new_tokens  # nothing is generated; the options are scored on the prompt
    else:
        max_new = answer_room(model.context_length, p.tokens, plan.sampling.max_new_tokens, n_frames=p.n_frames,
                              tokens_per_frame=model.tokens_per_frame)
    mode, note = cache_mode(model, p.tokens, new_tokens=max_new, text_tokens=text_tokens,
                            requested="full" if keep else options.kv_cache, keep=keep, asked=options.kv_cache)
    return dataclasses.replace(plan, max_new=max_new, cache_mode=mode, cache_note=note, kv_cache=options.kv_cache,
                               keep_cache=keep, text_tokens=text_tokens)


def memory_left(model: "LlamaVid") -> tuple[int | None, int | None]:
    """(bytes the KV cache may take on the model's device, bytes left in host memory for an offloaded cache)."""
    known = [x for x in (model.weights.memory_left, SYSTEM.available(model.device)) if x is not None]
    host = SYSTEM.available(torch.device("cpu")) if model.device.type == "cuda" else None
    return (min(known) if known else None), host


def cache_mode(model: "LlamaVid", tokens: int, batch: int = 1, *, new_tokens: int = 0, text_tokens: int | None = None,
               requested: str = "auto", keep: bool = False, asked: str | None = None) -> tuple[str, str | None]:
    """(the KV-cache mode for ``batch`` prompts of up to ``tokens`` tokens plus ``new_tokens`` answer tokens,
    a note when auto chose a quantized cache). ``requested``: the mode asked for ("full" where the cache is
    kept for scoring, ``keep``); a prompt that fits no mode is refused, naming a ``max_frames`` that fits
    (``text_tokens``: the prompt's tokens that are not frames)."""
    available, host = memory_left(model)
    try:
        return plan_cache(CacheShape.of(model.llm.config, model.dtype), requested, tokens=tokens + new_tokens,
                          batch=batch, chunk=PREFILL_CHUNK, device=model.device, available=available,
                          host_available=host)
    except MemoryLimitError as exc:
        if text_tokens is None:
            raise
        frames = max(0, ((exc.fit_tokens or 0) - new_tokens - text_tokens) // model.tokens_per_frame)
        advice: list[str | Opt] = ["use ", Opt("max_frames", frames)] if frames else ["no frame fits beside the text"]
        if keep:
            advice += [", or ask without ", Opt("evidence"), " / ", Opt("choices"),
                       " (they keep a full-precision cache)"]
        elif (asked or requested) in ("full", "int8"):
            advice += [", or ", Opt("kv_cache", "auto")]
        if not model.weights.bits:
            advice += [", or ", Opt("quantize", "8bit"), " / ", Opt("quantize", "4bit"),
                       " to leave more memory to the cache"]
        raise MemoryLimitError(*exc.parts, "; ", *advice, needed=exc.needed, available=exc.available,
                               fit_tokens=exc.fit_tokens) from None


@dataclass(frozen=True)
class Batch:
    """Questions that go through the QFormer together: their positions, and the answer room and KV cache of
    those among them that are generated together (the others are scored afterwards, each on its own cache)."""

    members: tuple[int, ...]
    max_new: int
    cache_mode: str
    note: str | None = None


def plan_batches(model: "LlamaVid", plans: Sequence[Plan | None], size: int) -> list[Batch]:
    """Plans grouped into batches of at most ``size`` (equal ``batch_key``s only, in order).

    The questions of a batch whose answers are not scored afterwards are generated together: their answer
    room is their smallest, and their KV cache is planned for them as a whole (a batch that fits no mode
    is split, down to single questions, whose own plans hold)."""
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        if plan is not None:
            groups.setdefault(plan.batch_key(), []).append(i)
    batches: list[Batch] = []
    for members in groups.values():
        for start in range(0, len(members), max(1, size)):
            chunk = members[start:start + size]
            batches.extend(_batch(model, [plans[i] for i in chunk], chunk))
    return batches


def _batch(model: "LlamaVid", plans: list[Plan], members: list[int]) -> list[Batch]:
    generated = [p for p in plans if not p.keep_cache]
    if len(generated) <= 1:
        p = generated[0] if generated else plans[0]
        return [Batch(tuple(members), p.max_new, p.cache_mode, p.cache_note if generated else None)]
    max_new = min(p.max_new for p in generated)
    try:
        mode, note = cache_mode(model, max(p.prompt.tokens for p in generated), len(generated), new_tokens=max_new,
                                requested=generated[0].kv_cache)
    except MemoryLimitError:
        half = len(plans) // 2
        return _batch(model, plans[:half], members[:half]) + _batch(model, plans[half:], members[half:])
    return [Batch(tuple(members), max_new, mode, note)]


@dataclass(frozen=True)
class TextPlan:
    """A text-only prompt (merging segment summaries, a question without a video): its prompt, answer room and
    KV cache. Read like a ``Plan`` where answers are batched and recorded (no frames)."""

    prompt: "Prompt"
    sampling: SamplingOptions
    max_new: int
    cache_mode: str
    cache_note: str | None = None
    kv_cache: str = "auto"  # the mode asked for (a batch of these plans is planned again as a whole)

    frames = 0
    frames_available = 0
    frame_indices = None
    long_video = False
    note = None
    keep_cache = False
    closer = None  # no second pass without frames
    looked_at = None
    view = None
    detail = ()

    @property
    def question(self) -> str:
        return self.prompt.question

    def batch_key(self) -> tuple:
        """Text plans with equal keys may be generated together (same template, sampling, controls, cache)."""
        s = self.sampling
        return ("text", self.prompt.template, s.max_new_tokens, s.temperature, s.top_p, s.seed, self.kv_cache,
                *s.controls)


def plan_text(model: "LlamaVid", text: str, sampling: SamplingOptions, *, kv_cache: str = "auto",
              history: Sequence[tuple[str, str]] = (), template: str | None = None,
              system: str | None = None, require_fit: bool = False) -> TextPlan:
    """The plan for a text-only user turn (``system``: a system message for the prompt). Generation controls the
    model cannot follow are refused; so is a prompt that leaves no room for an answer, or, with
    ``require_fit`` (a question, as ``plan_question`` has it), less than the context rule keeps for one."""
    check_controls(model, sampling)
    prompt = model.text_prompt(text, history=history, template=template, system=system)
    reserve = answer_reserve(sampling)
    if require_fit and not fits(model.context_length, prompt.tokens, sampling):
        what = "the question and the conversation so far take" if history else "the question takes"
        raise ContextOverflowError(f"{what} {prompt.tokens} tokens, the answer needs room for {reserve}, and the "
                                   f"model's context holds {model.context_length}; shorten it",
                                   needed=prompt.tokens + reserve, context=model.context_length)
    max_new = answer_room(model.context_length, prompt.tokens, sampling.max_new_tokens, n_frames=0,
                          tokens_per_frame=model.tokens_per_frame)
    mode, note = cache_mode(model, prompt.tokens, new_tokens=max_new, requested=kv_cache)
    return TextPlan(prompt, sampling, max_new, mode, note, kv_cache)


def most_frames(model: "LlamaVid", video: Timeline, question: str, options: "AskOptions", *,
                candidates: Sequence[int] | None = None) -> int:
    """How many of the candidate frames (spread evenly) fit one prompt for ``question`` (0: none)."""
    long_video = resolve_long_video(model, options.long)
    sampling = options.sampling(long_video)
    candidates = range_candidates(video, options, candidates)
    sel = _Selector(model, video, question, long_video, candidates, (), None, answer_space(model, options, sampling))
    if sel.available == 0:
        return 0
    if fits(model.context_length, sel.build(sel.available)[1].tokens, sampling, sel.reserve):
        return sel.available
    return _most_frames(sel, sel.available - 1, sampling) if sel.available > 1 else 0


# ---------------------------------------------------------------------------------------------------------
# look closer: pass 2's plan, from pass 1's scores


def closer_ranges(scores: np.ndarray, timestamps: np.ndarray, settings: CloserSettings, *,
                  step: float, duration: float | None = None) -> list[LookRange]:
    """The ranges pass 2 looks at: the best frame, ``pad`` seconds either side; then the best frame outside
    the ranges so far, ... until ``ranges`` ranges or the next best frame is less than ``min_score`` of the
    way from the median frame's score to the best one's; overlapping ranges are joined. In time order.

    ``scores``/``timestamps``: pass 1's, per scored frame (any order). A range's score is its best frame's,
    mapped to [0, 1] (the median frame at 0, the best at 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    times = np.asarray(timestamps, dtype=np.float64)
    if not len(scores):
        return []
    low, high = float(np.median(scores)), float(scores.max())
    norm = np.clip((scores - low) / max(high - low, 1e-12), 0.0, 1.0)
    taken = np.zeros(len(scores), dtype=bool)
    picked: list[tuple[float, float, float]] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(picked) == settings.ranges or (picked and norm[i] < settings.min_score):
            break
        if taken[i]:
            continue
        start, end = max(0.0, times[i] - settings.pad), times[i] + step + settings.pad
        if duration is not None:
            end = min(end, max(float(duration), float(times[i]) + step))
        picked.append((float(start), float(end), float(norm[i])))
        taken |= (times >= start - 1e-6) & (times < end - 1e-6)
    picked.sort()
    joined: list[list[float]] = []
    for start, end, score in picked:
        if joined and start <= joined[-1][1] + 1e-6:
            joined[-1][1] = max(joined[-1][1], end)
            joined[-1][2] = max(joined[-1][2], score)
        else:
            joined.append([start, end, score])
    return [LookRange(a, b, c) for a, b, c in joined]


def closer_times(ranges: Sequence[LookRange], settings: CloserSettings, stored: np.ndarray,
                 native_fps: float | None = None) -> list[float]:
    """The times pass 2 would like from the video, beyond the stored frames: ``settings.fps`` inside each
    range, on the video's own frame grid when its rate is known (``native_fps``; never denser than it), none
    already stored."""
    fps = min(settings.fps, native_fps) if native_fps else settings.fps
    if fps <= 0:
        return []
    stored = np.asarray(stored, dtype=np.float64)
    out: set[float] = set()
    for r in ranges:
        for k in range(int(np.ceil(r.start * fps - 1e-6)), int(np.ceil(r.end * fps - 1e-6))):
            t = k / fps
            if native_fps:
                t = round(t * native_fps) / native_fps
            if r.start - 1e-6 <= t < r.end - 1e-6 and not (len(stored) and np.min(np.abs(stored - t)) < 1e-3):
                out.add(round(float(t), 6))
    return sorted(out)


def plan_closer(model: "LlamaVid", video: Timeline, plan: Plan, options: "AskOptions", ranges: Sequence[LookRange],
                positions: Sequence[int], scores: Sequence[float], *, view_of: Any,
                extra_times: Sequence[float] = (), history: Sequence[tuple[str, str]] = (),
                template: str | None = None) -> Plan:
    """Pass 2's plan: the frames of ``ranges`` (``closer_ranges``; every stored one, and ``extra_times``:
    frames taken from the video at more frames per second, which ``view_of`` supplies), the best frames in
    detail, the rest of the video kept or left out (``plan.closer``), within the context; when they do
    not all fit, the least relevant ranges are left out (then the extra frames).

    ``positions``/``scores``: pass 1's (frames of ``video``); ``view_of(stored positions, extra times)``
    -> the frames as one input (``inputs.FrameView``). The prompt style, sampling and cache rules are the
    plain plan's. When not even the best range fits, the plain plan is kept (without ``closer``)."""
    settings = plan.closer or DEFAULT_CLOSER
    positions = np.asarray(list(positions), dtype=np.int64)
    scores = np.asarray(list(scores), dtype=np.float64)
    times = np.asarray(video.timestamps, dtype=np.float64)
    candidates = set(int(p) for p in positions)

    def inside(t: np.ndarray, rs: Sequence[LookRange]) -> np.ndarray:
        hit = np.zeros(len(t), dtype=bool)
        for r in rs:
            hit |= (t >= r.start - 1e-6) & (t < r.end - 1e-6)
        return hit

    order = np.argsort(-scores, kind="stable")
    for n_ranges in range(len(ranges), 0, -1):
        rs = sorted(ranges, key=lambda r: -r.score)[:n_ranges]
        rs.sort(key=lambda r: r.start)
        in_ranges = inside(times, rs)
        stored = sorted(p for p in candidates if in_ranges[p])
        chosen = set(stored)
        extra = [t for t in extra_times if inside(np.array([t]), rs)[0]]
        keys = [int(positions[i]) for i in order if int(positions[i]) in chosen][: settings.key_frames]
        rest_pool = [p for p in sorted(candidates) if p not in chosen]
        reserve = answer_space(model, options, plan.sampling)
        for dense in (extra, []):
            built = _closer_prompt(model, plan, stored, dense, keys if settings.grid else [], rest_pool, settings,
                                   view_of, reserve, history, template)
            if built is not None:
                view, prompt, detail = built
                done = Plan(video.source, plan.long_video, None, len(view.timestamps), plan.frames_available,
                            prompt, plan.sampling, None, looked_at=tuple(rs), view=view, detail=detail)
                return _finish(model, options, done)
    return dataclasses.replace(plan, closer=None)


def _closer_prompt(model: "LlamaVid", plan: Plan, stored: list[int], extra: list[float], keys: list[int],
                   rest_pool: list[int], settings: CloserSettings, view_of: Any, reserve: int,
                   history: Sequence[tuple[str, str]], template: str | None):
    """(view, prompt, detail) of pass 2 with as many of the rest's frames as fit (settings.rest "keep"),
    or None when even the ranges alone do not fit."""
    per, ctx = model.tokens_per_frame, model.context_length

    def build(n_rest: int):
        rest = [rest_pool[i] for i in uniform_indices(len(rest_pool), n_rest)] if n_rest else []
        view = view_of(sorted(stored + rest), extra)
        where = {int(p): i for i, p in enumerate(view.positions) if p >= 0}
        detail = tuple(sorted((where[k], settings.grid) for k in keys if k in where))
        counts = [per] * len(view.timestamps)
        for pos, grid in detail:
            counts[pos] += grid * grid
        subs = view.frame_subtitles() if plan.long_video else None
        prompt = model.prompt(plan.question, n_frames=len(view.timestamps), long_video=plan.long_video,
                              frame_subtitles=subs, history=history, template=template or plan.prompt.template,
                              frame_tokens=counts if detail else None)
        return view, prompt, detail

    first = build(0)
    if not fits(ctx, first[1].tokens, plan.sampling, reserve):
        return None
    if settings.rest != "keep" or not rest_pool:
        return first
    lo, hi = 0, len(rest_pool) + 1  # n = lo fits, n = hi does not
    guess = min(len(rest_pool), max(0, (ctx - reserve - first[1].tokens) // per))
    best = first
    if guess and fits(ctx, (b := build(guess))[1].tokens, plan.sampling, reserve):
        lo, best = guess, b
    else:
        hi = max(1, guess)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        b = build(mid)
        if fits(ctx, b[1].tokens, plan.sampling, reserve):
            lo, best = mid, b
        else:
            hi = mid
    return best

