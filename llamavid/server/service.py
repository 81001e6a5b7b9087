"""``AnswerService``: one model answering questions that arrive concurrently (``llamavid serve``'s engine).

    submit(media, question) --> pending, per input --> opener thread: open_input once per input
                                                   --> answering thread: answer_questions(all pending of one input)
    submit(None, question)  --> pending, text only --> answering thread: answer_texts(all pending text questions)

* **Batching.** Questions about the same input (same media, same ``input_key`` options) that are pending
  together go through ``answer_questions`` in one call, which sends those with equal plans through the
  model together. The answering thread waits ``gather_seconds`` after an input's first pending question
  for others to join; while it is busy, new questions pile up and form the next batch by themselves.
  Of the questions taken together, those asking for the fewest new tokens are answered first, and each
  question is settled as soon as its own batch is done. Questions without media are answered by the
  language model alone (``answer_texts``), batched alike.
* **Isolation.** Everything a question carries was validated before it was submitted (the request's
  fields) or is checked by planning, question by question, before it joins a batch. A batch that still
  fails is answered again one question at a time (``answer_questions`` does it for llamavid's errors, this
  service for any other exception), so only the question at fault fails; a stream that already sent text
  of that question goes on only if the new answer begins with what was sent.
* **Encoding once.** An input is opened (and, if new, encoded) by one opener thread, once however many
  questions ask at the same moment; it then stays open for the next questions (the ``keep_open`` most
  recently used inputs). Across processes, ``open_input``'s cache and the encoder's file lock do the same.
* **Streaming.** ``on_text`` receives an answer's text as it is generated, through ``TextStream``: the
  pieces add up to exactly the text of the finished answer.
* **Cancellation.** ``cancel(future)`` drops a waiting question at once and stops one being generated
  within one decoding step (the other questions of its batch go on); its future then holds an
  ``Answered`` with the cancelling error. ``cancel_all`` does it to every question (a shutdown's deadline).
* **Shutdown.** ``close`` refuses new questions, answers every pending one (for at most ``timeout``
  seconds, then cancels the rest), then stops the threads.
* **Counters.** ``stats``: every question submitted is pending, running, or finished as answered, failed or
  cancelled (``questions == answered + failed + cancelled + pending + running``).

Each submitted question gets a ``concurrent.futures.Future`` of its ``Answered`` (a refused question is
an ``Answered`` with an ``error``); the future fails only when its input could not be opened (with the
``LlamaVidError`` that said why) or on a bug.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import LlamaVidError
from ..core.options import CHAT_SAMPLING, AskOptions
from ..model.generation import cut_at_stop
from ..model.prompt import get_template
from ..pipeline.inputs import VideoInput
from ..pipeline.materialize import materialize, timeline_held
from ..pipeline.planning import Plan, plan_question
from ..pipeline.prepare import input_key, prepare
from ..tasks.qa import QUESTIONS_PER_BATCH, Answered, Question, answer_questions, answer_texts
from ..tasks.search import SearchResult, search
from .media_access import MediaSource

log = logging.getLogger("llamavid.service")

GATHER_SECONDS = 0.02  # how long a first question waits for others about the same input
MAX_BATCH = 32  # questions taken from one input's queue per answer_questions call
KEEP_OPEN = 8  # inputs kept open between questions
TEXT_KEY = ("text",)  # the queue of questions without media


class ServiceClosed(LlamaVidError):
    """The service is shutting down and takes no new questions (or stopped before a question was answered)."""


class Cancelled(LlamaVidError):
    """A question its asker gave up on (a client that disconnected)."""


class TextStream:
    """Relays an answer's pieces so that they add up to exactly the finished answer's text.

    The finished text is the generated text cut before the first of the request's ``stops``, with
    surrounding whitespace and a trailing template stop string removed (``model.generation.generate``), so
    leading whitespace and a trailing run that could still be removed (whitespace, the start of a stop
    string) are held back until more text shows they stay; ``finish`` sends whatever the finished text has
    beyond what was sent. ``restart`` starts the answer again (after a failed batch) without sending again
    what was sent.
    """

    def __init__(self, emit: Callable[[str], None], stop_string: str = "", stops: Sequence[str] = ()):
        self.emit, self.stop, self.stops = emit, stop_string.strip(), tuple(stops)
        self.raw = ""
        self.sent = ""

    def push(self, piece: str) -> None:
        self.raw += piece
        text, cut = cut_at_stop(self.raw, self.stops) if self.stops else (self.raw, False)
        text = text.lstrip()
        safe = len(text) - self._held(text, cut)
        if safe > len(self.sent) and text.startswith(self.sent):
            self._send(text[len(self.sent):safe])

    def restart(self) -> None:
        self.raw = ""

    def finish(self, final: str) -> bool:
        """Send the rest of the finished answer; False when what was sent is not its beginning (an answer
        generated again after a failed batch that took another turn)."""
        if final.startswith(self.sent):
            if len(final) > len(self.sent):
                self._send(final[len(self.sent):])
            return True
        log.warning("streamed text %r is not a prefix of the answer %r", self.sent, final)
        return False

    def _held(self, text: str, cut: bool) -> int:
        """How many trailing characters of ``text`` the finished answer might not have."""
        keep = text.rstrip()
        for n in range(min(len(self.stop), len(keep)), 0, -1):
            if keep.endswith(self.stop[:n]):
                keep = keep[:-n].rstrip()
                break
        held = len(text) - len(keep)
        if not cut:  # the start of a stop string may be completed by the next piece
            for stop in self.stops:
                for n in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:n]):
                        held = max(held, n)
                        break
        return held

    def _send(self, piece: str) -> None:
        self.sent += piece
        try:
            self.emit(piece)
        except Exception:  # noqa: BLE001 - a listener's failure must not stop the batch
            log.exception("a stream listener failed")


@dataclass(eq=False)
class _Job:
    media: MediaSource | None
    question: Question
    on_text: Callable[[str], None] | None
    future: Future
    arrived: float = field(default_factory=time.monotonic)
    plan: Plan | None = None  # made before the input was encoded, when the job was waiting for it
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_error: LlamaVidError | None = None


@dataclass
class ServiceStats:
    """Counters since start (``GET /health`` shows them). Every question submitted is, at any moment, pending,
    running, answered, failed or cancelled."""

    questions: int = 0  # submitted
    answered: int = 0  # finished with an answer
    failed: int = 0  # finished with an error
    cancelled: int = 0  # given up on: their clients disconnected, or the server stopped first
    batches: int = 0  # answer_questions / answer_texts calls
    opened: int = 0  # inputs opened (found in the cache or encoded)
    encoded: int = 0  # of those, encoded now
    pending: int = 0  # waiting now
    running: int = 0  # being answered now
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
        self._running: list[_Job] = []
        self._jobs: dict[Future, _Job] = {}  # every job not finished yet
        self._inputs: OrderedDict[tuple, VideoInput] = OrderedDict()  # open inputs, least recently used first
        self._opening: set[tuple] = set()
        self._closed = False
        self._stats = ServiceStats()
        self._inline = tempfile.TemporaryDirectory(prefix="llamavid-serve-")  # inline media, while being opened
        # Daemon threads: a shutdown's deadline must not wait for an encoding in progress (it resumes later).
        self._opens: queue.SimpleQueue = queue.SimpleQueue()
        self._opener = threading.Thread(target=self._open_loop, name="llamavid-open", daemon=True)
        self._opener.start()
        self._worker = threading.Thread(target=self._run, name="llamavid-answer", daemon=True)
        self._worker.start()

    # -- the public side ---------------------------------------------------------------------------------------
    def submit(self, media: MediaSource | None, question: Question,
               on_text: Callable[[str], None] | None = None) -> "Future[Answered]":
        """Queue a question about ``media`` (None: the text alone); ``on_text`` receives the answer's text as it
        is generated."""
        job = _Job(media, question, on_text, Future())
        key = TEXT_KEY if media is None else input_key(media.key, question.options)
        with self._cond:
            if self._closed:
                raise ServiceClosed("the server is shutting down")
            self._pending.setdefault(key, []).append(job)
            self._jobs[job.future] = job
            self._stats.questions += 1
            self._cond.notify_all()
        return job.future

    def cancel(self, future: Future, error: LlamaVidError | None = None) -> bool:
        """Give up on a submitted question: dropped at once if it waits, stopped within one decoding step if it is
        being answered. Its future holds an ``Answered`` with ``error`` (default: ``Cancelled``). False when
        it had already finished."""
        with self._cond:
            job = self._jobs.get(future)
            if job is None or future.done() or job.cancelled.is_set():
                return False
            job.cancel_error = error or Cancelled("the client disconnected before the answer was finished")
            job.cancelled.set()
            waiting = False
            for key, jobs in list(self._pending.items()):
                if any(j is job for j in jobs):
                    left = [j for j in jobs if j is not job]
                    if left:
                        self._pending[key] = left
                    else:
                        del self._pending[key]
                    waiting = True
            if waiting:
                self._finish(job, Answered(job.question, error=job.cancel_error), "cancelled")
            self._cond.notify_all()
        return True

    def cancel_all(self, error: LlamaVidError | None = None) -> int:
        """Cancel every question not finished yet (``cancel``); how many were."""
        with self._cond:
            futures = list(self._jobs)
        return sum(self.cancel(f, error) for f in futures)

    def names_for(self, media: MediaSource | None) -> dict[str, str]:
        """The server's file names for ``media`` -> the reference the client sent (errors name it so)."""
        if media is None:
            return {}
        server = media.path if media.path is not None else self._inline_path(media)
        return {str(server): media.shown}

    def stats(self) -> ServiceStats:
        with self._cond:
            s = ServiceStats(**vars(self._stats))
            s.pending = sum(len(jobs) for jobs in self._pending.values())
            s.running = len(self._running)
            s.open_inputs = len(self._inputs)
            return s

    def close(self, timeout: float | None = None) -> None:
        """Take no new questions, answer the pending ones (for at most ``timeout`` seconds; then the rest are
        cancelled with ``ServiceClosed``), then stop (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        if self._worker.is_alive():
            self.cancel_all(ServiceClosed("the server stopped before the answer was finished"))
            self._worker.join(10)  # a decoding step, or a prefill
        self._opens.put(None)
        with self._cond:
            inputs, self._inputs = list(self._inputs.values()), OrderedDict()
        for vin in inputs:
            vin.close()
        if not self._opener.is_alive():
            self._inline.cleanup()  # (else an encoding still reads its file; the folder goes with the process)

    def __enter__(self) -> "AnswerService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bookkeeping (holds the lock) --------------------------------------------------------------------------
    def _finish(self, job: _Job, result: Answered | BaseException, outcome: str) -> None:
        """Count a job's outcome ("answered", "failed", "cancelled") and resolve its future."""
        setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)
        self._jobs.pop(job.future, None)
        if any(j is job for j in self._running):
            self._running = [j for j in self._running if j is not job]
        future = job.future
        if future.done() or (not future.running() and not future.set_running_or_notify_cancel()):
            return  # (a future cancelled by its holder: nobody waits for it)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

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
                # the shortest answers first: a batch of long ones does not hold up short questions taken with it
                jobs.sort(key=lambda job: job.question.options.max_new_tokens or CHAT_SAMPLING.max_new_tokens)
                self._running.extend(jobs)
            try:
                self._answer(vin, jobs)
            except BaseException as exc:  # noqa: BLE001 - a bug: fail these questions, keep serving
                log.exception("answering failed")
                with self._cond:
                    for job in jobs:
                        if job.future in self._jobs:
                            self._finish(job, exc, "failed")

    def _take(self, now: float) -> tuple[tuple[VideoInput | None, list[_Job]] | None, float | None]:
        """(the input and questions to answer next, or None and how long to wait). Holds the lock."""
        wait = None
        for key, jobs in self._pending.items():
            vin = self._inputs.get(key)
            if vin is None and key != TEXT_KEY:
                if key not in self._opening:
                    self._opening.add(key)
                    self._opens.put((key, jobs[0].media, jobs[0].question.options))
                continue
            due = jobs[0].arrived + self.gather_seconds
            if due <= now or len(jobs) >= self.max_batch or self._closed:
                taken, rest = jobs[:self.max_batch], jobs[self.max_batch:]
                if rest:
                    self._pending[key] = rest
                else:
                    del self._pending[key]
                if vin is not None:
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

    def _answer(self, vin: VideoInput | None, jobs: list[_Job]) -> None:
        """Answer ``jobs``; each is settled as soon as its own batch is done."""
        streams = [TextStream(job.on_text, self._stop_string, job.question.options.stop or ())
                   if job.on_text is not None else None for job in jobs]
        settled = [False] * len(jobs)

        def settle(i: int, result: Answered | BaseException) -> None:
            if not settled[i]:
                settled[i] = True
                self._settle(jobs[i], streams[i], result)

        with self._cond:
            self._stats.batches += 1
        try:
            results: list[Answered] = self._answer_jobs(vin, jobs, streams, settle)
        except Exception:  # noqa: BLE001 - not a llamavid error: one by one, so that only the question at fault fails
            log.exception("a batch of %d questions failed; answering them one by one", len(jobs))
            for i, (job, stream) in enumerate(zip(jobs, streams)):
                if settled[i]:
                    continue
                if stream is not None:
                    stream.restart()
                try:
                    self._answer_jobs(vin, [job], [stream], lambda _k, result, i=i: settle(i, result))
                except Exception as exc:  # noqa: BLE001 - this question's own failure (a 500: a bug)
                    log.exception("answering one question failed")
                    settle(i, exc)
            return
        for i, result in enumerate(results):
            settle(i, result)

    def _settle(self, job: _Job, stream: TextStream | None, result: Answered | BaseException) -> None:
        """A job's outcome, counted, and its future resolved."""
        with self._cond:
            if isinstance(result, BaseException):
                self._finish(job, result, "failed")
            elif job.cancelled.is_set() and not (result.ok and not result.answer.cancelled):
                self._finish(job, Answered(job.question, result.plan, error=job.cancel_error), "cancelled")
            elif result.ok and stream is not None and not stream.finish(result.answer.text):
                self._finish(job, Answered(job.question, result.plan, error=LlamaVidError(
                    "the answer was generated again after a failed batch and differs from the text already "
                    "streamed; ask again")), "failed")
            else:
                self._finish(job, result, "answered" if result.ok else "failed")

    def _answer_jobs(self, vin: VideoInput | None, jobs: list[_Job], streams: list[TextStream | None],
                     settle: Callable[[int, Answered], None]) -> list[Answered]:
        def on_text(i: int, piece: str) -> None:
            if streams[i] is not None:
                streams[i].push(piece)

        def on_retry(i: int) -> None:
            if streams[i] is not None:
                streams[i].restart()

        common = dict(on_text=on_text, callbacks=self.callbacks, questions_per_batch=self.questions_per_batch,
                      cancelled=lambda i: jobs[i].cancelled.is_set(), on_retry=on_retry, on_answered=settle)
        questions = [job.question for job in jobs]
        if vin is None:
            return answer_texts(self.model, questions, **common)
        return answer_questions(self.model, vin, questions, plans=[job.plan for job in jobs], **common)

    # -- the opener thread -------------------------------------------------------------------------------------
    def _open_loop(self) -> None:
        while True:
            item = self._opens.get()
            if item is None:
                return
            try:
                self._open(*item)
            except BaseException:  # noqa: BLE001 - never reached (_open reports everything); keep the thread
                log.exception("opening an input failed")

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
                for job in jobs:
                    self._finish(job, exc, "failed")
                self._cond.notify_all()
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
        # inline media: a file only while it is prepared and encoded (its features stay in the cache)
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
                    job.plan = plan_question(self.model, ready, q.text, q.options, history=q.history, system=q.system)
                except LlamaVidError as exc:
                    refused.append((job, exc))
            if refused:
                with self._cond:
                    left = [j for j in self._pending.get(key, []) if all(j is not r for r, _ in refused)]
                    if left:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
                    for job, exc in refused:
                        if job.future in self._jobs:
                            self._finish(job, Answered(job.question, error=exc), "failed")
            with self._cond:
                if not self._pending.get(key):
                    return None  # nothing left to answer: nothing is encoded
            vin = materialize(self.model, ready, callbacks=self.callbacks)
            if not timeline_held(ready, vin):
                for job in jobs:
                    job.plan = None  # frames failed to decode: planned again when answered
            return vin

    def _inline_path(self, media: MediaSource) -> Path:
        """Where inline media is while it is encoded: its own folder, under the name ``image`` or ``video``, so
        that even a message naming the file says nothing about the server's folders."""
        from .media_access import DATA_VIDEO_TYPES

        stem = "video" if media.suffix in DATA_VIDEO_TYPES.values() else "image"
        return Path(self._inline.name) / str(media.key[1]) / f"{stem}{media.suffix}"


# ---------------------------------------------------------------------------------------------------------
# searches


@dataclass
class SearchStats:
    searches: int = 0  # requests submitted
    found: int = 0  # finished with moments
    failed: int = 0  # refused by the search (a library that cannot be searched)
    cancelled: int = 0  # their clients left first


class SearchService:
    """Library searches (``llamavid.tasks.search``, ``POST /v1/llamavid/search``): one at a time, on a thread of
    their own, beside the answering thread (a search streams a library's files and their indexes through the
    model's text-guided attention, then asks its checks through the usual path; two at once would only share
    the same cores). ``cancel`` stops a search at the next file of its first stage (a client that left)."""

    def __init__(self, model, *, callbacks: Callbacks = NO_CALLBACKS):
        self.model = model
        self.callbacks = callbacks
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamavid-search")
        self._lock = threading.Lock()
        self._stops: dict[Future, threading.Event] = {}
        self._stats = SearchStats()
        self._closed = False

    def submit(self, request) -> "Future[SearchResult]":
        """Queue a ``SearchRequest`` (``llamavid.server.protocol``); its future holds the ``SearchResult``, or
        the ``LlamaVidError`` that refused it."""
        stop = threading.Event()

        def progress(_done: int, _total: int) -> None:
            if stop.is_set():
                raise Cancelled("the client disconnected before the search was finished")

        def run() -> SearchResult:
            callbacks = Callbacks(progress=progress, warning=self.callbacks.warning)
            return search(self.model, request.files, request.query, request.options, callbacks=callbacks)

        with self._lock:
            if self._closed:
                raise ServiceClosed("the server is shutting down")
            self._stats.searches += 1
            future = self._pool.submit(run)
            self._stops[future] = stop
        future.add_done_callback(self._count)
        return future

    def cancel(self, future: Future) -> bool:
        """Give up on a search: dropped if it waits, stopped at its next file if it runs. False if it had
        finished."""
        with self._lock:
            stop = self._stops.get(future)
        if stop is None or future.done():
            return False
        stop.set()
        future.cancel()
        return True

    def stats(self) -> SearchStats:
        with self._lock:
            return SearchStats(**vars(self._stats))

    def close(self) -> None:
        """Take no new searches; those waiting are dropped, the one running stops at its next file."""
        with self._lock:
            self._closed = True
            stops = list(self._stops.values())
        for stop in stops:
            stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _count(self, future: Future) -> None:
        with self._lock:
            self._stops.pop(future, None)
            if future.cancelled():
                self._stats.cancelled += 1
            elif isinstance(future.exception(), Cancelled):
                self._stats.cancelled += 1
            elif future.exception() is not None:
                self._stats.failed += 1
            else:
                self._stats.found += 1
