"""`llamavid serve` end to end: real server processes on 127.0.0.1, spoken to with the official `openai` client.

Two servers run for the whole module, started together: "main" (the tiny checkpoint, a media root, an API
key, small size limits) and "bare" (the tiny checkpoint, no media root), which the last test stops with
SIGTERM while it streams an answer. Answers are compared with `llamavid ask` / `llamavid chat` at
temperature 0; every refusal must be a 4xx with an OpenAI error object and leave no traceback behind.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import LLAMAVID, model_args, run_cli
from media import make_image, make_video

pytestmark = pytest.mark.slow  # real server processes (test_serve_units.py: the fast tests of its parts)

KEY = "test-key-123"
MAX_TOKENS = 8
QUESTIONS = ["what color is the shape?", "how many shapes?", "what happens first?", "describe the video"]
ERROR_KEYS = {"message", "type", "param", "code"}


class Server:
    """A `llamavid serve` process; stderr goes to a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, tmp: Path, name: str, args: list[str]):
        self.log = tmp / f"{name}.stderr"
        env = dict(os.environ, LLAMAVID_CACHE=str(tmp / f"cache-{name}"))
        self.proc = subprocess.Popen([*LLAMAVID, "serve", "--port", "0", *map(str, args)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), env=env)
        self.url = None

    def wait_ready(self, timeout: float = 120) -> "Server":
        deadline = time.monotonic() + timeout
        while self.url is None:
            found = re.search(r"serving .* at (http://127\.0\.0\.1:\d+) ", self.stderr())
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.stderr()}")
            else:
                time.sleep(0.1)
        return self

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, key: str | None = KEY, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0, timeout=120, **kw)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=30).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A media root with videos, an image, a symlink out of the root; and a file outside it."""
    tmp = tmp_path_factory.mktemp("serve-media")
    root, outside = tmp / "root", tmp / "outside"
    root.mkdir()
    outside.mkdir()
    make_video(root / "clip.mp4", seconds=3, fps=5)
    make_video(root / "fresh.mp4", seconds=2, fps=5)  # encoded by the "ten at once" test only
    (root / "sub").mkdir()
    make_image(root / "sub" / "still.png")
    (root / "notes.txt").write_text("not a video\n")
    shutil.copy(root / "clip.mp4", outside / "secret.mp4")
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    return {"root": root, "outside": outside, "tmp": tmp}


@pytest.fixture(scope="module")
def started(tiny, media):
    """Both servers, starting (they load while `expected` runs the CLI in this process)."""
    tiny_args = ["--model", tiny.path, "--vision-tower", tiny.vision_path]
    main = Server(media["tmp"], "main", [*tiny_args, "--media-root", media["root"], "--api-key", KEY,
                                         "--max-body-mb", "1", "--max-image-mb", "0.05"])
    bare = Server(media["tmp"], "bare", tiny_args)
    try:
        yield {"main": main, "bare": bare}
    finally:
        for server in (main, bare):
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in (main, bare):
            server.stop()
    for server in (main, bare):  # no refusal, and nothing else, may have left a traceback
        assert "Traceback" not in server.stderr(), server.stderr()


@pytest.fixture(scope="module")
def servers(started, expected):
    return {name: server.wait_ready() for name, server in started.items()}


@pytest.fixture(scope="module")
def main(servers):
    return servers["main"]


@pytest.fixture(scope="module")
def model_id(main):
    return main.client().models.list().data[0].id


@pytest.fixture(scope="module")
def expected(started, tiny, media):
    """`llamavid ask --json` answers (temperature 0) to each question about clip.mp4: the first one alone, the
    others as a --batch, run in this process with a cache of their own."""
    clip = media["root"] / "clip.mp4"
    out = {QUESTIONS[0]: json.loads(_cli(media, "ask", clip, QUESTIONS[0], "--json", *model_args(tiny, MAX_TOKENS)))}
    batch = media["tmp"] / "questions.jsonl"
    batch.write_text("".join(json.dumps({"id": q, "video": str(clip), "question": q}) + "\n" for q in QUESTIONS[1:]))
    text = _cli(media, "ask", "--batch", batch, *model_args(tiny, MAX_TOKENS))
    out.update({r["id"]: r for r in map(json.loads, text.splitlines())})
    assert set(out) == set(QUESTIONS)
    return out


def _cli(media, *args) -> str:
    """``llamavid ARGS`` in this process (for module-scoped fixtures, which cannot use capsys): its stdout."""
    from llamavid_cli.main import main as llamavid_main

    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("LLAMAVID_CACHE")
    os.environ["LLAMAVID_CACHE"] = str(media["tmp"] / "cache-cli")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            llamavid_main([str(a) for a in args])
    except SystemExit as exc:
        raise AssertionError(f"llamavid {' '.join(map(str, args))} exited with {exc.code}: {err.getvalue()}") from None
    finally:
        if saved is None:
            del os.environ["LLAMAVID_CACHE"]
        else:
            os.environ["LLAMAVID_CACHE"] = saved
    return out.getvalue()


def video(url: str, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def ask(client, model_id, url, question, **kw):
    kw = {"temperature": 0, "max_tokens": MAX_TOKENS, **kw}
    return client.chat.completions.create(model=model_id, messages=video(url, question), **kw)


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_health_and_models(main, model_id, tiny):
    assert model_id == str(tiny.path)
    health = main.health()
    assert health["status"] == "ok" and health["model"] == model_id
    assert [m.id for m in main.client().models.list().data] == [model_id]
    assert main.client().models.retrieve(model_id).id == model_id


@pytest.mark.slow
def test_answers_equal_llamavid_ask_at_temperature_0(main, model_id, expected, media):
    client = main.client()
    for question in QUESTIONS:
        reply = ask(client, model_id, "clip.mp4", question)
        want = expected[question]
        assert reply.choices[0].message.content == want["answer"], question
        assert reply.usage.prompt_tokens == want["prompt_tokens"]
        assert reply.usage.completion_tokens > 0
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.model_extra["llamavid"]["frames"] == want["frames"] == 3
    # the same video by absolute file:// URL, and its features as a .vidtok (the server's own cache entry)
    absolute = f"file://{media['root'] / 'clip.mp4'}"
    assert ask(client, model_id, absolute, QUESTIONS[0]).choices[0].message.content == expected[QUESTIONS[0]]["answer"]
    [entry] = (media["tmp"] / "cache-main" / "vidtok").glob("*.vidtok")
    shutil.copy(entry, media["root"] / "sub" / "clip.vidtok")
    reply = ask(client, model_id, "sub/clip.vidtok", QUESTIONS[1])
    assert reply.choices[0].message.content == expected[QUESTIONS[1]]["answer"]


@pytest.mark.slow
def test_streaming_equals_non_streaming(main, model_id):
    client = main.client()
    for question in QUESTIONS:
        whole = ask(client, model_id, "clip.mp4", question)
        chunks = list(ask(client, model_id, "clip.mp4", question, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == [whole.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
        assert len({c.id for c in chunks}) == 1


@pytest.mark.slow
def test_stream_ends_with_done(main, model_id):
    body = {"model": model_id, "messages": video("clip.mp4", QUESTIONS[0]), "stream": True, "max_tokens": 4}
    with httpx.stream("POST", main.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def run_together(n: int, work) -> list[BaseException]:
    """``work(i)`` in n threads released at the same moment; the exceptions they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def thread(i: int) -> None:
        try:
            barrier.wait(30)
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@pytest.mark.slow
def test_sixteen_concurrent_clients_all_answered_in_batches(main, model_id, expected):
    before = main.health()
    clients = [main.client() for _ in range(16)]
    results: dict[int, str] = {}

    def client_work(i: int) -> None:
        question = QUESTIONS[i % len(QUESTIONS)]
        if i % 2:
            results[i] = "".join(c.choices[0].delta.content or "" for c in
                                 ask(clients[i], model_id, "clip.mp4", question, stream=True) if c.choices)
        else:
            results[i] = ask(clients[i], model_id, "clip.mp4", question).choices[0].message.content

    errors = run_together(16, client_work)
    assert not errors, errors
    assert sorted(results) == list(range(16))
    for i, answer in results.items():
        assert answer == expected[QUESTIONS[i % len(QUESTIONS)]]["answer"], i
    after = main.health()
    assert after["questions"] - before["questions"] == 16 and after["answered"] - before["answered"] == 16
    assert after["batches"] - before["batches"] < 16, "no two concurrent questions went through the model together"
    assert after["pending"] == 0


@pytest.mark.slow
def test_a_video_is_encoded_once_when_ten_ask_at_the_same_moment(main, model_id):
    before = main.health()
    clients = [main.client() for _ in range(10)]
    answers: list[str] = []
    errors = run_together(10, lambda i: answers.append(
        ask(clients[i], model_id, "fresh.mp4", QUESTIONS[i % 2]).choices[0].message.content))
    assert not errors and len(answers) == 10
    after = main.health()
    assert after["encoded"] - before["encoded"] == 1 and after["opened"] - before["opened"] == 1


@pytest.mark.slow
def test_multi_turn_messages_behave_like_llamavid_chat(main, model_id, tiny, media, capsys, monkeypatch):
    clip = media["root"] / "clip.mp4"
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n"))
    code, out, err = run_cli(capsys, "chat", clip, *model_args(tiny, MAX_TOKENS))
    assert code == 0, err
    first, second = out.splitlines()
    client = main.client()
    one = ask(client, model_id, "clip.mp4", QUESTIONS[0]).choices[0].message.content
    assert " ".join(one.splitlines()) == first
    # the video in the first turn, the earlier answer as text: the second turn answers as chat's did
    messages = [*video("clip.mp4", QUESTIONS[0]), {"role": "assistant", "content": one},
                {"role": "user", "content": QUESTIONS[1]}]
    two = client.chat.completions.create(model=model_id, messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    assert " ".join(two.choices[0].message.content.splitlines()) == second
    assert two.usage.prompt_tokens > ask(client, model_id, "clip.mp4", QUESTIONS[1]).usage.prompt_tokens


@pytest.mark.slow
def test_sampling_options_are_honoured(main, model_id):
    client = main.client()
    one = ask(client, model_id, "clip.mp4", QUESTIONS[3], max_tokens=2)
    assert one.usage.completion_tokens <= 2
    seeded = [client.chat.completions.create(model=model_id, messages=video("clip.mp4", QUESTIONS[3]), temperature=1.5,
                                             top_p=1, seed=7, max_tokens=MAX_TOKENS).choices[0].message.content
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    # llamavid's own options as extra body fields: fewer frames, fewer prompt tokens
    fewer = ask(client, model_id, "clip.mp4", QUESTIONS[0], extra_body={"max_frames": 1, "fps": 1})
    assert fewer.model_extra["llamavid"]["frames"] == 1
    assert fewer.usage.prompt_tokens < ask(client, model_id, "clip.mp4", QUESTIONS[0]).usage.prompt_tokens
    # evidence, choices and a time range, as batch lines take them
    pointed = ask(client, model_id, "clip.mp4", QUESTIONS[0], extra_body={"evidence": True, "start": 1})
    ranges = pointed.model_extra["llamavid"]["evidence"]
    assert ranges and all(1.0 <= r["start"] <= r["end"] for r in ranges)
    chosen = ask(client, model_id, "clip.mp4", QUESTIONS[0], extra_body={"choices": ["red", "blue", "green"]})
    assert chosen.choices[0].message.content in ("red", "blue", "green")
    assert [c["choice"] for c in chosen.model_extra["llamavid"]["choices"]] == ["red", "blue", "green"]


# ---------------------------------------------------------------------------------------------------------
# refusals: every one a 4xx with an OpenAI error object


def _png_data_url(tmp: Path, size: int | None = None) -> str:
    data = make_image(tmp / "x.png").read_bytes() if size is None else b"\x89PNG" + os.urandom(size)
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _refusal_cases(media: Path, tmp: Path):
    q = QUESTIONS[0]

    def chat(url=None, *, question=q, part="video_url", **fields):
        messages = fields.pop("messages", [{"role": "user", "content": [{"type": part, part: {"url": url}},
                                                                          {"type": "text", "text": question}]}])
        return {"model": "MODEL", "messages": messages, **fields}

    outside = media["outside"] / "secret.mp4"
    return [  # (name, body or raw bytes, status, code, param)
        ("file:// outside the root", chat(f"file://{outside}"), 403, "media_access_denied",
         "messages[0].content[0].video_url.url"),
        ("absolute path outside", chat(str(outside)), 403, "media_access_denied", None),
        ("dot-dot escape", chat("../outside/secret.mp4"), 403, "media_access_denied", None),
        ("symlink escape", chat("escape.mp4"), 403, "media_access_denied", None),
        ("missing file", chat("nope.mp4"), 404, "media_not_found", None),
        ("http URL", chat("http://example.com/v.mp4"), 400, "unsupported_url", None),
        ("https URL", chat("https://example.com/v.mp4", part="image_url"), 400, "unsupported_url", None),
        ("other scheme", chat("ftp://example.com/v.mp4"), 400, "unsupported_url", None),
        ("file URL with a host", chat(f"file://example.com{outside}"), 400, "unsupported_url", None),
        ("NUL in the path", chat("clip.mp4\x00.txt"), 400, None, None),
        ("a folder", chat("sub"), 400, None, None),
        ("not a video", chat("notes.txt"), 400, "invalid_media", None),
        ("an image data URL as a video", chat(_png_data_url(tmp)), 400, "unsupported_media_type", None),
        ("data URL too large", chat(_png_data_url(tmp, 60_000), part="image_url"), 413, "image_too_large", None),
        ("data URL not base64", chat("data:image/png;base64,@@@@", part="image_url"), 400, None, None),
        ("data URL of another type", chat("data:text/plain;base64,aGk=", part="image_url"), 400,
         "unsupported_media_type", None),
        ("body too large", chat("clip.mp4", question="x" * 1_100_000), 413, "request_too_large", None),
        ("n of 0", chat("clip.mp4", n=0), 400, None, "n"),
        ("n past the limit", chat("clip.mp4", n=17), 400, None, "n"),
        ("temperature above 2", chat("clip.mp4", temperature=2.5), 400, None, "temperature"),
        ("top_logprobs without logprobs", chat("clip.mp4", top_logprobs=2), 400, None, "top_logprobs"),
        ("tool calls", chat("clip.mp4", tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto"),
         400, "unsupported_parameter", "tool_choice"),
        ("unknown field", chat("clip.mp4", colour="red"), 400, "unknown_field", "colour"),
        ("evidence of the wrong type", chat("clip.mp4", evidence="yes"), 400, None, "evidence"),
        ("a range past the end", chat("clip.mp4", start=3600), 400, None, None),
        ("option of the wrong type", chat("clip.mp4", fps="2"), 400, None, "fps"),
        ("option out of range", chat("clip.mp4", max_tokens=0), 400, None, "max_tokens"),
        ("temperature of the wrong type", chat("clip.mp4", temperature="hot"), 400, None, "temperature"),
        ("llamavid's name for max_tokens", chat("clip.mp4", max_new_tokens=5), 400, None, "max_new_tokens"),
        ("subtitles outside the root", chat("clip.mp4", subtitles=str(outside)), 403, "media_access_denied",
         "subtitles"),
        ("another model", {**chat("clip.mp4"), "model": "gpt-4o"}, 404, "model_not_found", "model"),
        ("no model", {k: v for k, v in chat("clip.mp4").items() if k != "model"}, 400, None, "model"),
        ("not JSON", b"{\"model\": ", 400, None, None),
        ("not UTF-8", b"\xff\xfe\x00", 400, None, None),
        ("not an object", b"[1, 2]", 400, None, None),
        ("empty body", b"", 400, None, None),
        ("no messages", chat("clip.mp4", messages=[]), 400, None, "messages"),
        ("tool role", chat("clip.mp4", messages=[{"role": "tool", "content": "x"}]), 400, "unsupported_role",
         "messages[0].role"),
        ("only a system message", chat("clip.mp4", messages=[{"role": "system", "content": "be brief"}]), 400, None,
         "messages"),
        ("last message not from the user",
         chat("clip.mp4", messages=[*video("clip.mp4", q), {"role": "assistant", "content": "red"}]),
         400, None, "messages"),
        ("a video option without a video", chat("clip.mp4", messages=[{"role": "user", "content": q}], fps=2), 400,
         None, "fps"),
        ("two videos", chat("clip.mp4", messages=[*video("clip.mp4", q), {"role": "assistant", "content": "a"},
                                                   *video("fresh.mp4", q)]), 400, None, None),
        ("no question", chat("clip.mp4", question=" "), 400, None, "messages[0].content"),
        ("content part of another type", chat("clip.mp4", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]), 400, "unsupported_content",
         None),
        ("content of the wrong type", chat("clip.mp4", messages=[{"role": "user", "content": 5}]), 400, None, None),
        ("<image> in the question", chat("clip.mp4", question="what <image> is it?"), 400, None, None),
        ("lone surrogate", chat("clip.mp4", question="what \ud800?"), 400, None, None),
        ("question beyond the context", chat("clip.mp4", question="shape " * 5000), 400, "context_length_exceeded",
         None),
        ("... also when streaming", chat("clip.mp4", question="shape " * 5000, stream=True), 400,
         "context_length_exceeded", None),
        ("stream_options without stream", chat("clip.mp4", stream_options={"include_usage": True}), 400, None,
         "stream_options"),
        ("stream not a boolean", chat("clip.mp4", stream="yes"), 400, None, "stream"),
    ]


def _check_error(response: httpx.Response, status: int, code, param, what: str) -> dict:
    assert response.status_code == status, (what, response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, (what, body)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    assert error["type"] and (code is None or error["code"] == code), (what, error)
    assert param is None or error["param"] == param, (what, error)
    return error


@pytest.mark.slow
def test_every_refusal_is_a_4xx_with_an_openai_error(main, model_id, media, tmp_path):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=main.url, headers=headers, timeout=60) as http:
        for what, body, status, code, param in _refusal_cases(media, tmp_path):
            if isinstance(body, dict):
                body = json.dumps({**body, "model": model_id} if body.get("model") == "MODEL" else body).encode(
                    "utf-8", "surrogatepass")
            _check_error(http.post("/v1/chat/completions", content=body), status, code, param, what)
        error = _check_error(http.get("/v1/nothing-here"), 404, None, None, "unknown route")
        assert error["type"] == "not_found_error"
        _check_error(http.get("/v1/chat/completions"), 405, None, None, "wrong method")
        _check_error(http.get("/v1/models/another"), 404, "model_not_found", None, "unknown model")
    # the same refusals through the official client: typed errors
    client = main.client()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(client, model_id, "../outside/secret.mp4", QUESTIONS[0])
    assert caught.value.status_code == 403 and caught.value.body["code"] == "media_access_denied"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, model_id, "clip.mp4", QUESTIONS[0], n=17)
    assert caught.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=video("clip.mp4", QUESTIONS[0]))
    assert "Traceback" not in main.stderr() and '" 500' not in main.stderr()


@pytest.mark.slow
def test_api_key_is_required(main, model_id):
    client = main.client(key="wrong")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        ask(client, model_id, "clip.mp4", QUESTIONS[0])
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        response = httpx.post(main.url + "/v1/chat/completions", json={"model": model_id}, headers=headers, timeout=30)
        _check_error(response, 401, "invalid_api_key", None, f"Authorization {headers}")
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(main.url + "/health", timeout=30).status_code == 200  # health checks need no key


@pytest.mark.slow
def test_search_through_a_real_server(main, model_id):
    """POST /v1/llamavid/search: the API key, the media roots, the reply's shape, no traceback (checked at the end)."""
    url, auth = main.url + "/v1/llamavid/search", {"Authorization": f"Bearer {KEY}"}
    body = {"query": "a shape", "paths": ["clip.mp4"], "top": 2, "rerank": 1}
    response = httpx.post(url, json=body, headers=auth, timeout=120)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["object"] == "llamavid.search" and reply["model"] == model_id and reply["files"] == 1
    assert 1 <= len(reply["moments"]) <= 2 and all(m["video"] == "clip.mp4" for m in reply["moments"])
    assert all(0 <= m["start"] < m["end"] <= 3.5 and 0 <= m["score"] <= 1 for m in reply["moments"])
    _check_error(httpx.post(url, json=body, timeout=30), 401, "invalid_api_key", None, "no key")
    _check_error(httpx.post(url, json={**body, "paths": ["escape.mp4"]}, headers=auth, timeout=30), 403,
                 "media_access_denied", "paths[0]", "a link out of the root")
    _check_error(httpx.post(url, json={**body, "top": 0}, headers=auth, timeout=30), 400, None, "top", "top 0")


@pytest.mark.slow
def test_a_server_without_media_roots_reads_no_files(servers, media, tiny):
    bare = servers["bare"]
    client = bare.client()
    model_id = str(tiny.path)
    for url in ("clip.mp4", f"file://{media['root'] / 'clip.mp4'}", str(media["root"] / "clip.mp4")):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            ask(client, model_id, url, QUESTIONS[0])
        assert caught.value.body["code"] == "media_access_denied"
    # an image sent inline still works, and is encoded once
    url = _png_data_url(media["tmp"])
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": QUESTIONS[0]}]}]
    replies = [client.chat.completions.create(model=model_id, messages=messages, temperature=0, max_tokens=MAX_TOKENS)
               for _ in range(2)]
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content
    assert replies[0].model_extra["llamavid"]["frames"] == 1
    assert bare.health()["encoded"] == 1


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits(servers, media, tiny):
    """Last in the module: it stops the "bare" server."""
    bare = servers["bare"]
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _png_data_url(media["tmp"])}},
                                             {"type": "text", "text": QUESTIONS[3]}]}]
    stream = bare.client().chat.completions.create(model=str(tiny.path), messages=messages, temperature=0,
                                                   max_tokens=400, stream=True, stream_options={"include_usage": True})
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the answer is being generated: now stop the server
    answered = bare.health()["answered"]
    bare.proc.send_signal(signal.SIGTERM)
    received = len(chunks)
    port = int(bare.url.rsplit(":", 1)[1])
    refused = False
    deadline = time.monotonic() + 10
    while not refused and time.monotonic() < deadline:  # no new connections once stopping
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    chunks.extend(stream)  # the answer in flight still arrives in full
    assert refused, f"the server still accepted connections 10 s after SIGTERM:\n{bare.stderr()[-2000:]}"
    assert answered == 2, "the streamed question was already answered when SIGTERM was sent"  # the two earlier ones
    assert any(c.choices and c.choices[0].delta.content for c in chunks[received:])
    assert ([c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            in (["stop"], ["length"]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 1
    assert bare.proc.wait(60) == 0
    log = bare.stderr()
    assert "stopped (SIGTERM)" in log and "Traceback" not in log
