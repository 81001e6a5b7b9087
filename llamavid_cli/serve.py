"""`llamavid serve`: an OpenAI-compatible HTTP API that keeps one model loaded (FastAPI + uvicorn).

A thin layer: it reads the request (size-limited JSON), hands the body to the library
(``llamavid.server.protocol.parse_chat_request``: every field validated once, media checked against the
media roots), submits the question to the batching ``llamavid.server.service.AnswerService``, and writes the
answer in OpenAI's shapes (``chat.completion`` JSON, or ``chat.completion.chunk`` server-sent events).
Every refusal is a 4xx with ``{"error": {"message", "type", "param", "code"}}``. See docs/SERVE.md.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request), which
# are imported inside create_app so that the command line works without the serve extra installed.
import asyncio
import copy
import hmac
import json
import logging
import math
import signal
import socket
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import options as opt
from .common import load
from .main import app
from .output import message

log = logging.getLogger("llamavid.serve")

DEFAULT_MAX_BODY_MB = 20.0
DEFAULT_MAX_IMAGE_MB = 10.0
_DONE = object()  # end of an answer's text pieces


@app.command()
def serve(
    model: opt.Model = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface; "
                                                     "then also set --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port; the URL printed says which).")] = 8000,
    media_root: Annotated[Optional[list[Path]], typer.Option(
        "--media-root", metavar="DIR", help="A folder whose files requests may name (repeatable). Without one, no file is readable; "
                             "images can still be sent as data: URLs.")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", metavar="KEY", envvar="LLAMAVID_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on /v1 (prefer the environment variable: a command line is "
             "visible to other users).")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", help="The model id clients send (default: --model as given).")] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body accepted, in MB.")] = DEFAULT_MAX_BODY_MB,
    max_image_mb: Annotated[float, typer.Option(
        "--max-image-mb", help="Largest image accepted in a data: URL (decoded), in MB.")] = DEFAULT_MAX_IMAGE_MB,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    quantize: opt.Quantize = None,
    vision_tower: opt.VisionTower = None,
    qformer_tokenizer: opt.QFormerTokenizer = None,
) -> None:
    """Serve the model over HTTP with the OpenAI chat-completions API: llamavid serve --model demo --media-root videos/"""
    from llamavid.core.errors import InputError
    from llamavid.server.media_access import MediaAccess

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise InputError("llamavid serve needs FastAPI and uvicorn: pip install 'llamavid[serve]'") from None
    if api_key is not None and (not api_key.strip() or not api_key.isascii() or any(c.isspace() for c in api_key)):
        raise InputError("--api-key: must be non-empty printable ASCII without spaces")
    if served_model_name is not None and not served_model_name.strip():
        raise InputError("--served-model-name: must not be empty")
    max_body = _megabytes("--max-body-mb", max_body_mb)
    media = MediaAccess(media_root or (), max_image_bytes=_megabytes("--max-image-mb", max_image_mb))
    sock = _bind(host, port)
    m = load(model, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
             quantize=quantize)
    model_id = served_model_name or m.name
    application = create_app(m, media, model_id=model_id, api_key=api_key, max_body_bytes=max_body)
    server = uvicorn.Server(uvicorn.Config(application, log_config=_log_config(), timeout_graceful_shutdown=None,
                                           server_header=False))
    url = _url(sock)
    roots = ", ".join(str(r) for r in media.roots) or "none (no file access)"
    message(f"llamavid: serving {model_id} at {url} (OpenAI base URL {url}/v1); media roots: {roots}"
            + ("; API key required" if api_key else ""))
    if api_key is None and not _is_loopback(sock):
        message("llamavid: warning: listening beyond this machine without --api-key: anyone who can reach "
                f"{url} can use the model and read the media roots")
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: stopped.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # uvicorn re-raises the signal after its graceful stop
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = application.state.service.stats()
    reason = f" ({signal.Signals(stopped[0]).name})" if stopped else ""
    message(f"llamavid: stopped{reason}; {stats.answered} questions answered, {stats.failed} failed")


# ---------------------------------------------------------------------------------------------------------
# the application


def create_app(model, media, *, model_id: str, api_key: str | None = None,
               max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6), service=None):
    """The FastAPI application: /health, /v1/models, /v1/chat/completions over an ``AnswerService``."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from llamavid.core.callbacks import Callbacks
    from llamavid.server.protocol import parse_chat_request
    from llamavid.core.errors import LlamaVidError, RequestError
    from llamavid.server.service import AnswerService

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
        req = await run_in_threadpool(parse_chat_request, body, model_id=model_id, media=media)
        reply = Reply(model, model_id)
        if not req.stream:
            answered = await asyncio.wrap_future(service.submit(req.media, req.question))
            if answered.error is not None:
                raise answered.error
            return JSONResponse(reply.completion(answered))
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        future = service.submit(req.media, req.question, on_text=lambda piece: _post(loop, pieces, piece))
        future.add_done_callback(lambda _f: _post(loop, pieces, _DONE))
        first = await pieces.get()  # a refusal (bad video, context overflow) comes before any text: a 4xx
        if first is _DONE and (future.exception() is not None or future.result().error is not None):
            raise future.exception() or future.result().error
        return StreamingResponse(reply.events(first, pieces, future, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return application


class Reply:
    """One completion's OpenAI-shaped output: a ``chat.completion`` or its ``chat.completion.chunk`` events."""

    def __init__(self, model, model_id: str):
        self.model, self.model_id = model, model_id
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, answered) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answered.answer.text, "refusal": None},
                             "logprobs": None, "finish_reason": self._finish(answered)}],
                "usage": self._usage(answered), "system_fingerprint": None, "llamavid": self._extra(answered)}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        record = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id,
                  "system_fingerprint": None,
                  "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
        return _sse(record)

    async def events(self, first, pieces: asyncio.Queue, future, include_usage: bool):
        from llamavid.core.errors import LlamaVidError

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
            yield _sse(_error_body(*_describe(exc)))
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
        from llamavid.tasks.qa import answer_fields

        return {k: v for k, v in answer_fields(self.model, answered).items() if k not in ("answer", "model")}


# ---------------------------------------------------------------------------------------------------------
# errors and helpers


def _describe(exc) -> tuple[int, str, str | None, str | None]:
    """(status, message, param, code) of a library error."""
    from llamavid.core.errors import ContextOverflowError, RequestError, VideoError, VidtokError
    from llamavid.server.service import ServiceClosed

    if isinstance(exc, RequestError):
        return exc.status, str(exc), exc.param, exc.code
    if isinstance(exc, ServiceClosed):
        return 503, str(exc), None, "shutting_down"
    if isinstance(exc, ContextOverflowError):
        return 400, str(exc), "messages", "context_length_exceeded"
    if isinstance(exc, (VideoError, VidtokError)):
        return 400, str(exc), "messages", "invalid_media"
    return 400, str(exc), None, None


def _error_body(status: int, text: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            413: "invalid_request_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": text, "type": kind, "param": param, "code": code}}


def error_response(status: int, text: str, *, param: str | None = None, code: str | None = None, headers=None):
    from fastapi.responses import JSONResponse

    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(_error_body(status, text, param, code), status_code=status, headers=headers)


def refusal(exc):
    status, text, param, code = _describe(exc)
    return error_response(status, text, param=param, code=code)


async def read_json(request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes (413) before reading them all."""
    from llamavid.core.errors import RequestError

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


def _megabytes(flag: str, value: float) -> int:
    from llamavid.core.errors import InputError

    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{flag} {value:g}: must be a positive number of megabytes")
    return int(value * 1_000_000)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), before the model loads: a taken port fails fast."""
    from llamavid.core.errors import InputError

    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: must be between 0 and 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _is_loopback(sock: socket.socket) -> bool:
    import ipaddress

    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


def _log_config() -> dict[str, Any]:
    """uvicorn's logging with everything (access lines included) on stderr, and llamavid's own messages."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    for formatter in config["formatters"].values():
        formatter["use_colors"] = False
    config["loggers"]["llamavid"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
