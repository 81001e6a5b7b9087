"""Questions and answers: ``ask`` one question, and ``answer_questions``, the one way questions about a
video go through the model.

    video -> open_input (features, cached) -> plan_question (frames, fit, sampling, prompt) ->
    answer_questions (batched, one by one on failure) -> AskResult / records

``answer_questions`` serves ``ask``, chat turns, summaries, ``ask --batch``, folders, ``llamavid eval``
and the demo evaluation: questions with equal plans go through the QFormer and the LLM together; when a
batch fails, its questions are retried one by one so that only the bad one fails.

A question with ``choices`` is not generated: each option is scored as the answer (llamavid.model.likelihood)
and the best one is the answer. A question with ``evidence`` gets, after its answer, the time ranges
the answer rests on (llamavid.tasks.evidence), measured on the very prompt the answer came from.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import LlamaVidError
from .evidence import DEFAULT_METHOD, find_evidence
from ..pipeline.inputs import VideoInput, open_input
from ..model.likelihood import choose, empty_cache
from ..model.modeling import Answer
from ..core.options import AskOptions, check_text
from ..pipeline.planning import Plan, plan_question

QUESTIONS_PER_BATCH = 8


@dataclass(frozen=True)
class Question:
    """One question with its own options (a batch line may set temperature, frames, prompt style...)."""

    text: str
    options: AskOptions = AskOptions()
    history: tuple[tuple[str, str], ...] = ()


@dataclass
class Answered:
    """A question's outcome: its plan and answer, or the error that stopped it."""

    question: Question
    plan: Plan | None = None
    answer: Answer | None = None
    error: LlamaVidError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def answer_questions(
    model,
    vin: VideoInput,
    questions: Sequence[Question],
    *,
    plans: Sequence[Plan | None] | None = None,
    on_text: Callable[[int, str], None] | None = None,
    callbacks: Callbacks = NO_CALLBACKS,
    questions_per_batch: int = QUESTIONS_PER_BATCH,
    evidence_method: str = DEFAULT_METHOD,
) -> list[Answered]:
    """Answer questions about one video; one ``Answered`` per question, in order, errors included.

    Each question is planned once (or ``plans[i]`` is used); plans that share frames, prompt style and
    sampling go through the model in batches of ``questions_per_batch``. ``on_text(i, piece)`` streams
    question i's answer. A plan that leaves frames out is reported once through ``callbacks.warn``.
    Questions asking for evidence get it by ``evidence_method`` (see llamavid.tasks.evidence.METHODS).
    """
    results = [Answered(q) for q in questions]
    groups: dict[tuple, list[int]] = {}
    for i, q in enumerate(questions):
        try:
            plan = plans[i] if plans is not None and plans[i] is not None else plan_question(
                model, vin, check_text(q.text), q.options, history=q.history)
        except LlamaVidError as exc:
            results[i].error = exc
            continue
        results[i].plan = plan
        if plan.note:
            callbacks.warn(plan.note)
        groups.setdefault(plan.batch_key() + (q.history,), []).append(i)
    for members in groups.values():
        for start in range(0, len(members), max(1, questions_per_batch)):
            _answer_chunk(model, vin, results, members[start:start + questions_per_batch], on_text, evidence_method)
    return results


def _answer_chunk(model, vin: VideoInput, results: list[Answered], chunk: list[int],
                  on_text: Callable[[int, str], None] | None, evidence_method: str) -> None:
    t0 = time.perf_counter()
    first = results[chunk[0]].plan
    try:
        answers = _answer_plans(model, vin, [results[i] for i in chunk], first, on_text, chunk, evidence_method)
    except LlamaVidError as exc:
        if len(chunk) == 1:
            results[chunk[0]].error = exc
            return
        for i in chunk:  # one by one, so that only the question at fault fails
            _answer_chunk(model, vin, results, [i], on_text, evidence_method)
        return
    seconds = (time.perf_counter() - t0) / len(chunk)
    for i, answer in zip(chunk, answers):
        results[i].answer, results[i].seconds = answer, seconds


def _answer_plans(model, vin: VideoInput, members: list[Answered], first: Plan,
                  on_text: Callable[[int, str], None] | None, chunk: list[int], evidence_method: str) -> list[Answer]:
    """Plans with the same frames and style: embedded together, then generated (or chosen), then evidence."""
    t0 = time.perf_counter()
    prompts = [m.plan.prompt for m in members]
    if not any(m.question.options.choices or m.question.options.evidence for m in members):
        relay = None if on_text is None else (lambda row, piece: on_text(chunk[row], piece))
        return model.answer_prompts(vin.features, prompts, sampling=first.sampling, frame_indices=first.frame_indices,
                                    on_text=relay)
    for m in members:  # a scored question keeps its prompt in a full KV cache: refuse before any work if it cannot
        if m.question.options.choices or m.question.options.evidence:
            p = m.plan.prompt
            model.kv_cache_mode(p.tokens, 1, new_tokens=m.plan.sampling.max_new_tokens, requested="full",
                                text_tokens=p.tokens - p.n_frames * model.tokens_per_frame)
    # the embedded prompts are kept: options are scored on them, and evidence is measured on them
    embeds = model.prompt_embeddings(vin.features, prompts, frame_indices=first.frame_indices)
    answers: list[Answer | None] = [None] * len(members)
    caches: dict[int, Any] = {}
    together = [k for k, m in enumerate(members) if not m.question.options.choices and not m.question.options.evidence]
    alone = [k for k, m in enumerate(members) if not m.question.options.choices and m.question.options.evidence]
    # a question asking for evidence is generated on its own, so that the KV cache of its prompt is kept
    # for the evidence (no padding in it); the others go through together
    for rows, cache in [(together, None)] + [([k], empty_cache(model)) for k in alone]:
        if not rows:
            continue
        relay = None if on_text is None else (lambda row, piece, rows=rows: on_text(chunk[rows[row]], piece))
        made = model.generate_answers([embeds[k] for k in rows], [prompts[k] for k in rows], sampling=first.sampling,
                                      on_text=relay, t0=t0, cache=cache,
                                      cache_mode=None if cache is None else "full")  # "full": checked above
        for k, answer in zip(rows, made):
            answers[k] = answer
            if cache is not None:
                caches[k] = cache
    for k, m in enumerate(members):
        if m.question.options.choices:
            best, scores = choose(model, embeds[k], m.question.options.choices)
            text = scores[best].choice
            if on_text is not None:
                on_text(chunk[k], text)
            answers[k] = Answer(text=text, prompt_tokens=prompts[k].tokens, new_tokens=0, frames=prompts[k].n_frames,
                                seconds=time.perf_counter() - t0, question=prompts[k].question, choices=scores)
    frames = first.frame_indices if first.frame_indices is not None else range(vin.num_frames)
    for k, m in enumerate(members):
        if m.question.options.evidence:
            answers[k].evidence = find_evidence(
                model, embeds[k], prompts[k], answers[k].text, vin.timestamps[list(frames)], step=vin.step,
                frame_subtitles=vin.frame_subtitles(list(frames)) if first.long_video else None,
                method=evidence_method, is_image=vin.is_image, duration=vin.duration, cache=caches.pop(k, None))
    return answers  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# ask


@dataclass
class AskResult:
    """One answered question: the record ``llamavid ask --json`` prints.

    ``frames_available`` is set only when frames were left out to fit the context.
    """

    input: str
    question: str
    answer: str
    model: str
    frames: int
    prompt_tokens: int
    seconds: float
    frames_available: int | None = field(default=None)
    evidence: list | None = field(default=None)  # EvidenceRange, best first (asked with evidence=True)
    choices: list | None = field(default=None)  # ChoiceScore per option, as given (asked with choices=...)

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k not in ("evidence", "choices")}
        if record["frames_available"] is None:
            del record["frames_available"]
        return record | scored_fields(self)


def scored_fields(answer) -> dict[str, Any]:
    """``evidence`` ([{start, end, score}], best first) and ``choices`` ([{choice, score}], as given) of an
    ``Answer`` or ``AskResult``, each when it was asked for."""
    fields: dict[str, Any] = {}
    if answer.evidence is not None:
        fields["evidence"] = [r.to_json() for r in answer.evidence]
    if answer.choices is not None:
        fields["choices"] = [c.to_json() for c in answer.choices]
    return fields


def answer_fields(model, answered: Answered) -> dict[str, Any]:
    """The fields every answer record carries (ask --json, batch lines): answer, model, frames,
    prompt_tokens, seconds; frames_available when frames were left out to fit; ``evidence``
    ([{start, end, score}], best first) and ``choices`` ([{choice, score}], as given) when asked for."""
    plan, answer = answered.plan, answered.answer
    fields: dict[str, Any] = {"answer": answer.text, "model": model.name, "frames": plan.frames,
                              "prompt_tokens": answer.prompt_tokens, "seconds": round(answered.seconds, 3)}
    if plan.note:
        fields["frames_available"] = plan.frames_available
    return fields | scored_fields(answer)


def ask(
    model,
    source: str | os.PathLike,
    question: str,
    options: AskOptions | None = None,
    *,
    stream: Callable[[str], None] | None = None,
    callbacks: Callbacks = NO_CALLBACKS,
    evidence_method: str = DEFAULT_METHOD,
    **overrides: Any,
) -> AskResult:
    """Answer one question about a video, image or .vidtok file (encoding a video once, into the cache).

    ``options`` (or keyword overrides of its fields: ``fps=2``, ``temperature=0``, ``evidence=True``,
    ``choices=("red", "blue")``, ``start=30``...) as ``AskOptions``. ``stream`` receives the answer piece
    by piece. A question that cannot fit is refused before encoding.
    """
    t0 = time.perf_counter()
    options = (options or AskOptions()).replace(**overrides)
    check_text(question)
    early: list[tuple[Plan, Any]] = []

    def check(timeline) -> None:  # before encoding: refuse what cannot be answered, keep the plan
        early.append((plan_question(model, timeline, question, options), timeline))

    with open_input(model, source, options, callbacks=callbacks, check=check) as vin:
        plan = early[0][0] if early and _still_holds(early[0][1], vin) else None
        [result] = answer_questions(model, vin, [Question(question, options)], plans=[plan],
                                    on_text=None if stream is None else (lambda _i, piece: stream(piece)),
                                    callbacks=callbacks, evidence_method=evidence_method)
    if result.error is not None:
        raise result.error
    fields = answer_fields(model, result)
    return AskResult(str(source), question, fields["answer"], model.name, fields["frames"], fields["prompt_tokens"],
                     round(time.perf_counter() - t0, 3), fields.get("frames_available"), result.answer.evidence,
                     result.answer.choices)


def _still_holds(timeline, vin: VideoInput) -> bool:
    """A plan made before encoding holds when encoding gave exactly the planned frames and subtitles."""
    return np.array_equal(timeline.timestamps, vin.timestamps) and list(timeline.subtitle_lines) == list(vin.subtitle_lines)
