"""The one path every front end takes: prepare -> plan -> materialize.

A question that cannot be answered is refused by planning, before any decoding or encoding: through
every front end (ask, evidence and choices, a batch, chat, summarize, chapters, eval, the HTTP API),
nothing is encoded and the features cache stays empty. And the steps keep their promises: the encoder
encodes exactly the timeline that was prepared, and plans made before encoding hold after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import model_args, run_cli
from media import make_video

# The tiny checkpoint's 160-token context cannot hold room for a 256-token answer beside any question:
# --max-new-tokens 300 makes every question unanswerable, whatever the video.
UNANSWERABLE = ["--max-new-tokens", "300"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from checkpoint_fixture import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("small"), max_position_embeddings=160)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("pipeline") / "clip.mp4", seconds=4, fps=5)


@pytest.fixture
def encodes(monkeypatch) -> list[int]:
    """Counts vision-encoder forwards (none may run for a refused question)."""
    from llamavid.model.vision import VisionEncoder

    calls: list[int] = []
    original = VisionEncoder.encode_pixels
    monkeypatch.setattr(VisionEncoder, "encode_pixels",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


def cache_is_empty(tmp_path: Path) -> bool:
    folder = tmp_path / "llamavid-cache" / "vidtok"
    return not folder.exists() or not any(folder.iterdir())


def args(small, *more) -> list[str]:
    return [*model_args(small), *more, *UNANSWERABLE]


@pytest.mark.parametrize("extra, why", [
    ([], "the answer needs room for"),
    (["--evidence"], "the answer needs room for"),
    (["--strict-context"], "the answer needs room for"),
    # a choice needs no room to generate: refused for a range past the end of the 4-second clip instead
    (["--choice", "red", "--choice", "blue", "--start", "0:09"], "past the end of the video"),
])
def test_ask_refuses_before_encoding(small, clip, tmp_path, capsys, encodes, extra, why):
    code, out, err = run_cli(capsys, "ask", clip, "what color?", *args(small), *extra)
    assert code == 1 and out == "" and why in err.splitlines()[-1]
    assert encodes == [] and cache_is_empty(tmp_path)


def test_a_batch_refuses_each_unanswerable_line_before_encoding(small, clip, tmp_path, capsys, encodes):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps({"id": str(i), "video": str(clip), "question": "what color?",
                                       "max_new_tokens": 300}) for i in range(3)) + "\n")
    code, out, err = run_cli(capsys, "ask", "--batch", q, *model_args(small))
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["id"] for r in records] == ["0", "1", "2"]
    assert all("the answer needs room for" in r["error"] for r in records)
    assert encodes == [] and cache_is_empty(tmp_path)


def test_chat_refuses_a_turn_before_encoding(small, clip, tmp_path, capsys, monkeypatch, encodes):
    code, out, err = run_cli(capsys, "chat", clip, *args(small), stdin="what color?\n", monkeypatch=monkeypatch)
    assert code == 0 and out == "\n" and "the answer needs room for" in err
    assert encodes == [] and cache_is_empty(tmp_path)


@pytest.mark.parametrize("extra", [[], ["--chapters", "--start", "0:09"]])
def test_summarize_and_chapters_refuse_before_encoding(small, clip, tmp_path, capsys, encodes, extra):
    code, out, err = run_cli(capsys, "summarize", clip, *args(small), *extra)
    assert code == 1 and out == ""
    why = "past the end of the video" if extra else "cannot hold even one frame and a summary"
    assert why in err.splitlines()[-1]
    assert encodes == [] and cache_is_empty(tmp_path)


def test_eval_predict_refuses_each_item_before_encoding(small, clip, tmp_path, capsys, encodes):
    (tmp_path / "videos").mkdir()
    clip_copy = tmp_path / "videos" / "vid1.mp4"
    clip_copy.write_bytes(clip.read_bytes())
    (tmp_path / "qa.json").write_text(json.dumps([{"video_name": "vid1", "question": "what color?", "answer": "red",
                                                   "id": 0}]))
    out = tmp_path / "preds.jsonl"
    code, _, err = run_cli(capsys, "eval", "predict", "msvd-qa", "-q", tmp_path / "qa.json", "--videos",
                           tmp_path / "videos", "-o", out, *args(small))
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert "the answer needs room for" in record["error"]
    assert encodes == [] and cache_is_empty(tmp_path)


@pytest.mark.slow
def test_the_http_api_refuses_before_encoding_with_the_fields_it_knows(small, clip, tmp_path, encodes):
    """The refusal is a 400 naming the request's own fields ("max_tokens"), the cache stays empty, and the
    server's counters count it."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import llamavid
    from llamavid.server.app import create_app
    from llamavid.server.media_access import MediaAccess

    model = llamavid.load_model(small.path, vision_tower=small.vision_path, device="cpu", dtype="float32")
    app = create_app(model, MediaAccess([clip.parent]), model_id="tiny")
    body = {"model": "tiny", "max_tokens": 300, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip.name}},
                                                      {"type": "text", "text": "what color?"}]}]}
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json=body)
        health = client.get("/health").json()
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and "the answer needs room for" in error["message"]
    assert str(clip.parent) not in error["message"]
    assert encodes == [] and cache_is_empty(tmp_path)
    assert (health["questions"], health["failed"], health["encoded"]) == (1, 1, 0)


def test_a_context_overflow_is_worded_by_each_front_end(small, tmp_path, capsys):
    """The same refusal, carrying its figures: --max-frames N on the command line, "max_frames": N in a
    batch line, max_frames=N from Python; never reworded by string replacement."""
    import llamavid
    from llamavid.core.errors import JSON, ContextOverflowError
    from llamavid_cli.output import error_text

    long = make_video(tmp_path / "long.mp4", seconds=60, fps=2, width=48, height=32)
    model = llamavid.load_model(small.path, vision_tower=small.vision_path, device="cpu", dtype="float32")
    with pytest.raises(ContextOverflowError) as refused:
        llamavid.ask(model, long, "what?", strict_context=True, max_new_tokens=8)
    exc = refused.value
    n = exc.frames_fit
    assert 0 < n < 60 and exc.context == 160 and exc.needed > 160 and exc.where == str(long)
    assert f"max_frames={n}" in str(exc) and "--max-frames" not in str(exc)
    assert f"--max-frames {n}" in error_text(exc) and "--strict-context" in error_text(exc)
    assert f'"max_frames": {n}' in exc.render(JSON) and exc.suggestions == {"max_frames": n}


def test_the_encoder_takes_the_prepared_timeline_and_the_plans_hold(tiny, clip, tmp_path, monkeypatch):
    """prepare resolves the sampling plan once; materialize encodes exactly that plan (the sampler is not
    asked to plan again), and the plan made before encoding is the one answered from."""
    import llamavid
    from llamavid.media import video
    from llamavid.pipeline import materialize, prepare
    from llamavid.pipeline.planning import plan_question

    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    options = llamavid.AskOptions(temperature=0, max_new_tokens=4)
    with prepare.prepare(model, clip, options) as ready:
        assert ready.features is None and ready.job is not None  # nothing encoded yet
        assert cache_is_empty(tmp_path)
        plan = plan_question(model, ready, "what color?", options)
        sampled = []
        original = video.sample_frames
        monkeypatch.setattr(video, "sample_frames", lambda *a, **k: sampled.append(k.get("plan")) or original(*a, **k))
        monkeypatch.setattr(video, "_plan", lambda *a, **k: pytest.fail("the sampling plan was made again"))
        vin = materialize.materialize(model, ready)
    with vin:
        assert sampled and sampled[0] is not None and list(sampled[0]) == list(ready.job.plan)
        assert np.array_equal(vin.timestamps, ready.timestamps)
        assert materialize.timeline_held(ready, vin)
        [result] = llamavid.answer_questions(model, vin, [llamavid.Question("what color?", options)], plans=[plan])
        assert result.ok and result.plan is plan
