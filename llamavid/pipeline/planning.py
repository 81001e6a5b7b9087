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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from ..model.generation import SamplingOptions
from ..core.errors import ContextOverflowError, InputError

if TYPE_CHECKING:
    from ..model.modeling import LlamaVid, Prompt
    from ..core.options import AskOptions

ANSWER_RESERVE = 256  # answer tokens a plan keeps room for (at most max_new_tokens)


class Timeline(Protocol):
    """What planning needs of a video: its name, its frames' times and their subtitle text."""

    source: str

    @property
    def timestamps(self) -> np.ndarray: ...

    def frame_subtitles(self, indices: Sequence[int] | None = None) -> list[str]: ...


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


def frames_in_range(timestamps: Sequence[float] | np.ndarray, time_range: tuple[float, float]) -> list[int]:
    """Positions of the frames whose time t has start <= t < end (a millisecond of slack for rounding)."""
    start, end = time_range
    ts = np.asarray(timestamps, dtype=np.float64)
    return np.nonzero((ts >= start - 1e-3) & (ts < end - 1e-3))[0].tolist()


def _seconds(t: float) -> str:
    from ..core.timecode import format_clock

    return format_clock(t) if float(t).is_integer() else f"{t:g} s"


def check_range(source: str, time_range: tuple[float, float] | None, *, duration: float | None,
                is_image: bool = False) -> None:
    """A range must start inside the video (it may run on past the end); a still image has no times."""
    if time_range is None:
        return
    from ..core.timecode import format_clock

    if is_image:
        raise InputError(f"{source}: is a still image; --start/--end apply to videos")
    start, _ = time_range
    if duration is not None and start >= duration:
        raise InputError(f"{source}: --start {format_clock(start)} is past the end of the video "
                         f"({format_clock(duration, up=True)} long)")


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
        raise InputError(f"{video.source}: no sampled frame lies between {_seconds(start)} and {until}; "
                         "widen --start/--end or sample more frames (--fps)")
    return inside


def answer_room(context_length: int, prompt_tokens: int, max_new_tokens: int, *, n_frames: int,
                tokens_per_frame: int) -> int:
    """How many new tokens generation may produce; refuses a prompt that leaves no room at all.

    The last line of defence for direct model calls; plans never get here with a prompt that overflows.
    """
    room = context_length - prompt_tokens
    if room < 1:
        raise ContextOverflowError(
            f"the prompt needs {prompt_tokens} tokens ({n_frames} frames x {tokens_per_frame} tokens + text) "
            f"but the model's context holds {context_length}; sample fewer frames (--fps or --max-frames)"
        )
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

    @property
    def question(self) -> str:
        return self.prompt.question

    def batch_key(self) -> tuple:
        """Plans with equal keys go through the model together (same frames, style and sampling)."""
        s = self.sampling
        return (self.frame_indices, self.long_video, self.prompt.template, s.max_new_tokens, s.temperature,
                s.top_p, s.seed)


class _Selector:
    """Builds the prompt for n frames spread evenly over the candidate frames (memoized by n)."""

    def __init__(self, model: "LlamaVid", video: Timeline, question: str, long_video: bool,
                 candidates: Sequence[int] | None, history: Sequence[tuple[str, str]], template: str | None,
                 reserve: int):
        self.model, self.video, self.question, self.long_video = model, video, question, long_video
        self.reserve = reserve
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
                                       history=self.history, template=self.template)
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
                  template: str | None = None) -> Plan:
    """The plan for one question about ``video`` (see the module docstring for the rules)."""
    long_video = resolve_long_video(model, options.long)
    sampling = options.sampling(long_video)
    reserve = answer_space(model, options, sampling)
    candidates = range_candidates(video, options, candidates)
    sel = _Selector(model, video, question, long_video, candidates, history, template, reserve)
    if sel.available == 0:
        raise InputError(f"{video.source}: no frames to answer from")
    count = min(options.max_frames, sel.available) if options.max_frames else sel.available
    indices, prompt = sel.build(count)
    ctx = model.context_length
    if fits(ctx, prompt.tokens, sampling, reserve):
        return Plan(video.source, long_video, indices, count, sel.available, prompt, sampling)
    most = _most_frames(sel, count - 1, sampling) if count > 1 else 0
    if most == 0:
        alone = sel.build(1)[1].tokens - model.tokens_per_frame
        if alone + reserve >= ctx:
            what = "the question and the conversation so far take" if history else "the question takes"
            raise ContextOverflowError(
                f"{what} {alone} tokens, the answer needs room for {reserve}, and the model's context "
                f"holds {ctx}; shorten it" + (" or start a new conversation (/reset)" if history else ""))
        raise ContextOverflowError(
            f"{video.source}: not even one frame ({model.tokens_per_frame} tokens) fits the model's {ctx}-token context "
            f"beside the prompt ({alone} tokens) and room for the answer ({reserve}); lower --max-new-tokens")
    if options.strict_context:
        raise ContextOverflowError(
            f"{video.source}: {count} frames x {model.tokens_per_frame} tokens + the prompt need {prompt.tokens} tokens "
            f"(+{reserve} for the answer) but the model's context holds {ctx}; use --max-frames {most} "
            f"(or a lower --fps), or leave out --strict-context to use {most} frames spread evenly")
    indices, prompt = sel.build(most)
    note = (f"{video.source}: {count} frames do not fit the model's {ctx}-token context; using {most} frames "
            f"spread evenly (--strict-context refuses instead)")
    return Plan(video.source, long_video, indices, most, sel.available, prompt, sampling, note)


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
