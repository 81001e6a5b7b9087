"""The OpenAI-compatible HTTP application (FastAPI): its endpoints, the shaping of replies, and how errors
are worded for HTTP clients.

A thin layer over the library, as vLLM's ``entrypoints/openai`` is: it reads the request (size-limited
JSON), hands the body to ``llamavid.server.protocol.parse_chat_request`` (every field validated once, media
checked against the media roots), submits the question to the batching ``llamavid.server.service.
AnswerService``, and writes the answer in OpenAI's shapes (``chat.completion`` JSON, or
``chat.completion.chunk`` server-sent events). Every refusal is a 4xx with ``{"error": {"message", "type",
"param", "code"}}``: the status and code come from one table (``describe``), and the message is the
library error worded for HTTP (options as request fields, ``"max_frames": 12``; files as the client
named them). See docs/SERVE.md. ``llamavid serve`` (llamavid_cli/serve.py) only parses flags and runs
uvicorn.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request), which
# are imported inside create_app so that the library imports without the serve extra installed.
import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from ..core.errors import (
    ContextOverflowError,
    JsonStyle,
    LlamaVidError,
    MemoryLimitError,
    RequestError,
    VideoError,
    VidtokError,
)
from ..core.options import AskOptions
from .protocol import OPENAI_NAMES
from .service import ServiceClosed

log = logging.getLogger("llamavid.serve")

DEFAULT_MAX_BODY_MB = 20.0
DEFAULT_MAX_IMAGE_MB = 10.0
_DONE = object()  # end of an answer's text pieces


def create_app(model, media, *, model_id: str, api_key: str | None = None,
               max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6), service=None, defaults: AskOptions = AskOptions()):
    """The FastAPI application: /health, /v1/models, /v1/chat/completions over an ``AnswerService``."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ..core.callbacks import Callbacks
    from .protocol import parse_chat_request
    from .service import AnswerService

    if service is None:
        service = AnswerService(model, callbacks=Callbacks(warning=log.warning, status=log.info))
    created = int(time.time())
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "llamavid"}

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await run_in_threadpool(service.close)  # after uvicorn has finished every request in flight

    application = FastAPI(title="llamavid", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    application.state.service = service

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
        return refusal(exc)

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
        body = await read_json(request, max_body_bytes)
        req = await run_in_threadpool(parse_chat_request, body, model_id=model_id, media=media, defaults=defaults)
        style = HttpStyle(service.names_for(req.media))  # errors name files as the client did
        reply = Reply(model, model_id, style)
        if not req.stream:
            answered = await asyncio.wrap_future(service.submit(req.media, req.question))
            if answered.error is not None:
                return refusal(answered.error, style)
            return JSONResponse(reply.completion(answered))
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        future = service.submit(req.media, req.question, on_text=lambda piece: _post(loop, pieces, piece))
        future.add_done_callback(lambda _f: _post(loop, pieces, _DONE))
        first = await pieces.get()  # a refusal (bad video, context overflow) comes before any text: a 4xx
        if first is _DONE and (future.exception() is not None or future.result().error is not None):
            exc = future.exception() or future.result().error
            if isinstance(exc, LlamaVidError):
                return refusal(exc, style)
            raise exc
        return StreamingResponse(reply.events(first, pieces, future, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return application


class Reply:
    """One completion's OpenAI-shaped output: a ``chat.completion`` or its ``chat.completion.chunk`` events."""

    def __init__(self, model, model_id: str, style: "HttpStyle | None" = None):
        self.model, self.model_id = model, model_id
        self.style = style or HttpStyle()
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, answered) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_id,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": answered.answer.text, "refusal": None},
                             "logprobs": None, "finish_reason": self._finish(answered)}],
                "usage": self._usage(answered), "system_fingerprint": None, "llamavid": self._extra(answered)}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        record = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id,
                  "system_fingerprint": None,
                  "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
        return _sse(record)

    async def events(self, first, pieces: asyncio.Queue, future, include_usage: bool):
        yield self.chunk({"role": "assistant", "content": "", "refusal": None})
        piece = first
        while piece is not _DONE:
            yield self.chunk({"content": piece})
            piece = await pieces.get()
        try:
            answered = future.result()
            if answered.error is not None:
                raise answered.error
        except LlamaVidError as exc:
            yield _sse(_error_body(*describe(exc, self.style)))
        except Exception as exc:  # noqa: BLE001 - a bug: the client hears of it, the log has the traceback
            log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
            yield _sse(_error_body(500, "internal error in llamavid (the server's log has the details)"))
        else:
            yield self.chunk({}, self._finish(answered), llamavid=self._extra(answered))
            if include_usage:
                yield _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model_id, "system_fingerprint": None, "choices": [],
                            "usage": self._usage(answered)})
        yield "data: [DONE]\n\n"

    @staticmethod
    def _finish(answered) -> str:
        return "length" if answered.answer.truncated else "stop"

    @staticmethod
    def _usage(answered) -> dict[str, int]:
        a = answered.answer
        return {"prompt_tokens": a.prompt_tokens, "completion_tokens": a.new_tokens,
                "total_tokens": a.prompt_tokens + a.new_tokens}

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
    (ContextOverflowError, 400, "context_length_exceeded", "messages"),
    (MemoryLimitError, 400, "insufficient_memory", "messages"),
    (VideoError, 400, "invalid_media", "messages"),
    (VidtokError, 400, "invalid_media", "messages"),
    (LlamaVidError, 400, None, None),
)


class HttpStyle(JsonStyle):
    """Library errors worded for an HTTP client: options as the request's fields (``"max_tokens": 5``),
    options only the server's operator sets as its flags, and files by the names the client sent."""

    names = dict(OPENAI_NAMES)

    def __init__(self, files: dict[str, str] | None = None):
        self.files = files or {}

    def option(self, opt) -> str:
        from .protocol import request_fields

        if opt.name not in request_fields():
            flag = "--" + opt.name.replace("_", "-")
            return f"the server's {flag} {opt.value}" if opt.has_value else f"the server's {flag}"
        return super().option(opt)

    def where(self, where: str) -> str:
        if where in self.files:
            return self.files[where]
        return where


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
    from fastapi.responses import JSONResponse

    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(_error_body(status, text, param, code), status_code=status, headers=headers)


def refusal(exc: LlamaVidError, style: HttpStyle | None = None):
    status, text, param, code = describe(exc, style)
    return error_response(status, text, param=param, code=code)


async def read_json(request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes (413) before reading them all."""
    too_large = RequestError(f"the request body is larger than this server's limit of {limit:,} bytes", status=413,
                             code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError("the Content-Length header is not a number")
        if int(length) > limit:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if not body:
        raise RequestError("the request body is empty; send a JSON object")
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise RequestError(f"the request body is not valid JSON{where}") from None


def _sse(record: dict[str, Any]) -> str:
    return f"data: {json.dumps(record, ensure_ascii=False)}\n\n"


def _post(loop, queue: asyncio.Queue, item) -> None:
    """From the service's thread into the request's event loop (gone if the server already stopped)."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:
        pass


