"""`llamavid serve`'s parts, in this process (fast): the streaming relay, request parsing, the wording of errors
(no server path in any message, valid UTF-8 whatever a client sent; fuzzed with Hypothesis), image bombs,
the generation controls and cancellation in ``generate``, and the service's isolation of a failing batch.

The end-to-end tests with real server processes and real clients are test_serve.py, test_serve_clients.py
and test_serve_isolation.py (marked slow).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from media import make_image, make_video

from llamavid.core.errors import InputError, LlamaVidError, Opt, RequestError, VideoError
from llamavid.core.options import AskOptions, SamplingOptions
from llamavid.server.app import HttpStyle, _json, describe
from llamavid.server.media_access import MediaAccess
from llamavid.server.protocol import parse_chat_request
from llamavid.server.service import TextStream

# ---------------------------------------------------------------------------------------------------------
# the streaming relay


@pytest.mark.parametrize("pieces, final", [
    ([" ", " Hello", " wor", "ld", " <", "/s", ">", " \n"], "Hello world"),  # stop string and spaces dropped at the end
    (["a", "<", "b", "  ", "c  "], "a<b  c"),  # a held-back "<" that turns out to stay
    (["\n", "x", "\n\n", "y"], "x\n\ny"),  # inner newlines kept, the leading one dropped
    (["abc"], "abc"),
    ([], ""),
])
def test_streamed_pieces_add_up_to_the_finished_answer(pieces, final):
    sent = []
    stream = TextStream(sent.append, "</s>")
    prefixes = []
    for piece in pieces:
        stream.push(piece)
        prefixes.append("".join(sent))
    assert all(final.startswith(p) for p in prefixes), prefixes  # nothing is ever sent that the answer lacks
    stream.finish(final)
    assert "".join(sent) == final


@pytest.mark.parametrize("pieces, stops, final", [
    (["The ", "ans", "wer", " is", " END", " and more"], ["END"], "The answer is"),
    (["a", "E", "N", "x"], ["ENDS"], "aENx"),  # a stop string's start that does not complete is sent after all
    (["x", "\n\n", "y"], ["\n\n"], "x"),
    (["one", ". two"], [".", "two"], "one"),  # the first of several
])
def test_a_stream_never_sends_a_stop_string_or_what_follows(pieces, stops, final):
    from llamavid.model.generation import cut_at_stop

    raw = "".join(pieces)
    assert cut_at_stop(raw, stops)[0].strip() == final  # what generate makes of the same text
    sent = []
    stream = TextStream(sent.append, "</s>", stops)
    for piece in pieces:
        stream.push(piece)
        assert final.startswith("".join(sent)), sent
    assert stream.finish(final) and "".join(sent) == final


def test_a_restarted_stream_sends_nothing_twice():
    sent = []
    stream = TextStream(sent.append, "</s>")
    for piece in ["red ", "and "]:
        stream.push(piece)
    stream.restart()  # the batch failed: the same answer is generated again
    for piece in ["red ", "and ", "blue"]:
        stream.push(piece)
    assert stream.finish("red and blue") and "".join(sent) == "red and blue"
    other = TextStream([].append, "</s>")
    other.push("red and ")
    other.restart()
    other.push("green")
    assert not other.finish("green")  # another answer than what was sent: the service fails the stream


# ---------------------------------------------------------------------------------------------------------
# requests


def _body(content, **fields):
    return {"model": "demo", "messages": [{"role": "user", "content": content}], **fields}


def _video(url="clip.mp4", text="What?"):
    return [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"\0")
    return folder


def test_openai_defaults_and_fields_llamavid_does_not_use_are_accepted(root):
    body = _body(_video(), presence_penalty=0, frequency_penalty=0, logprobs=False, metadata={"k": "v"},
                 store=False, user="u", service_tier="auto", parallel_tool_calls=True, n=1, stop=None,
                 response_format={"type": "text"}, tools=[{"type": "function"}], tool_choice="none",
                 stream=True, stream_options={"include_usage": True, "include_obfuscation": False})
    request = parse_chat_request(body, model_id="demo", media=MediaAccess([root]))
    assert set(request.ignored) == {"metadata", "store", "user", "service_tier", "parallel_tool_calls", "tools",
                                    "tool_choice"}
    sampling = request.question.options.sampling(False)
    assert sampling.plain and request.n == 1 and not request.logprobs
    with pytest.raises(RequestError) as caught:
        parse_chat_request({**body, "colour": "red"}, model_id="demo", media=MediaAccess([root]))
    assert caught.value.code == "unknown_field"  # not an OpenAI field: a typo of llamavid's options is still caught


def test_system_messages_text_only_questions_and_controls(root):
    body = {"model": "demo", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": [{"type": "text", "text": "No."}]},
        {"role": "user", "content": "What is red?"}, {"role": "assistant", "content": "A color.", "refusal": None,
                                                      "tool_calls": []},
        {"role": "user", "content": "And blue?"}],
        "stop": "\n", "presence_penalty": 1.5, "frequency_penalty": -0.5, "logit_bias": {"5": -100, "7": 0},
        "logprobs": True, "top_logprobs": 3, "n": 3, "response_format": {"type": "json_object"},
        "max_completion_tokens": 9}
    request = parse_chat_request(body, model_id="demo", media=MediaAccess([root]))
    q = request.question
    assert request.media is None and request.n == 3 and request.logprobs
    assert (q.text, q.history, q.system) == ("And blue?", (("What is red?", "A color."),), "Be brief.\nNo.")
    s = q.options.sampling(False)
    assert (s.stop, s.presence_penalty, s.frequency_penalty, s.logit_bias, s.logprobs, s.max_new_tokens) == (
        ("\n",), 1.5, -0.5, ((5, -100.0),), 3, 9)
    assert json.loads(s.json_schema) == {"type": "object"}


@pytest.mark.parametrize("fields, param", [
    ({"temperature": 2.01}, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": "1"}, "frequency_penalty"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": 1}, "logprobs"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
     "response_format.json_schema.schema"),
    ({"max_tokens": 5000}, "max_tokens"),
    ({"modalities": ["audio"]}, "modalities"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_generation_controls_are_refused_in_the_request_fields(root, fields, param):
    with pytest.raises(RequestError) as caught:
        parse_chat_request(_body(_video(), **fields), model_id="demo", media=MediaAccess([root]), max_tokens_limit=4096)
    assert caught.value.param == param and 400 <= caught.value.status < 500
    assert "--max-tokens-limit 4096" in describe(caught.value)[1] or param != "max_tokens"


def _png(width: int, height: int, rows: bytes | None = None, depth: int = 8, color: int = 2) -> bytes:
    """A PNG declaring width x height pixels (RGB, 8 bits; ``depth`` 1, ``color`` 0: black and white); ``rows``:
    its compressed pixel data, by default a little garbage."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows or zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _bomb(side: int) -> bytes:
    """A real decompression bomb: ~20 KB of black-and-white pixels that decode to side x side (x 3 bytes in RGB)."""
    squeeze = zlib.compressobj(9)
    row = b"\0" * ((side + 7) // 8 + 1)
    data = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    return _png(side, side, data, depth=1, color=0)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb(12_000)


def test_data_urls_carry_images_and_videos_within_their_limits(root, tmp_path, bomb):
    media = MediaAccess([root], max_image_bytes=100_000, max_video_bytes=200_000)

    def url(kind, data):
        return f"data:{kind};base64," + base64.b64encode(data).decode()

    clip = make_video(tmp_path / "v.mp4", seconds=1, fps=2).read_bytes()
    request = parse_chat_request(_body(_video(url("video/mp4", clip))), model_id="demo", media=media)
    assert request.media.data == clip and request.media.suffix == ".mp4" and request.files == {}
    png = make_image(tmp_path / "x.png").read_bytes()
    image = [{"type": "image_url", "image_url": {"url": url("image/png", png), "detail": "low"}}]
    assert parse_chat_request(_body(image + [{"type": "text", "text": "What?"}]), model_id="demo",
                              media=media).media.suffix == ".png"
    assert len(bomb) < 100_000
    cases = [  # (part, status, code)
        (_video(url("video/mp4", b"\0" * 200_001)), 413, "video_too_large"),
        (_video(url("image/png", png)), 400, "unsupported_media_type"),
        ([{"type": "image_url", "image_url": {"url": url("image/png", bomb)}}], 413, "image_too_large"),
        ([{"type": "image_url", "image_url": {"url": url("image/png", _png(50_000, 50_000))}}], 413,
         "image_too_large"),
        ([{"type": "image_url", "image_url": {"url": url("image/png", b"\x89PNG garbage")}}], 400, "invalid_media"),
        (_video("clip\ud800.mp4"), 400, None),
        (_video("/abs/\udcff.mp4"), 400, None),
    ]
    for content, status, code in cases:
        started = time.perf_counter()
        with pytest.raises(RequestError) as caught:
            parse_chat_request(_body(content + [{"type": "text", "text": "What?"}]), model_id="demo", media=media)
        assert (caught.value.status, caught.value.code) == (status, code), caught.value
        assert time.perf_counter() - started < 2  # refused from the header: nothing is decoded
        json.loads(_json({"error": describe(caught.value)[1]}))


def test_image_bombs_in_files_are_refused_before_decoding(tmp_path, bomb):
    from llamavid.media.video import check_readable, probe

    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "huge.png").write_bytes(_png(50_000, 50_000))
    for name in ("bomb.png", "huge.png"):
        for read in (probe, check_readable):
            started = time.perf_counter()
            with pytest.raises(VideoError) as caught:
                read(tmp_path / name)
            assert "pixels" in str(caught.value) and time.perf_counter() - started < 2


# ---------------------------------------------------------------------------------------------------------
# no server path in any message, valid UTF-8 whatever a client sent

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROFILE = settings(max_examples=int(os.environ.get("LLAMAVID_FUZZ_EXAMPLES", "150")), deadline=None,
                   suppress_health_check=list(HealthCheck), derandomize=True)
SECRET = "/srv/secret-folder/private media"  # the server's folders: no part of them may reach a client
NAMES = st.text(alphabet=st.characters(codec=None, blacklist_characters="/\0"), min_size=1, max_size=30)


@PROFILE
@given(parts=st.lists(NAMES, min_size=1, max_size=6), cut=st.integers(1, 300), shape=st.integers(0, 5),
       client=NAMES)
def test_no_server_path_in_any_message_whatever_its_length(parts, cut, shape, client):
    path = "/".join([SECRET, *parts])
    library = f"cannot identify image file {path!r} (it is damaged)"
    errors = [  # the shapes errors take: a path in the text (cut anywhere), as the subject, in an option
        VideoError(f"not an image we can decode ({library[:cut]})", where=path),
        InputError(f"{path[:cut]}: file is truncated"),
        VideoError(f"{path}: pyav could not decode it (InvalidDataError: {path[:cut]})"),
        InputError("no such file", Opt("subtitles", path), where="request"),
        InputError(f"the cache entry {SECRET}/cache/{parts[0]}.vidtok is damaged; see {path[:cut]}"),
        InputError(f"see file:///{path[:cut]} and {path}/"),
    ]
    error = errors[shape]
    style = HttpStyle({path: client}, roots=[SECRET])
    status, text, _, _ = describe(error, style)
    assert 400 <= status < 500
    body = _json({"error": {"message": text}}).encode("utf-8")  # valid UTF-8, lone surrogates included
    message = json.loads(body)["error"]["message"]
    for folder in ("/srv", "secret-folder", "private media/"):  # the media root's own name may show, no more
        assert folder not in message.replace(client, ""), message


@PROFILE
@given(value=st.text(alphabet=st.characters(codec=None), max_size=40), field=st.sampled_from(
    ["url", "colour", "model", "subtitles", "stop", "role"]))
def test_every_refusal_of_a_client_text_is_valid_utf8(root, value, field):
    body = _body(_video())
    if field == "url":
        body = _body(_video(value or "x"))
    elif field == "role":
        body["messages"][0]["role"] = value
    else:
        body[field if field != "colour" else value or "x"] = value
    try:
        parse_chat_request(body, model_id="demo", media=MediaAccess([root]))
        return
    except RequestError as exc:
        status, text, param, code = describe(exc, HttpStyle(roots=[str(root)]))
    assert 400 <= status < 500
    decoded = json.loads(_json({"error": {"message": text, "param": param}}).encode("utf-8"))
    assert str(root) not in decoded["error"]["message"]


# ---------------------------------------------------------------------------------------------------------
# generation controls and cancellation, on the tiny checkpoint


def _generate(model, questions, sampling, max_new=24, **kw):
    from llamavid.model.generation import generate

    prompts = [model.text_prompt(q) for q in questions]
    embeds = [model.embed_prompt(p.ids, []) for p in prompts]
    return generate(model, embeds, prompts, sampling=sampling, max_new=max_new, **kw)


def test_generation_controls_do_what_they_say(tiny_model):
    eos = tiny_model.text_tokenizer.eos_id
    greedy = SamplingOptions(temperature=0)
    long = SamplingOptions(temperature=0, logit_bias=((eos, -100.0),))  # never ends by itself
    [plain] = _generate(tiny_model, ["what color is the shape?"], greedy)
    [traced] = _generate(tiny_model, ["what color is the shape?"], SamplingOptions(temperature=0, logprobs=2))
    assert traced.text == plain.text and len(traced.logprobs) == traced.new_tokens  # recording changes nothing
    assert all(t.top[0][1] >= t.logprob and len(t.top) == 2 for t in traced.logprobs)
    [endless] = _generate(tiny_model, ["what color is the shape?"], long)
    assert endless.new_tokens == 24 and endless.truncated
    word = endless.text.split()[1] if len(endless.text.split()) > 1 else endless.text[3:5]
    [stopped] = _generate(tiny_model, ["what color is the shape?"], SamplingOptions(
        temperature=0, logit_bias=((eos, -100.0),), stop=(word,)))
    assert word not in stopped.text and endless.text.startswith(stopped.text) and not stopped.truncated
    [varied] = _generate(tiny_model, ["what color is the shape?"], SamplingOptions(
        temperature=0, logit_bias=((eos, -100.0),), presence_penalty=2.0, frequency_penalty=2.0))
    ids = tiny_model.text_tokenizer.encode_continuation(varied.text)
    assert varied.text != endless.text and len(set(ids)) >= len(set(tiny_model.text_tokenizer.encode_continuation(
        endless.text)))


def test_json_schema_answers_are_json(tiny_model):
    schema = json.dumps({"type": "object", "properties": {"color": {"enum": ["red", "green"]}}, "required": ["color"],
                         "additionalProperties": False})
    answers = _generate(tiny_model, ["what color is the shape?", "describe the video"],
                        SamplingOptions(temperature=0.8, seed=1, json_schema=schema), max_new=40)
    for answer in answers:
        assert json.loads(answer.text)["color"] in ("red", "green"), answer.text
    from llamavid.pipeline.planning import check_controls

    with pytest.raises(InputError) as caught:
        check_controls(tiny_model, SamplingOptions(json_schema='{"type": "strange"}'))
    assert "json_schema" in str(caught.value)
    with pytest.raises(InputError):
        check_controls(tiny_model, SamplingOptions(logit_bias=((10**6, 1.0),)))


def test_a_cancelled_row_stops_within_one_step_and_the_others_go_on(tiny_model):
    eos = tiny_model.text_tokenizer.eos_id
    long = SamplingOptions(temperature=0, logit_bias=((eos, -100.0),))
    asked = [0, 0]

    def cancelled(row: int) -> bool:  # asked before the first token, then after each: row 0 is given up after 3
        asked[row] += 1
        return row == 0 and asked[row] > 3

    answers = _generate(tiny_model, ["what color is the shape?", "describe the video"], long, max_new=40,
                        cancelled=cancelled)
    assert answers[0].cancelled and not answers[0].truncated and answers[0].new_tokens == 3
    assert not answers[1].cancelled and answers[1].new_tokens == 40
    [none] = _generate(tiny_model, ["what color?"], long, cancelled=lambda row: True)
    assert none.cancelled and none.new_tokens == 0


# ---------------------------------------------------------------------------------------------------------
# the service: isolation, cancellation, counters


def _text_question(text, **options):
    from llamavid.tasks.qa import Question

    return Question(text, AskOptions(**{"temperature": 0, "max_new_tokens": 6, **options}))


def _balanced(stats) -> bool:
    return stats.questions == stats.answered + stats.failed + stats.cancelled + stats.pending + stats.running


def test_a_failing_batch_fails_only_the_question_at_fault(tiny_model, monkeypatch):
    import llamavid.server.service as service_module

    real = service_module.answer_texts

    def fragile(model, questions, **kw):  # a bug that only one question's presence sets off
        if any("guilty" in q.text for q in questions):
            raise RuntimeError("a value the model cannot take")
        return real(model, questions, **kw)

    monkeypatch.setattr(service_module, "answer_texts", fragile)
    with service_module.AnswerService(tiny_model, gather_seconds=0.2) as service:
        texts = ["what color?", "how many shapes?", "guilty question", "what happens?", "describe it", "red?", "blue?"]
        futures = [service.submit(None, _text_question(t)) for t in texts]
        for text, future in zip(texts, futures):
            if text.startswith("guilty"):
                with pytest.raises(RuntimeError):
                    future.result(60)
            else:
                assert future.result(60).ok, text
        stats = service.stats()
    assert (stats.questions, stats.answered, stats.failed, stats.cancelled) == (7, 6, 1, 0) and _balanced(stats)


def test_cancelled_questions_stop_and_are_counted(tiny_model):
    from llamavid.server.service import AnswerService, Cancelled

    eos = tiny_model.text_tokenizer.eos_id
    with AnswerService(tiny_model) as service:
        started = threading.Event()
        endless = _text_question("describe the video", logit_bias={eos: -100}, max_new_tokens=100_000)
        running = service.submit(None, endless, on_text=lambda _piece: started.set())
        assert started.wait(60)
        waiting = service.submit(None, _text_question("what color?"))  # queued behind it, then given up
        assert service.cancel(waiting) and isinstance(waiting.result(5).error, Cancelled)
        t0 = time.perf_counter()
        assert service.cancel(running)
        result = running.result(30)
        assert isinstance(result.error, Cancelled) and time.perf_counter() - t0 < 5
        assert not service.cancel(running)  # already finished
        assert service.submit(None, _text_question("what color?")).result(60).ok
        stats = service.stats()
    assert (stats.answered, stats.cancelled, stats.failed) == (1, 2, 0) and _balanced(stats)


def test_text_questions_take_the_system_message(tiny_model):
    from llamavid.tasks.qa import Question, answer_texts

    plain, system = answer_texts(tiny_model, [Question("what color?", AskOptions(temperature=0, max_new_tokens=4)),
                                              Question("what color?", AskOptions(temperature=0, max_new_tokens=4),
                                                       system="Answer in one word.")])
    assert plain.ok and system.ok
    assert system.answer.prompt_tokens > plain.answer.prompt_tokens
    assert "Answer in one word." in system.plan.prompt.text
    assert plain.plan.prompt.text == tiny_model.text_prompt("what color?").text  # no system message: as published
    [refused] = answer_texts(tiny_model, [Question("what " * 5000, AskOptions(max_new_tokens=4))])
    assert isinstance(refused.error, LlamaVidError) and "context" in str(refused.error)


def test_health_counts_add_up_through_the_app(tiny_model, tmp_path):
    from starlette.testclient import TestClient

    from llamavid.server.app import create_app

    root = tmp_path / "media"
    root.mkdir()
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    app = create_app(tiny_model, MediaAccess([root]), model_id="demo")
    with TestClient(app) as client:
        ok = client.post("/v1/chat/completions", json=_body("what color?", temperature=0, max_tokens=4, n=2))
        assert ok.status_code == 200 and [c["index"] for c in ok.json()["choices"]] == [0, 1]
        bad = client.post("/v1/chat/completions", json=_body(_video(str(root / "broken.png"))))
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_media"
        assert str(root) not in bad.text and "broken.png" in bad.text
        health = client.get("/health").json()
    assert health["questions"] == 3 and health["answered"] == 2 and health["failed"] == 1
    assert health["questions"] == sum(health[k] for k in ("answered", "failed", "cancelled", "pending", "running"))


def test_a_json_reply_is_valid_utf8_with_a_lone_surrogate():
    from llamavid.server.app import error_response

    response = error_response(400, "unknown field \"\ud800\"", param="\udcff")
    body = json.loads(bytes(response.body).decode("utf-8"))
    assert body["error"]["message"] == "unknown field \"\ud800\"" and body["error"]["param"] == "\udcff"


def test_pillow_reads_headers_only(tmp_path):
    """The premise of the pixel check: Image.open reads the header, not the pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(_png(40_000, 1_000))) as img:
        assert img.size == (40_000, 1_000)
