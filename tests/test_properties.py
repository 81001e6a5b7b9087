"""Property-based tests of every option, batch field and server field, drawn from extreme values: huge and
tiny numbers, NaN and infinities, wrong types, odd Unicode (Hypothesis).

The property, whatever the value: a validated object the code can really use (sampling runs on it, a
generator takes its seed), or a one-line error (``LlamaVidError`` / an error record / a 4xx) that names the
field; never any other exception.

    python -m pytest tests/test_properties.py                     # the short profile (the suite's)
    LLAMAVID_FUZZ_EXAMPLES=20000 python -m pytest tests/test_properties.py   # a long one (benchmarks/fuzz_options.py)
"""

from __future__ import annotations

import json
import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llamavid.core.errors import JSON, LlamaVidError, RequestError  # noqa: E402
from llamavid.core.options import BATCH_OPTION_FIELDS, AskOptions, options_from_json  # noqa: E402

EXAMPLES = int(os.environ.get("LLAMAVID_FUZZ_EXAMPLES", "150"))
PROFILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# numbers at and past every edge the code has: int64, uint64, float32 and float64 limits, zero, signs
EDGES = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, 10**400, -(10**400),
         1e-300, 5e-324, 1.4e-45, 1e-46, 3.5e38, 1.8e308, 0.5, 1.0, 240.0, 240.0001, 1e-6, 9.9e-7]
NUMBERS = st.one_of(st.sampled_from(EDGES), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(10**500), max_value=10**500))
TEXT = st.text(alphabet=st.characters(codec=None), max_size=40)  # every code point, lone surrogates included
VALUES = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=8)
FIELD_VALUES = st.dictionaries(st.sampled_from(BATCH_OPTION_FIELDS), VALUES, max_size=4)


def one_line(text: str) -> bool:
    return "\n" not in text and 0 < len(text) < 400


def usable(options: AskOptions) -> None:
    """An accepted value is one the code can hold: sampling runs on it, a generator takes its seed."""
    import torch

    from llamavid.model.generation import make_generator, pick_tokens

    for long_video in (False, True):
        sampling = options.sampling(long_video)
        generator = make_generator(sampling, torch.device("cpu"))
        logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)) * 30
        picked = pick_tokens(logits, sampling, generator)
        assert picked.shape == (2,) and bool(((picked >= 0) & (picked < 50)).all())
    for value in (options.fps, options.start, options.end):
        assert value is None or math.isfinite(value)
    if options.time_range is not None:
        start, end = options.time_range
        assert 0 <= start < end


@PROFILE
@given(FIELD_VALUES)
def test_every_batch_field_is_validated_or_refused_in_one_line(record):
    try:
        options = options_from_json(record, AskOptions())
    except LlamaVidError as exc:
        assert one_line(exc.render(JSON)) and one_line(str(exc))
        return
    usable(options)


@PROFILE
@given(st.dictionaries(st.sampled_from(["id", "video", "question", *BATCH_OPTION_FIELDS, "extra"]), VALUES,
                       max_size=6))
def test_every_batch_line_becomes_an_item_or_an_error_record(record):
    from llamavid.tasks.batch import read_batch

    try:
        line = json.dumps(record)
    except (ValueError, OverflowError):
        return  # not a line a JSON writer could produce
    [item] = read_batch([line.encode("utf-8", "surrogatepass")], defaults=AskOptions())
    if item.error is not None:
        assert one_line(item.error)
        json.dumps({"id": item.id, "error": item.error})  # the error record can be written
    else:
        usable(item.options)


@PROFILE
@given(body=st.dictionaries(st.sampled_from(["model", "messages", "stream", "n", "temperature", "top_p", "seed",
                                        "max_tokens", "max_completion_tokens", "user", "stream_options", "fps",
                                        "max_frames", "long", "start", "end", "evidence", "choices", "subtitles",
                                        "kv_cache", "strict_context", "stop", "presence_penalty",
                                        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
                                        "response_format", "metadata", "store", "tools", "tool_choice"]),
                                   VALUES, max_size=6),
       url=st.sampled_from(["video.mp4", "data:image/png;base64,AAAA", "data:video/mp4;base64,AAAA", "v\ud800.mp4",
                            5, None]))
def test_every_request_field_is_validated_or_refused_with_a_4xx(body, url, tmp_path_factory):
    from llamavid.server.media_access import MediaAccess
    from llamavid.server.protocol import parse_chat_request

    body = dict(body)
    body.setdefault("model", "demo")
    body.setdefault("messages", [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                             {"type": "text", "text": "What?"}]}])
    root = tmp_path_factory.getbasetemp()
    try:
        request = parse_chat_request(body, model_id="demo", media=MediaAccess([root]))
    except RequestError as exc:
        assert 400 <= exc.status < 500 and one_line(str(exc))
        return
    usable(request.question.options)


FLAGS = {"--fps": NUMBERS, "--max-frames": NUMBERS, "--temperature": NUMBERS, "--top-p": NUMBERS,
         "--seed": NUMBERS, "--max-new-tokens": NUMBERS, "--start": st.one_of(NUMBERS, TEXT),
         "--end": st.one_of(NUMBERS, TEXT), "--kv-cache": TEXT}


@pytest.mark.slow
@PROFILE
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.one_of(NUMBERS, TEXT), min_size=1, max_size=3))
def test_every_command_line_flag_gets_one_clear_line(flags, capsys, monkeypatch):
    """Through the real command line, with a model that does not exist: valid values reach the model's
    loading (and its one-line refusal), invalid ones are refused first; never an internal error."""
    from conftest import run_cli

    args = []
    for flag, value in flags.items():
        args += [flag, str(value)]
    code, out, err = run_cli(capsys, "ask", __file__, "What?", *args, "--model", "/nonexistent/model")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and out == ""
    assert "internal error" not in err and "Traceback" not in err, err
    assert lines and lines[-1].startswith("llamavid: error:") and len(lines[-1]) < 400, err

