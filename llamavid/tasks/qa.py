"""Questions and answers: ``ask`` one question, and ``answer_questions``, the one way questions about a
video go through the model.

    video -> open_input (features, cached) -> plan_question (frames, fit, sampling, prompt) ->
    answer_questions (batched, one by one on failure) -> AskResult / records

``answer_questions`` serves ``ask``, chat turns, summaries, ``ask --batch``, folders, ``llamavid eval``
and the demo evaluation: questions with equal plans go through the QFormer and the LLM together; when a
batch fails, its questions are retried one by one so that only the bad one fails.

A question with ``choices`` is not generated: each option is scored as the answer (llamavid.model.likelihood)
and the best one is the answer. A question with ``evidence`` gets, after its answer, the time ranges
the answer rests on (llamavid.tasks.evidence), measured on the very prompt the answer came from. A
question planned to look closer (``look_closer``) is answered from its second plan (llamavid.tasks.closer),
made once its frames are scored; the record names the ranges it looked at.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import LlamaVidError
from ..core.options import AskOptions, check_text
from ..media.subtitles import SubtitleLine
from ..model.generation import Answer, generate
from ..model.likelihood import choose, empty_cache
from ..pipeline.inputs import FeaturesInMemory, VideoInput
from ..pipeline.materialize import materialize, timeline_held
from ..pipeline.planning import Batch, Plan, TextPlan, plan_batches, plan_question, plan_text
from ..pipeline.prepare import prepare
from .closer import second_plan
from .evidence import DEFAULT_METHOD, find_evidence

QUESTIONS_PER_BATCH = 8


@dataclass(frozen=True)
class Question:
    """One question with its own options (a batch line may set temperature, frames, prompt style...).

    ``history``: earlier (question, answer) turns, as text; ``system``: a system message, added to the
    prompt after the model's own system prompt (``llamavid.model.prompt.ConvTemplate.render``)."""

    text: str
    options: AskOptions = AskOptions()
    history: tuple[tuple[str, str], ...] = ()
    system: str | None = None

    def __post_init__(self) -> None:
        check_text(self.text)  # the one check of a question's text
        if self.system is not None:
            check_text(self.system, "the system message")


@dataclass
class Answered:
    """A question's outcome: its plan and answer, or the error that stopped it."""

    question: Question
    plan: Plan | TextPlan | None = None
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
    cancelled: Callable[[int], bool] | None = None,
    on_retry: Callable[[int], None] | None = None,
    on_answered: Callable[[int, Answered], None] | None = None,
) -> list[Answered]:
    """Answer questions about one video; one ``Answered`` per question, in order, errors included.

    Each question is planned once (or ``plans[i]`` is used); plans go through the model in the batches
    planning makes of them (``plan_batches``: equal frames, style, sampling, generation controls and cache,
    at most ``questions_per_batch``). ``on_text(i, piece)`` streams question i's answer. A plan's notes
    (frames left out, a quantized KV cache) are reported through ``callbacks``. Questions asking for
    evidence get it by ``evidence_method`` (see llamavid.tasks.evidence.METHODS). ``cancelled(i)``: asked
    while question i is generated; True stops it within one decoding step (its ``Answer`` is marked
    ``cancelled``). A failed batch is answered again one question at a time; ``on_retry(i)`` is called first
    (what was streamed of question i's answer is to be generated again). ``on_answered(i, answered)``: called
    as soon as question i is finished (its batch done, or refused), before the other batches are answered.
    """
    results = [Answered(q) for q in questions]
    for i, q in enumerate(questions):
        try:
            plan = plans[i] if plans is not None and plans[i] is not None else plan_question(
                model, vin, q.text, q.options, history=q.history, system=q.system)
        except LlamaVidError as exc:
            results[i].error = exc
            if on_answered is not None:
                on_answered(i, results[i])
            continue
        if plan.closer is not None:  # look closer: pass 1, then pass 2's plan is the one answered
            try:
                plan = second_plan(model, vin, q, plan, callbacks=callbacks)
            except LlamaVidError as exc:
                results[i].error = exc
                if on_answered is not None:
                    on_answered(i, results[i])
                continue
        results[i].plan = plan
        if plan.note:
            callbacks.warn(plan.note)
    answer = _Answerer(model, vin, on_text, cancelled, on_retry, on_answered, evidence_method, callbacks)
    for batch in plan_batches(model, [r.plan for r in results], questions_per_batch):
        answer.batch(results, batch)
    return results


def answer_texts(
    model,
    questions: Sequence[Question],
    *,
    on_text: Callable[[int, str], None] | None = None,
    callbacks: Callbacks = NO_CALLBACKS,
    questions_per_batch: int = QUESTIONS_PER_BATCH,
    cancelled: Callable[[int], bool] | None = None,
    on_retry: Callable[[int], None] | None = None,
    on_answered: Callable[[int, Answered], None] | None = None,
) -> list[Answered]:
    """Questions without a video, answered by the language model alone from a text prompt (the conversation
    template with the question, its history and system message; no visual tokens), as summaries are merged.

    Each question is planned (``plan_text``: the published chat sampling with its options on top, the context
    rule, generation controls it can follow); questions with equal text plans are generated together, and
    a failed batch is answered again one question at a time, as in ``answer_questions`` (whose ``on_text``,
    ``cancelled``, ``on_retry`` and ``on_answered`` these are). Options about a video (frames, evidence,
    choices) do not apply.
    """
    results = [Answered(q) for q in questions]
    for i, q in enumerate(questions):
        try:
            results[i].plan = plan_text(model, q.text, q.options.sampling(False), kv_cache=q.options.kv_cache,
                                        history=q.history, system=q.system, require_fit=True)
        except LlamaVidError as exc:
            results[i].error = exc
            if on_answered is not None:
                on_answered(i, results[i])
    answer = _Answerer(model, None, on_text, cancelled, on_retry, on_answered, DEFAULT_METHOD, callbacks)
    for batch in plan_batches(model, [r.plan for r in results], questions_per_batch):
        answer.batch(results, batch)
    return results


@dataclass
class _Answerer:
    """Answers the batches of one ``answer_questions`` / ``answer_texts`` call (``vin`` None: text only)."""

    model: Any
    vin: VideoInput | None
    on_text: Callable[[int, str], None] | None
    cancelled: Callable[[int], bool] | None
    on_retry: Callable[[int], None] | None
    on_answered: Callable[[int, Answered], None] | None
    evidence_method: str
    callbacks: Callbacks

    def batch(self, results: list[Answered], batch: Batch) -> None:
        t0 = time.perf_counter()
        members = list(batch.members)
        try:
            if batch.note:
                self.callbacks.say(batch.note)
            answers = self._plans([results[i] for i in members], batch, members)
        except LlamaVidError as exc:
            if len(members) == 1:
                results[members[0]].error = exc
                self._answered(results, members)
                return
            for i in members:  # one by one, so that only the question at fault fails
                if self.on_retry is not None:
                    self.on_retry(i)
                plan = results[i].plan
                self.batch(results, Batch((i,), plan.max_new, plan.cache_mode, plan.cache_note))
            return
        seconds = (time.perf_counter() - t0) / len(members)
        for i, answer in zip(members, answers):
            results[i].answer, results[i].seconds = answer, seconds
        self._answered(results, members)

    def _answered(self, results: list[Answered], members: list[int]) -> None:
        if self.on_answered is not None:
            for i in members:
                self.on_answered(i, results[i])

    def _plans(self, members: list[Answered], batch: Batch, chunk: list[int]) -> list[Answer]:
        """Plans of one batch: embedded together, then generated (or chosen), then evidence."""
        model, on_text = self.model, self.on_text
        t0 = time.perf_counter()
        first = members[0].plan
        prompts = [m.plan.prompt for m in members]
        if self.cancelled is not None and all(self.cancelled(i) for i in chunk):  # nobody waits: nothing to compute
            return [Answer("", p.tokens, 0, p.n_frames, 0.0, p.question, cancelled=True) for p in prompts]
        vin = self.vin if first.view is None else first.view  # look closer's pass 2: its own frames
        if vin is None:
            embeds = [model.embed_prompt(p.ids, []) for p in prompts]
        else:  # embedded together; those not scored afterwards are generated together, the others each on its own
            embeds = model.prompt_embeddings(vin.features, prompts, frame_indices=first.frame_indices,
                                             **({"detail": first.detail} if first.detail else {}))
        answers: list[Answer | None] = [None] * len(members)
        together = [k for k, m in enumerate(members) if not m.plan.keep_cache]
        if together:
            relay = None if on_text is None else (lambda row, piece: on_text(chunk[together[row]], piece))
            stop = None if self.cancelled is None else (lambda row: self.cancelled(chunk[together[row]]))
            made = generate(model, [embeds[k] for k in together], [prompts[k] for k in together],
                            sampling=first.sampling, max_new=batch.max_new, cache_mode=batch.cache_mode, on_text=relay,
                            t0=t0, cancelled=stop)
            for k, answer in zip(together, made):
                answers[k] = answer
        for k, m in enumerate(members):
            if m.plan.keep_cache:
                if self.cancelled is not None and self.cancelled(chunk[k]):
                    p = m.plan.prompt
                    answers[k] = Answer("", p.tokens, 0, p.n_frames, time.perf_counter() - t0, p.question,
                                        cancelled=True)
                else:
                    answers[k] = _scored(model, vin, m, embeds[k], on_text, chunk[k], self.evidence_method, t0)
        return answers  # type: ignore[return-value]


def _scored(model, vin: VideoInput, member: Answered, embeds, on_text: Callable[[int, str], None] | None,
            row: int, evidence_method: str, t0: float) -> Answer:
    """A question with choices (the best option is the answer) or evidence (the time ranges the answer rests
    on, measured on the KV cache its prompt left behind)."""
    plan, options = member.plan, member.question.options
    prompt = plan.prompt
    cache = None
    if options.choices:
        best, scores = choose(model, embeds, options.choices)
        text = scores[best].choice
        if on_text is not None:
            on_text(row, text)
        answer = Answer(text=text, prompt_tokens=prompt.tokens, new_tokens=0, frames=prompt.n_frames,
                        seconds=time.perf_counter() - t0, question=prompt.question, choices=scores)
    else:
        cache = empty_cache(model)
        relay = None if on_text is None else (lambda _row, piece: on_text(row, piece))
        [answer] = generate(model, [embeds], [prompt], sampling=plan.sampling, max_new=plan.max_new,
                            cache_mode="full", on_text=relay, cache=cache, t0=t0)
    if options.evidence:
        frames = list(plan.frame_indices if plan.frame_indices is not None else range(vin.num_frames))
        answer.evidence = find_evidence(
            model, embeds, prompt, answer.text, vin.timestamps[frames], step=vin.step,
            frame_subtitles=vin.frame_subtitles(frames) if plan.long_video else None,
            method=evidence_method, is_image=vin.is_image, duration=vin.duration, cache=cache)
    return answer


# ---------------------------------------------------------------------------------------------------------
# the path every front end takes


def answer_about(
    model,
    source: str | os.PathLike,
    questions: Sequence[Question],
    *,
    label: str | None = None,
    on_text: Callable[[int, str], None] | None = None,
    callbacks: Callbacks = NO_CALLBACKS,
    questions_per_batch: int = QUESTIONS_PER_BATCH,
    evidence_method: str = DEFAULT_METHOD,
) -> list[Answered]:
    """Questions about one video, image or .vidtok (with equal ``input_key`` options), the way every front
    end asks them: the input is prepared once; each question is planned, so that one that cannot be
    answered is refused before any decoding or encoding; the features are materialized only when a
    question can be answered; then the questions are answered together (``answer_questions``).

    One ``Answered`` per question, in order: an input that cannot be read, or a question that cannot be
    answered, fails its own questions only. ``label``: how messages and records name the input.
    """
    results = [Answered(q) for q in questions]
    if not questions:
        return results
    try:
        prepared = prepare(model, source, questions[0].options, callbacks=callbacks, label=label)
    except LlamaVidError as exc:
        for r in results:
            r.error = exc
        return results
    with prepared:
        plans: list[Plan | None] = []
        for r, q in zip(results, questions):
            try:
                plans.append(plan_question(model, prepared, q.text, q.options, history=q.history, system=q.system))
            except LlamaVidError as exc:
                r.error = exc
                plans.append(None)
        asked = [i for i, p in enumerate(plans) if p is not None]
        if not asked:
            return results  # nothing could be answered: nothing is decoded or encoded
        try:
            vin = materialize(model, prepared, callbacks=callbacks)
        except LlamaVidError as exc:
            for i in asked:
                results[i].error = exc
            return results
    with vin:
        held = timeline_held(prepared, vin)  # else frames failed to decode: every question is planned again
        relay = None if on_text is None else (lambda k, piece: on_text(asked[k], piece))
        done = answer_questions(model, vin, [questions[i] for i in asked],
                                plans=[plans[i] if held else None for i in asked], on_text=relay, callbacks=callbacks,
                                questions_per_batch=questions_per_batch, evidence_method=evidence_method)
    for i, answered in zip(asked, done):
        results[i] = answered
    return results


# ---------------------------------------------------------------------------------------------------------
# answer records


@dataclass
class AnswerRecord:
    """One answered question as every front end reports it: ``ask --json``, a batch's answer lines (with
    their ``id`` and ``video``), the server's ``llamavid`` field.

    ``frames_available`` is set only when frames were left out to fit the context (or to look closer);
    ``evidence`` and ``choices`` only when they were asked for; ``looked_at`` only when the question was
    answered by looking closer (the ranges pass 2 looked at, in time order).
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
    looked_at: list | None = field(default=None)  # LookRange, in time order (answered by looking closer)

    @classmethod
    def of(cls, model, answered: Answered, source: str | os.PathLike, *,
           seconds: float | None = None) -> "AnswerRecord":
        """The record of an answered question (``seconds``: default, the question's share of its batch)."""
        plan, answer = answered.plan, answered.answer
        return cls(os.fspath(source), answered.question.text, answer.text, model.name, plan.frames,
                   answer.prompt_tokens, round(answered.seconds if seconds is None else seconds, 3),
                   plan.frames_available if plan.note or plan.looked_at is not None else None, answer.evidence,
                   answer.choices, list(plan.looked_at) if plan.looked_at is not None else None)

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k not in ("evidence", "choices", "looked_at")}
        if record["frames_available"] is None:
            del record["frames_available"]
        if self.evidence is not None:
            record["evidence"] = [r.to_json() for r in self.evidence]
        if self.choices is not None:
            record["choices"] = [c.to_json() for c in self.choices]
        if self.looked_at is not None:
            record["looked_at"] = [r.to_json() for r in self.looked_at]
        return record


AskResult = AnswerRecord  # the name ``ask`` returned it under


# ---------------------------------------------------------------------------------------------------------
# ask


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
) -> AnswerRecord:
    """Answer one question about a video, image or .vidtok file (encoding a video once, into the cache).

    ``options`` (or keyword overrides of its fields: ``fps=2``, ``temperature=0``, ``evidence=True``,
    ``choices=("red", "blue")``, ``start=30``...) as ``AskOptions``. ``stream`` receives the answer piece
    by piece. A question that cannot be answered is refused before any decoding or encoding.
    """
    t0 = time.perf_counter()
    q = Question(question, (options or AskOptions()).replace(**overrides))
    [result] = answer_about(model, source, [q], on_text=None if stream is None else (lambda _i, piece: stream(piece)),
                            callbacks=callbacks, evidence_method=evidence_method)
    if result.error is not None:
        raise result.error
    return AnswerRecord.of(model, result, source, seconds=time.perf_counter() - t0)


def answer_features(model, features, question: str, options: AskOptions | None = None, *,
                    timestamps: Sequence[float] | None = None, subtitles: Sequence[SubtitleLine] = (),
                    history: Sequence[tuple[str, str]] = (), stream: Callable[[str], None] | None = None,
                    callbacks: Callbacks = NO_CALLBACKS, **overrides: Any) -> Answer:
    """Answer a question from features already at hand (a tensor or array (T, N, C), or anything read like a
    ``.vidtok``), through the same planning and answering as ``ask``. Frame times default to one a second;
    ``subtitles`` are attached to the frames by the published rule (long-video prompt)."""
    options = (options or AskOptions()).replace(**overrides)
    source = features if hasattr(features, "frames") else FeaturesInMemory(features, timestamps)
    vin = VideoInput("features", source, list(subtitles))
    [result] = answer_questions(model, vin, [Question(question, options, tuple(history))],
                                on_text=None if stream is None else (lambda _i, piece: stream(piece)),
                                callbacks=callbacks)
    if result.error is not None:
        raise result.error
    return result.answer
