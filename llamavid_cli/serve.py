"""`llamavid serve`: an OpenAI-compatible HTTP API that keeps one model loaded (FastAPI + uvicorn).

Only the command line: it parses the flags, binds the socket, loads the model and runs uvicorn over the
library's application (``llamavid.server.app.create_app``). See docs/SERVE.md.
"""

from __future__ import annotations

import copy
import math
import signal
import socket
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import options as opt
from .output import message

DEFAULT_MAX_BODY_MB = 20.0  # the library's defaults (llamavid.server.app), without importing it for --help
DEFAULT_MAX_IMAGE_MB = 10.0
DEFAULT_MAX_VIDEO_MB = 10.0
DEFAULT_MAX_TOKENS_LIMIT = 4096
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


@opt.with_groups(opt.MODEL)
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface; "
                                                     "then also set --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", help="Port to listen on (0: any free port; the URL printed says which).")] = 8000,
    media_root: Annotated[Optional[list[Path]], typer.Option(
        "--media-root", metavar="DIR", help="A folder whose files requests may name (repeatable). Without one, no file "
                                            "is readable; "
                             "images can still be sent as data: URLs.")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", metavar="KEY", envvar="LLAMAVID_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on /v1 (prefer the environment variable: a command line is "
             "visible to other users).")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", help="The model id clients send (default: --model as given).")] = None,
    max_body_mb: Annotated[float, typer.Option(
        "--max-body-mb", help="Largest request body accepted, in MB.")] = DEFAULT_MAX_BODY_MB,
    max_image_mb: Annotated[float, typer.Option(
        "--max-image-mb", help="Largest image accepted in a data: URL (decoded), in MB.")] = DEFAULT_MAX_IMAGE_MB,
    max_video_mb: Annotated[float, typer.Option(
        "--max-video-mb", help="Largest video accepted in a data: URL (decoded), in MB (the body limit must hold "
                               "it base64-encoded: 4/3 as large).")] = DEFAULT_MAX_VIDEO_MB,
    max_tokens_limit: Annotated[int, typer.Option(
        "--max-tokens-limit", help="The most new tokens one answer may have: a request asking for more is "
                                   "refused, and none is generated longer.")] = DEFAULT_MAX_TOKENS_LIMIT,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", help="Seconds the requests in flight may take to finish after SIGTERM / Ctrl-C; "
                                   "then the rest are cancelled and the server exits.")] = DEFAULT_SHUTDOWN_TIMEOUT,
    kv_cache: opt.KVCache = None,
    *,
    model: opt.ModelChoice,
) -> None:
    """Serve the model over HTTP with the OpenAI chat-completions API: llamavid serve --model demo --media-root videos/"""  # noqa: E501
    from llamavid.core.errors import InputError
    from llamavid.core.options import AskOptions
    from llamavid.server.app import create_app
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
    media = MediaAccess(media_root or (), max_image_bytes=_megabytes("--max-image-mb", max_image_mb),
                        max_video_bytes=_megabytes("--max-video-mb", max_video_mb))
    if not 1 <= max_tokens_limit <= 10**9:
        raise InputError(f"--max-tokens-limit {max_tokens_limit}: must be between 1 and 1,000,000,000")
    if not math.isfinite(shutdown_timeout) or not 0 <= shutdown_timeout <= 86400:
        raise InputError(f"--shutdown-timeout {shutdown_timeout:g}: must be between 0 and 86400 seconds")
    sock = _bind(host, port)
    defaults = AskOptions(kv_cache=kv_cache or "auto")  # what a request leaves unset
    m = model.load()
    model_id = served_model_name or m.name
    application = create_app(m, media, model_id=model_id, api_key=api_key, max_body_bytes=max_body, defaults=defaults,
                             max_tokens_limit=max_tokens_limit, shutdown_timeout=shutdown_timeout)
    # uvicorn's own deadline is a backstop: the application's (begin_shutdown) ends the work in flight first
    server = _server_class()(uvicorn.Config(application, log_config=_log_config(), server_header=False,
                                            timeout_graceful_shutdown=shutdown_timeout + 5))
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
    message(f"llamavid: stopped{reason}; {stats.answered} questions answered, {stats.failed} failed, "
            f"{stats.cancelled} cancelled")
    if stopped:  # asked to end: skip the interpreter's teardown of torch (1-2 s), so the deadline holds
        _exit_now()


def _exit_now() -> None:
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the application when it starts stopping (its shutdown deadline starts)."""

        async def shutdown(self, sockets=None) -> None:
            begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
            if begin is not None:
                begin()
            await super().shutdown(sockets)

    return Server


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
