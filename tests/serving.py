"""A real ``llamavid serve --model demo`` process for the tests that talk to it as clients do."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
from conftest import LLAMAVID

ROOT = Path(__file__).resolve().parents[1]
VIDEO = "three-shapes.mp4"


class DemoServer:
    """The server on a free port, with ``examples/three-shapes.mp4`` in its media root (``media``: the root,
    under ``tmp``; made here). ``url`` and ``port`` once it says it is serving."""

    def __init__(self, tmp: Path, *args: str, media: str = "media"):
        self.log = tmp / "server.stderr"
        self.media = tmp / media
        self.media.mkdir(parents=True)
        shutil.copy(ROOT / "examples" / VIDEO, self.media / VIDEO)
        env = dict(os.environ, LLAMAVID_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen([*LLAMAVID, "serve", "--model", "demo", "--port", "0", "--media-root",
                                      str(self.media), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"), env=env)
        deadline = time.monotonic() + 180
        while True:
            found = re.search(r"serving .* at (http://127\.0\.0\.1:(\d+)) ", self.stderr())
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=30).json()

    def post(self, body: dict, **kw) -> httpx.Response:
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=kw.pop("timeout", 120), **kw)

    def stop(self) -> int:
        """SIGTERM (unless it has exited) and its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)
