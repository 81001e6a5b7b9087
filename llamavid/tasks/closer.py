"""Look closer: a long video answered from the seconds that matter, in two passes (two plans).

    plan_question (look_closer; planning decides) -> Plan with ``closer`` (pass 1's: the plain plan)
      -> score_frames (llamavid.tasks.relevance: every candidate frame's relevance to the question)
      -> closer_ranges (planning: the best ranges)
      -> materialize_frames (the video's frames at more frames per second inside them, when it is at hand)
      -> plan_closer (planning: pass 2's frames, detail and prompt, within the context)
      -> answered like any plan (llamavid.tasks.qa.answer_questions), evidence included

``second_plan`` is the step in between; ``answer_questions`` calls it for every plan that has ``closer``.
"""

from __future__ import annotations

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.timecode import format_clock
from ..pipeline.inputs import FrameView, VideoInput
from ..pipeline.materialize import materialize_frames, video_rate
from ..pipeline.planning import Plan, closer_ranges, closer_times, plan_closer, range_candidates
from .relevance import score_frames


def second_plan(model, vin: VideoInput, question, plan: Plan, *, callbacks: Callbacks = NO_CALLBACKS) -> Plan:
    """Pass 1 for a plan with ``closer`` (``question``: a ``qa.Question``), then pass 2's plan."""
    settings = plan.closer
    assert settings is not None, "second_plan takes a pass-1 plan (Plan.closer set)"
    options = question.options
    candidates = range_candidates(vin, options)
    positions = list(candidates) if candidates is not None else list(range(len(vin.timestamps)))
    scored = score_frames(model, vin, question.text, options, scorer=settings.scorer, positions=positions,
                          max_chunks=settings.chunks)
    ranges = closer_ranges(scored.scores, scored.timestamps, settings, step=vin.step, duration=vin.duration)
    extra_times: list[float] = []
    extra = None
    rate = video_rate(vin)
    if rate is not None and min(settings.fps, rate) > 1.0 / vin.step + 1e-9:
        wanted = closer_times(ranges, settings, vin.timestamps, rate)
        got = materialize_frames(model, vin, wanted, callbacks=callbacks)
        if got is not None:
            extra_times, extra = got
    rows = {round(t, 6): k for k, t in enumerate(extra_times)}

    def view_of(stored: list[int], times: list[float]) -> FrameView:
        picked = [rows[round(t, 6)] for t in times]
        return FrameView(vin, stored, times, extra[picked] if picked else None)

    second = plan_closer(model, vin, plan, options, ranges, scored.positions, scored.scores, view_of=view_of,
                         extra_times=extra_times, history=question.history)
    if second.looked_at:
        long = any(r.end >= 3600 for r in second.looked_at)
        where = ", ".join(f"{format_clock(r.start, hours=long)}-{format_clock(r.end, hours=long, up=True)}"
                          for r in second.looked_at)
        callbacks.say(f"{vin.source}: looked closer at {where} ({second.frames} frames; {len(scored)} of "
                      f"{len(positions)} scored by {settings.scorer})")
    return second


__all__ = ["second_plan"]
