"""The OpenAI-compatible HTTP application (FastAPI): its endpoints, the shaping of replies, and how errors
are worded for HTTP clients.

A thin layer over the library, as vLLM's ``entrypoints/openai`` is: it reads the request (size-limited
JSON), hands the body to ``llamavid.server.protocol.parse_chat_request`` (every field validated once, media
checked against the media roots), submits the question to the batching ``llamavid.server.service.
AnswerService``, and writes the answer in OpenAI's shapes (``chat.completion`` JSON, or
``chat.completion.chunk`` server-sent events). Every refusal is a 4xx with ``{"error": {"message", "type",
"param", "code"}}``: the status and code come from one table (``describe``), and the message is the
library error worded for HTTP (options as request fields, ``"max_frames": 12``; files as the client
named them, and no other path of the server's at all: ``HttpStyle``). Every JSON body is valid UTF-8 (a lone
surrogate a client sent comes back as a JSON escape).

A client that disconnects gives up its question (``AnswerService.cancel``: its generation stops within one
decoding step), streaming or not. ``begin_shutdown(timeout)`` (``application.state``), called when the
server starts stopping, lets the work in flight finish for ``timeout`` seconds, then cancels what is left
(503 ``shutting_down``) and refuses request bodies still arriving. See docs/SERVE.md. ``llamavid serve``
(llamavid_cli/serve.py) only parses flags and runs uvicorn.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request), which
# are imported inside create_app so that the library imports without the serve extra installed.
import asyncio
import hmac
import json
import logging
import os
import re
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Sequence

from ..core.errors import (
    ContextOverflowError,
    JsonStyle,
    LlamaVidError,
    MemoryLimitError,
    RequestError,
    VideoError,
    VidtokError,
)
from ..core.fileio import dump_record
from ..core.options import AskOptions
from .protocol import DEFAULT_MAX_TOKENS_LIMIT, OPENAI_NAMES
from .service import Cancelled, ServiceClosed

log = logging.getLogger("llamavid.serve")

DEFAULT_MAX_BODY_MB = 20.0
DEFAULT_MAX_IMAGE_MB = 10.0
DEFAULT_MAX_VIDEO_MB = 10.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
_DONE = object()  # end of an answer's text pieces


def create_app(model, media, *, model_id: str, api_key: str | None = None,
               max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6), service=None, defaults: AskOptions = AskOptions(),
               max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
               searcher=None):
    """The FastAPI application: /health, /v1/models, /v1/chat/completions over an ``AnswerService``, and
    /v1/llamavid/search (a library search under the media roots) over a ``SearchService``.

    ``max_tokens_limit``: the most new tokens any answer may have; ``shutdown_timeout``: how long the work in
    flight may take once the server is stopping (``application.state.begin_shutdown``)."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ..core.callbacks import Callbacks
    from .protocol import SEARCH_FIELDS, parse_chat_request, parse_search_request
    from .service import AnswerService, SearchService

    if service is None:
        service = AnswerService(model, callbacks=Callbacks(warning=log.warning, status=log.info))
    if searcher is None:
        searcher = SearchService(model, callbacks=Callbacks(warning=log.warning))
    created = int(time.time())
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "llamavid"}
    stopping = asyncio.Event()  # set at the shutdown deadline: request bodies still arriving are refused
    ignored_seen: set[str] = set()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        # after uvicorn has finished every request in flight (or the deadline has cancelled them): nothing is
        # left to answer, and whatever is left once a second has passed is cancelled
        searcher.close()
        await run_in_threadpool(service.close, 1.0)

    def begin_shutdown(timeout: float = shutdown_timeout) -> None:
        """The server is stopping: what is in flight may finish for ``timeout`` seconds; then the rest is
        cancelled. Call from the event loop."""
        def deadline() -> None:
            stopping.set()
            searcher.close()
            left = service.cancel_all(ServiceClosed("the server stopped before the answer was finished (its "
                                                    "shutdown deadline, --shutdown-timeout, passed)"))
            if left:
                log.info("shutdown deadline: %d unfinished question(s) cancelled", left)

        asyncio.get_running_loop().call_later(max(0.0, timeout), deadline)

    application = FastAPI(title="llamavid", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    application.state.service = service
    application.state.searcher = searcher
    application.state.begin_shutdown = begin_shutdown
    roots = tuple(str(r) for r in getattr(media, "roots", ()))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8", "replace"),
                                                                 api_key.encode()):
            raise RequestError("a valid API key is required: Authorization: Bearer KEY" if not token.strip()
                               else "the API key is not valid", status=401, code="invalid_api_key")

    auth = [Depends(check_key)]

    @application.exception_handler(LlamaVidError)
    async def _refused(_request, exc: LlamaVidError):
        return refusal(exc, HttpStyle(roots=roots))

    @application.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        text = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, text, code="not_found" if exc.status_code == 404 else None,
                              headers=getattr(exc, "headers", None))

    @application.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return error_response(400, "the request is not valid: " + "; ".join(str(e.get("msg")) for e in exc.errors()))

    @application.exception_handler(Exception)
    async def _bug(_request, exc: Exception):
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return error_response(500, "internal error in llamavid (the server's log has the details)")

    @application.get("/health")
    async def health():
        stats = service.stats()
        return {"status": "ok", "model": model_id, **vars(stats)}

    @application.get("/v1/models", dependencies=auth)
    async def models():
        return {"object": "list", "data": [card]}

    @application.get("/v1/models/{name:path}", dependencies=auth)
    async def one_model(name: str):
        if name != model_id:
            raise RequestError(f"the model {name!r} is not served here; this server serves {model_id!r}",
                               status=404, param="model", code="model_not_found")
        return card

    @application.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request):
        body = await read_json(request, max_body_bytes, stopping)
        req = await run_in_threadpool(parse_chat_request, body, model_id=model_id, media=media, defaults=defaults,
                                      max_tokens_limit=max_tokens_limit)
        fresh = [name for name in req.ignored if name not in ignored_seen]
        if fresh:
            ignored_seen.update(fresh)
            log.warning("ignoring the request field(s) %s: llamavid does not use them (logged once per field)",
                        ", ".join(repr(name) for name in fresh))
        # errors name files as the client did, and no other path of the server's
        style = HttpStyle({**req.files, **service.names_for(req.media)}, roots)
        reply = Reply(model, model_id, style)
        if not req.stream:
            futures = [service.submit(req.media, req.question) for _ in range(req.n)]
            try:
                answered = await _answers(request, futures)
            finally:
                for future in futures:  # a client gone, or this task cancelled: the rest is not generated
                    service.cancel(future)
            if answered is None:
                return _gone()
            for one in answered:
                if one.error is not None:
                    return refusal(one.error, style)
            return json_response(reply.completion(answered, req.logprobs))
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        futures = []
        try:
            for index in range(req.n):
                future = service.submit(req.media, req.question,
                                        on_text=lambda piece, i=index: _post(loop, pieces, (i, piece)))
                future.add_done_callback(lambda _f, i=index: _post(loop, pieces, (i, _DONE)))
                futures.append(future)
            first = await _first(request, pieces)
        except BaseException:
            for future in futures:
                service.cancel(future)
            raise
        if first is None:  # the client left before anything was generated
            for future in futures:
                service.cancel(future)
            return _gone()
        index, piece = first
        failed = futures[index]
        if piece is _DONE and (failed.exception() is not None or failed.result().error is not None):
            # a refusal (a bad video, a question too long) comes before any text: a 4xx
            for future in futures:
                service.cancel(future)
            exc = failed.exception() or failed.result().error
            if isinstance(exc, LlamaVidError):
                return refusal(exc, style)
            raise exc
        return StreamingResponse(reply.events(first, pieces, futures, req.include_usage, req.logprobs,
                                              lambda: [service.cancel(f) for f in futures]),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @application.post("/v1/llamavid/search", dependencies=auth)
    async def llamavid_search(request: Request):
        body = await read_json(request, max_body_bytes, stopping)
        try:
            req = await run_in_threadpool(parse_search_request, body, model_id=model_id, media=media,
                                          defaults=defaults, max_tokens_limit=max_tokens_limit)
        except LlamaVidError as exc:  # worded with the search's fields ("top": 0)
            return search_refusal(exc, HttpStyle(roots=roots, fields=SEARCH_FIELDS))
        style = HttpStyle(req.names, roots, fields=SEARCH_FIELDS)
        future = searcher.submit(req)
        try:
            done = await _answers(request, [future], results=False)
        finally:
            searcher.cancel(future)  # (nothing if it finished) a client gone, or this task cancelled
        if done is None:
            return _gone()
        if future.cancelled():  # the server stopped before the search began
            return search_refusal(ServiceClosed("the server stopped before the search was finished"), style)
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, LlamaVidError):
                return search_refusal(exc, style)
            raise exc
        result = future.result()
        record = result.to_json()
        return json_response({"object": "llamavid.search", "model": model_id, **record,
                              "skipped": [style.finish(text) for text in (*req.skipped, *result.skipped)]})

    return application


def search_refusal(exc: LlamaVidError, style: "HttpStyle"):
    """A search's refusal: as ``refusal``, the files at fault being the request's ``paths``."""
    status, text, param, code = describe(exc, style)
    if param == "messages" and not isinstance(exc, RequestError):  # (the table's param, for chat requests)
        param = "paths"
    return error_response(status, text, param=param, code=code)


def _gone():
    """The reply to a client that has disconnected: nobody reads it; the access log shows 499 (as nginx names
    a request its client closed)."""
    from fastapi.responses import Response

    return Response(status_code=499)


async def _until_disconnected(request) -> None:
    """Returns when the client has gone (the request body was read in full before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _answers(request, futures, results: bool = True) -> list | None:
    """The results of ``futures`` (with ``results=False``: the futures, done), or None when the client
    disconnects first."""
    wrapped = [asyncio.wrap_future(f) for f in futures]
    for w in wrapped:  # an outcome nobody waits for any more is not "never retrieved"
        w.add_done_callback(lambda f: f.cancelled() or f.exception())
    gone = asyncio.ensure_future(_until_disconnected(request))
    waiting = set(wrapped)
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting | {gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                return None
            waiting -= done
    finally:
        gone.cancel()
    return [w.result() for w in wrapped] if results else list(futures)


_LOST = object()  # what ``_unless`` returns when the other event came first


async def _unless(wanted: Awaitable, other: Awaitable) -> Any:
    """The result of ``wanted``, or ``_LOST`` when ``other`` finishes first (``wanted`` is then cancelled)."""
    wanted, other = asyncio.ensure_future(wanted), asyncio.ensure_future(other)
    try:
        done, _ = await asyncio.wait({wanted, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()
    if wanted in done:
        return wanted.result()
    wanted.cancel()
    return _LOST


async def _first(request, pieces: asyncio.Queue):
    """The first (index, piece) of a stream, or None when the client disconnects first."""
    first = await _unless(pieces.get(), _until_disconnected(request))
    return None if first is _LOST else first


class Reply:
    """One completion's OpenAI-shaped output: a ``chat.completion`` or its ``chat.completion.chunk`` events."""

    def __init__(self, model, model_id: str, style: "HttpStyle | None" = None):
        self.model, self.model_id = model, model_id
        self.style = style or HttpStyle()
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, answered: Sequence, logprobs: bool = False) -> dict[str, Any]:
        """``answered``: one ``Answered`` per choice."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_id,
                "choices": [{"index": i,
                             "message": {"role": "assistant", "content": one.answer.text, "refusal": None},
                             "logprobs": self._logprobs(one) if logprobs else None, "finish_reason": self._finish(one)}
                            for i, one in enumerate(answered)],
                "usage": self._usage(answered), "system_fingerprint": None, "llamavid": self._extra(answered[0])}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0, logprobs=None,
              **extra: Any) -> str:
        record = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id,
                  "system_fingerprint": None,
                  "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
                  **extra}
        return _sse(record)

    async def events(self, first, pieces: asyncio.Queue, futures: list, include_usage: bool, logprobs: bool,
                     cancel):
        """The chunks of every choice as its text arrives; ``cancel`` is called if the client goes away."""
        try:
            started: set[int] = set()
            finished: list = [None] * len(futures)
            item = first
            while True:
                index, piece = item
                if index not in started:
                    started.add(index)
                    yield self.chunk({"role": "assistant", "content": "", "refusal": None}, index=index)
                if piece is not _DONE:
                    yield self.chunk({"content": piece}, index=index)
                else:
                    finished[index], event = self._outcome(futures[index])
                    if event is not None:  # an error: the stream ends with it
                        cancel()
                        yield event
                        yield "data: [DONE]\n\n"
                        return
                    one = finished[index]
                    yield self.chunk({}, self._finish(one), index=index,
                                     logprobs=self._logprobs(one) if logprobs else None, llamavid=self._extra(one))
                    if all(f is not None for f in finished):
                        break
                item = await pieces.get()
            if include_usage:
                yield _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model_id, "system_fingerprint": None, "choices": [],
                            "usage": self._usage(finished)})
            yield "data: [DONE]\n\n"
        finally:
            cancel()  # (a no-op for finished questions) the client went away: stop generating for it

    def _outcome(self, future):
        """(the Answered, None) or (None, an error event)."""
        try:
            answered = future.result()
            if answered.error is not None:
                raise answered.error
        except LlamaVidError as exc:
            return None, _sse(_error_body(*describe(exc, self.style)))
        except Exception as exc:  # noqa: BLE001 - a bug: the client hears of it, the log has the traceback
            log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
            return None, _sse(_error_body(500, "internal error in llamavid (the server's log has the details)"))
        return answered, None

    @staticmethod
    def _finish(answered) -> str:
        return "length" if answered.answer.truncated else "stop"

    @staticmethod
    def _usage(answered: Sequence) -> dict[str, int]:
        prompt = answered[0].answer.prompt_tokens
        completion = sum(one.answer.new_tokens for one in answered)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _logprobs(self, answered) -> dict[str, Any]:
        """OpenAI's ``logprobs`` object: every generated token with its log-probability and the likeliest ones."""
        tokenizer = self.model.text_tokenizer

        def entry(token: int, logprob: float) -> dict[str, Any]:
            raw = tokenizer.token_bytes(token)
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

        content = [{**entry(t.token, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                   for t in answered.answer.logprobs or ()]
        return {"content": content, "refusal": None}

    def _extra(self, answered) -> dict[str, Any]:
        """llamavid's own answer fields (frames, seconds; evidence, choices...), as ``ask --json`` has them."""
        from ..tasks.qa import AnswerRecord

        record = AnswerRecord.of(self.model, answered, "").to_json()
        return {k: v for k, v in record.items() if k not in ("input", "question", "answer", "model")}


# ---------------------------------------------------------------------------------------------------------
# errors and helpers


# How each error type answers over HTTP: (type, status, code, param), the first that matches. A RequestError
# carries its own status, code and param (the request field at fault).
STATUS_TABLE: tuple[tuple[type, int, str | None, str | None], ...] = (
    (ServiceClosed, 503, "shutting_down", None),
    (Cancelled, 503, "cancelled", None),
    (ContextOverflowError, 400, "context_length_exceeded", "messages"),
    (MemoryLimitError, 400, "insufficient_memory", "messages"),
    (VideoError, 400, "invalid_media", "messages"),
    (VidtokError, 400, "invalid_media", "messages"),
    (LlamaVidError, 400, None, None),
)


# An absolute path in a message: a "/" that starts a word (not "a/b", "image/png" or "file:///...") and what
# follows it up to a space, a quote or a bracket.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])/[^\s'\"<>()\[\]{},;|`]+")
_FILE_URL = re.compile(r"file://(?:localhost)?(/[^\s'\"<>()\[\]{},;|`]*)")


class HttpStyle(JsonStyle):
    """Library errors worded for an HTTP client: options as the request's fields (``"max_tokens": 5``),
    options only the server's operator sets as its flags, files by the names the client sent, and no path
    of the server's at all: a file under a media root by its path inside the root, any other absolute path
    by its name alone, wherever it stands in the message (a cut one included)."""

    names = dict(OPENAI_NAMES)

    def __init__(self, files: dict[str, str] | None = None, roots: Sequence[str] = (),
                 fields: Sequence[str] | None = None):
        self.files = files or {}
        self.roots = tuple(r.rstrip("/") for r in roots if r.rstrip("/"))
        self.fields = None if fields is None else frozenset(fields)  # the endpoint's fields (None: chat's)

    def option(self, opt) -> str:
        from .protocol import request_fields

        fields = request_fields() if self.fields is None else self.fields
        if opt.name not in fields and self.names.get(opt.name, opt.name) not in fields:
            flag = "--" + opt.name.replace("_", "-")
            return f"the server's {flag} {opt.value}" if opt.has_value else f"the server's {flag}"
        return super().option(opt)

    def where(self, where: str) -> str:
        if where in self.files:
            return self.files[where]
        return where

    def finish(self, text: str) -> str:
        # the client's names for the request's files, kept out of the way of the path rule below
        kept: list[str] = []

        def keep(name: str) -> str:
            kept.append(name)
            return f"\x00{len(kept) - 1}\x00"

        for server, client in sorted(self.files.items(), key=lambda item: -len(item[0])):
            if server and client != server:
                text = text.replace(server, keep(client))
        for root in sorted(self.roots, key=len, reverse=True):  # a file under a root: as a client names it
            text = text.replace(root + "/", "").replace(root, keep(_name(root)))
        for folder in _server_folders():  # the cache, temporary files, the home folder: what follows them
            text = text.replace(folder + "/", "")
        text = _FILE_URL.sub(lambda m: _name(m.group(1)), text)
        text = _ABSOLUTE_PATH.sub(lambda m: _name(m.group()), text)
        return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _server_folders() -> list[str]:
    """Folders of the server's own whose paths a message may hold (a cache entry, a temporary file), longest
    first: a path under one is shown from there on."""
    import tempfile

    from ..model.checkpoint import user_cache_dir

    folders = set()
    for find in (user_cache_dir, tempfile.gettempdir, lambda: os.path.expanduser("~"), os.getcwd):
        try:
            folder = os.fspath(find()).rstrip("/")
        except Exception:  # noqa: BLE001 - a folder that cannot be found is not in any message either
            continue
        if folder:
            folders.add(folder)
            folders.add(os.path.realpath(folder))
    return sorted(folders, key=len, reverse=True)


def _name(path: str) -> str:
    """An absolute path as a message may show it: its last part (or "/" alone)."""
    return os.path.basename(path.rstrip("/")) or "/"


def describe(exc: LlamaVidError, style: HttpStyle | None = None) -> tuple[int, str, str | None, str | None]:
    """(status, message, param, code) of a library error, as an HTTP client hears of it."""
    text = exc.render(style or HttpStyle())
    if isinstance(exc, RequestError):
        return exc.status, text, exc.param, exc.code
    for kind, status, code, param in STATUS_TABLE:
        if isinstance(exc, kind):
            return status, text, param, code
    return 400, text, None, None


def _error_body(status: int, text: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            413: "invalid_request_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": text, "type": kind, "param": param, "code": code}}


def error_response(status: int, text: str, *, param: str | None = None, code: str | None = None, headers=None):
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return json_response(_error_body(status, text, param, code), status, headers)


def _json(record: Any) -> str:
    """JSON that is valid UTF-8 whatever it holds: lone surrogates (from a client's JSON escapes) as escapes."""
    return dump_record(record).rstrip("\n")


def json_response(content: Any, status: int = 200, headers=None):
    """A JSON reply that is valid UTF-8 whatever it holds (``_json``)."""
    from fastapi.responses import Response

    return Response(_json(content).encode("utf-8"), status_code=status, headers=headers,
                    media_type="application/json")


def refusal(exc: LlamaVidError, style: HttpStyle | None = None):
    status, text, param, code = describe(exc, style)
    return error_response(status, text, param=param, code=code)


async def read_json(request, limit: int, stopping: asyncio.Event | None = None) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes (413) before reading them all; a body still arriving
    when ``stopping`` is set (the shutdown deadline) is refused (503)."""
    if stopping is None:
        return await _read_json(request, limit)
    body = await _unless(_read_json(request, limit), stopping.wait())
    if body is not _LOST:
        return body
    raise RequestError("the server is shutting down; the request body had not arrived in full", status=503,
                       code="shutting_down")


async def _read_json(request, limit: int) -> Any:
    too_large = RequestError(f"the request body is larger than this server's limit of {limit:,} bytes", status=413,
                             code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError("the Content-Length header is not a number")
        if int(length) > limit:
            raise too_large
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:  # (the reply goes nowhere; the access log shows the 400)
        raise RequestError("the client disconnected before it had sent the whole request body") from None
    if not body:
        raise RequestError("the request body is empty; send a JSON object")
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise RequestError(f"the request body is not valid JSON{where}") from None


def _sse(record: dict[str, Any]) -> str:
    return f"data: {_json(record)}\n\n"


def _post(loop, queue: asyncio.Queue, item) -> None:
    """From the service's thread into the request's event loop (gone if the server already stopped)."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:
        pass


