"""``AnswerService``: one model answering questions that arrive concurrently (``llamavid serve``'s engine).

    submit(media, question) --> pending, per input --> opener thread: open_input once per input
                                                   --> answering thread: answer_questions(all pending of one input)

* **Batching.** Questions about the same input (same media, same ``input_key`` options) that are pending
  together go through ``answer_questions`` in one call, which sends those with equal plans through the
  model together. The answering thread waits ``gather_seconds`` after an input's first pending question
  for others to join; while it is busy, new questions pile up and form the next batch by themselves.
* **Encoding once.** An input is opened (and, if new, encoded) by one opener thread, once however many
  questions ask at the same moment; it then stays open for the next questions (the ``keep_open`` most
  recently used inputs). Across processes, ``open_input``'s cache and the encoder's file lock do the same.
* **Streaming.** ``on_text`` receives an answer's text as it is generated, through ``TextStream``: the
  pieces add up to exactly the text of the finished answer.
* **Shutdown.** ``close`` refuses new questions, answers every pending one, then stops the threads.

Each submitted question gets a ``concurrent.futures.Future`` of its ``Answered`` (a refused question is
an ``Answered`` with an ``error``); the future fails only when its input could not be opened (with the
``LlamaVidError`` that said why) or on a bug.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import LlamaVidError
from ..core.options import AskOptions
from ..model.prompt import get_template
from ..pipeline.inputs import VideoInput
from ..pipeline.materialize import materialize, timeline_held
from ..pipeline.planning import Plan, plan_question
from ..pipeline.prepare import input_key, prepare
from ..tasks.qa import QUESTIONS_PER_BATCH, Answered, Question, answer_questions
from .media_access import MediaSource

log = logging.getLogger("llamavid.service")

GATHER_SECONDS = 0.02  # how long a first question waits for others about the same input
MAX_BATCH = 32  # questions taken from one input's queue per answer_questions call
KEEP_OPEN = 8  # inputs kept open between questions


class ServiceClosed(LlamaVidError):
    """The service is shutting down and takes no new questions."""


class TextStream:
    """Relays an answer's pieces so that they add up to exactly the finished answer's text.

    The finished text is the generated text with surrounding whitespace and a trailing stop string
    removed (``LlamaVid._generate``), so leading whitespace and a trailing run that could still be
    removed (whitespace, the start of the stop string) are held back until more text shows they stay;
    ``finish`` sends whatever the finished text has beyond what was sent.
    """

    def __init__(self, emit: Callable[[str], None], stop_string: str = ""):
        self.emit, self.stop = emit, stop_string.strip()
        self.raw = ""
        self.sent = ""

    def push(self, piece: str) -> None:
        self.raw += piece
        text = self.raw.lstrip()
        safe = len(text) - self._held(text)
        if safe > len(self.sent) and text.startswith(self.sent):
            self._send(text[len(self.sent):safe])

    def finish(self, final: str) -> None:
        if final.startswith(self.sent):
            if len(final) > len(self.sent):
                self._send(final[len(self.sent):])
        else:  # cannot happen while generation and decoding keep their prefix property; say so if it does
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, final)

    def _held(self, text: str) -> int:
        """How many trailing characters of ``text`` the finished answer might not have."""
        keep = text.rstrip()
        for n in range(min(len(self.stop), len(keep)), 0, -1):
            if keep.endswith(self.stop[:n]):
                keep = keep[:-n].rstrip()
                break
        return len(text) - len(keep)

    def _send(self, piece: str) -> None:
        self.sent += piece
        try:
            self.emit(piece)
        except Exception:  # noqa: BLE001 - a listener's failure must not stop the batch
            log.exception("a stream listener failed")


@dataclass
class _Job:
    media: MediaSource
    question: Question
    on_text: Callable[[str], None] | None
    future: Future
    arrived: float = field(default_factory=time.monotonic)
    plan: Plan | None = None  # made before the input was encoded, when the job was waiting for it


@dataclass
class ServiceStats:
    """Counters since start (``GET /health`` shows them)."""

    questions: int = 0  # submitted
    answered: int = 0  # finished with an answer
    failed: int = 0  # finished with an error
    batches: int = 0  # answer_questions calls
    opened: int = 0  # inputs opened (found in the cache or encoded)
    encoded: int = 0  # of those, encoded now
    pending: int = 0  # waiting now
    open_inputs: int = 0  # kept open now


class AnswerService:
    """One model, an opener thread and an answering thread (see the module docstring)."""

    def __init__(self, model, *, gather_seconds: float = GATHER_SECONDS, max_batch: int = MAX_BATCH,
                 questions_per_batch: int = QUESTIONS_PER_BATCH, keep_open: int = KEEP_OPEN,
                 callbacks: Callbacks = NO_CALLBACKS):
        self.model = model
        self.gather_seconds, self.max_batch, self.keep_open = gather_seconds, max(1, max_batch), max(1, keep_open)
        self.questions_per_batch = questions_per_batch
        self.callbacks = callbacks
        self._stop_string = get_template(model.config.conv_mode).stop_string
        self._cond = threading.Condition()
        self._pending: dict[tuple, list[_Job]] = {}  # by input, in order of each backlog's first arrival
        self._inputs: OrderedDict[tuple, VideoInput] = OrderedDict()  # open inputs, least recently used first
        self._opening: set[tuple] = set()
        self._closed = False
        self._stats = ServiceStats()
        self._inline = tempfile.TemporaryDirectory(prefix="llamavid-serve-")  # inline images, while being opened
        self._opener = ThreadPoolExecutor(1, thread_name_prefix="llamavid-open")
        self._worker = threading.Thread(target=self._run, name="llamavid-answer", daemon=True)
        self._worker.start()

    # -- the public side ---------------------------------------------------------------------------------------
    def submit(self, media: MediaSource, question: Question,
               on_text: Callable[[str], None] | None = None) -> "Future[Answered]":
        """Queue a question about ``media``; ``on_text`` receives the answer's text as it is generated."""
        job = _Job(media, question, on_text, Future())
        key = input_key(media.key, question.options)
        with self._cond:
            if self._closed:
                raise ServiceClosed("the server is shutting down")
            self._pending.setdefault(key, []).append(job)
            self._stats.questions += 1
            self._cond.notify_all()
        return job.future

    def names_for(self, media: MediaSource) -> dict[str, str]:
        """The server's file names for ``media`` -> the reference the client sent (errors name it so)."""
        server = media.path if media.path is not None else self._inline_path(media)
        return {str(server): media.shown}

    def stats(self) -> ServiceStats:
        with self._cond:
            s = ServiceStats(**vars(self._stats))
            s.pending = sum(len(jobs) for jobs in self._pending.values())
            s.open_inputs = len(self._inputs)
            return s

    def close(self, timeout: float | None = None) -> None:
        """Take no new questions, answer the pending ones, then stop (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        self._opener.shutdown(wait=True)
        with self._cond:
            inputs, self._inputs = list(self._inputs.values()), OrderedDict()
        for vin in inputs:
            vin.close()
        self._inline.cleanup()

    def __enter__(self) -> "AnswerService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the answering thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._evict()
                    taken, wait = self._take(time.monotonic())
                    if taken is not None:
                        break
                    if self._closed and not self._pending and not self._opening:
                        return
                    self._cond.wait(wait)
            vin, jobs = taken
            try:
                self._answer(vin, jobs)
            except BaseException as exc:  # noqa: BLE001 - a bug: fail these questions, keep serving
                log.exception("answering failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _take(self, now: float) -> tuple[tuple[VideoInput, list[_Job]] | None, float | None]:
        """(the input and questions to answer next, or None and how long to wait). Holds the lock."""
        wait = None
        for key, jobs in self._pending.items():
            vin = self._inputs.get(key)
            if vin is None:
                if key not in self._opening:
                    self._opening.add(key)
                    self._opener.submit(self._open, key, jobs[0].media, jobs[0].question.options)
                continue
            due = jobs[0].arrived + self.gather_seconds
            if due <= now or len(jobs) >= self.max_batch or self._closed:
                taken, rest = jobs[:self.max_batch], jobs[self.max_batch:]
                if rest:
                    self._pending[key] = rest
                else:
                    del self._pending[key]
                self._inputs.move_to_end(key)
                return (vin, taken), None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _evict(self) -> None:
        """Close the least recently used inputs beyond ``keep_open`` that no question waits for. Holds the lock."""
        for key in list(self._inputs):
            if len(self._inputs) <= self.keep_open:
                break
            if key not in self._pending:
                self._inputs.pop(key).close()

    def _answer(self, vin: VideoInput, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # skips cancelled ones
        if not jobs:
            return
        streams = [TextStream(job.on_text, self._stop_string) if job.on_text is not None else None for job in jobs]

        def on_text(i: int, piece: str) -> None:
            if streams[i] is not None:
                streams[i].push(piece)

        results = answer_questions(self.model, vin, [job.question for job in jobs], plans=[job.plan for job in jobs],
                                   on_text=on_text, callbacks=self.callbacks,
                                   questions_per_batch=self.questions_per_batch)
        with self._cond:
            self._stats.batches += 1
            self._stats.answered += sum(r.ok for r in results)
            self._stats.failed += sum(not r.ok for r in results)
        for job, stream, result in zip(jobs, streams, results):
            if stream is not None and result.ok:
                stream.finish(result.answer.text)
            job.future.set_result(result)

    # -- the opener thread -------------------------------------------------------------------------------------
    def _open(self, key: tuple, media: MediaSource, options: AskOptions) -> None:
        """Prepare the input, plan the questions waiting for it (refusing at once, before any encoding, those
        that cannot be answered), then materialize its features if a question is left."""
        try:
            vin = self._open_media(key, media, options)
        except BaseException as exc:  # noqa: BLE001 - every question waiting for this input hears why
            if not isinstance(exc, LlamaVidError):
                log.exception("opening %s failed", media.shown)
            with self._cond:
                jobs = self._pending.pop(key, [])
                self._opening.discard(key)
                self._stats.failed += len(jobs)
                self._cond.notify_all()
            for job in jobs:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(exc)
            return
        with self._cond:
            self._opening.discard(key)
            if vin is not None:
                self._inputs[key] = vin
                self._stats.opened += 1
                self._stats.encoded += int(vin.encoded)
            self._cond.notify_all()

    def _open_media(self, key: tuple, media: MediaSource, options: AskOptions) -> VideoInput | None:
        """The input's features, or None when every question waiting for it was refused by planning."""
        if media.path is not None:
            return self._prepare_plan_materialize(key, media, media.path, options)
        # an inline image: a file only while it is prepared and encoded (its features stay in the cache)
        path = self._inline_path(media)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(media.data)
        try:
            return self._prepare_plan_materialize(key, media, path, options)
        finally:
            os.unlink(path)

    def _prepare_plan_materialize(self, key: tuple, media: MediaSource, path: Path,
                                  options: AskOptions) -> VideoInput | None:
        # messages about the input (planning's) name it as the client did
        with prepare(self.model, path, options, callbacks=self.callbacks, label=media.shown) as ready:
            with self._cond:
                jobs = list(self._pending.get(key, []))
            refused: list[tuple[_Job, LlamaVidError]] = []
            for job in jobs:
                q = job.question
                try:
                    job.plan = plan_question(self.model, ready, q.text, q.options, history=q.history)
                except LlamaVidError as exc:
                    refused.append((job, exc))
            if refused:
                with self._cond:
                    left = [j for j in self._pending.get(key, []) if all(j is not r for r, _ in refused)]
                    if left:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
                    self._stats.failed += len(refused)
                for job, exc in refused:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_result(Answered(job.question, error=exc))
            with self._cond:
                if not self._pending.get(key):
                    return None  # nothing left to answer: nothing is encoded
            vin = materialize(self.model, ready, callbacks=self.callbacks)
            if not timeline_held(ready, vin):
                for job in jobs:
                    job.plan = None  # frames failed to decode: planned again when answered
            return vin

    def _inline_path(self, media: MediaSource) -> Path:
        """Where an inline image is while it is encoded: its own folder, under the name ``image``, so
        that even a message naming the file says nothing about the server's folders."""
        return Path(self._inline.name) / str(media.key[1]) / f"image{media.suffix}"
