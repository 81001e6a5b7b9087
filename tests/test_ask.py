"""`llamavid ask` and `llamavid summarize` end to end through the real CLI entry point (tiny checkpoints).

The tiny models answer gibberish; what is checked is everything around the answer: caching, schema,
determinism, the published long-video prompt, the context check, --max-frames and segmenting.
"""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
from conftest import model_args, run_cli
from media import make_image, make_video, write_srt

import llamavid
from llamavid.model.modeling import LlamaVid
from llamavid.model.vision import VisionEncoder
from llamavid.pipeline import planning
from llamavid.tasks import summary

ASK_KEYS = {"input", "question", "answer", "model", "frames", "prompt_tokens", "seconds"}
PUBLISHED_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("askmedia")
    return {"video": make_video(root / "clip.mp4", seconds=4, fps=5), "image": make_image(root / "still.png"),
            "long": make_video(root / "long.mp4", seconds=60, fps=2, width=48, height=32), "root": root}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The tiny checkpoint with a 160-token context: 60 frames x 2 tokens + the prompt overflow it."""
    from checkpoint_fixture import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("small"), max_position_embeddings=160)


@pytest.fixture(scope="module")
def long_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("long-cache")


@pytest.fixture
def shared_long_cache(long_cache, monkeypatch):
    """Tests that are not about caching share one token file of the long video (encoded once)."""
    monkeypatch.setenv("LLAMAVID_CACHE", str(long_cache))


def cached_files(tmp_path):
    return sorted((tmp_path / "llamavid-cache" / "vidtok").glob("*.vidtok"))


@pytest.mark.slow
def test_ask_video_is_encoded_once_then_read_from_the_cache(tiny, media, tmp_path, capsys, monkeypatch):
    calls = []
    original = VisionEncoder.encode_pixels
    monkeypatch.setattr(VisionEncoder, "encode_pixels",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    code, out1, err1 = run_cli(capsys, "ask", media["video"], "What color is the shape?", "--json", *model_args(tiny))
    assert code == 0, err1
    [cache] = cached_files(tmp_path)
    assert "encoded 4 frames into" in err1 and str(cache) in err1
    first_calls, mtime = len(calls), cache.stat().st_mtime_ns
    assert first_calls > 0

    code, out2, err2 = run_cli(capsys, "ask", media["video"], "What color is the shape?", "--json", *model_args(tiny))
    assert code == 0, err2
    assert len(calls) == first_calls, "the second question re-encoded the video"
    assert cached_files(tmp_path) == [cache] and cache.stat().st_mtime_ns == mtime
    assert f"using cached features {cache}" in err2

    a, b = json.loads(out1), json.loads(out2)
    for record in (a, b):
        assert set(record) == ASK_KEYS
        assert isinstance(record["answer"], str) and isinstance(record["model"], str)
        assert isinstance(record["frames"], int) and isinstance(record["prompt_tokens"], int)
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
    assert a["input"] == str(media["video"]) and a["question"] == "What color is the shape?"
    assert a["frames"] == 4 and a["model"] == str(tiny.path)
    assert a["answer"] == b["answer"] and a["prompt_tokens"] == b["prompt_tokens"]
    # the token count: text tokens of the published prompt + 2 tokens for each of the 4 frames
    m = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")
    prompt = f"{PUBLISHED_SYSTEM} USER: <image>\nWhat color is the shape? ASSISTANT:"
    text_ids = ([1] + m.text_tokenizer.encode(prompt.split("<image>")[0])
                + m.text_tokenizer.encode("\nWhat color is the shape? ASSISTANT:"))
    assert abs(a["prompt_tokens"] - (len(text_ids) + 4 * 2)) <= 1  # tokenizer boundary at the split

    # the cached token file is a .vidtok like any other: asking it gives the same answer
    copy = shutil.copy(cache, tmp_path / "clip.vidtok")
    code, out3, err3 = run_cli(capsys, "ask", copy, "What color is the shape?", "--json", *model_args(tiny))
    assert code == 0, err3
    assert json.loads(out3)["answer"] == a["answer"] and json.loads(out3)["frames"] == 4


def test_ask_image_no_cache_and_plain_output(tiny, media, tmp_path, capsys):
    code, out, err = run_cli(capsys, "ask", media["image"], "what?", "--json", "--no-cache", *model_args(tiny))
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == ASK_KEYS and record["frames"] == 1
    assert cached_files(tmp_path) == [], "--no-cache left a token file in the cache"
    code, plain, err = run_cli(capsys, "ask", media["image"], "what?", *model_args(tiny))
    assert code == 0 and plain == record["answer"] + "\n"  # piped: the answer alone, once


@pytest.mark.slow
def test_same_answer_at_temperature_zero_and_with_a_seed(tiny, media, capsys):
    base = ["ask", media["image"], "who is murphy?", "--json", *model_args(tiny, max_new=12)]
    greedy = [json.loads(run_cli(capsys, *base)[1])["answer"] for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = [json.loads(run_cli(capsys, *base, "--temperature", "1.5", "--top-p", "1", "--seed", "7")[1])["answer"]
               for _ in range(2)]
    assert sampled[0] == sampled[1]


class FakeTerminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_answer_streams_to_a_terminal_and_prints_plainly_when_piped(tiny, media, capsys, monkeypatch):
    code, plain, _ = run_cli(capsys, "ask", media["image"], "what?", *model_args(tiny, max_new=10))
    assert code == 0 and plain.count("\n") == 1
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    code, _, _ = run_cli(capsys, "ask", media["image"], "what?", *model_args(tiny, max_new=10))
    assert code == 0
    assert terminal.writes > 2, "the answer was not streamed piece by piece"
    assert terminal.getvalue().strip() == plain.strip()


@pytest.mark.slow
def test_long_prompt_is_the_published_movie_prompt_with_per_frame_subtitles(tiny, media, tmp_path, capsys, monkeypatch):
    srt = write_srt(tmp_path / "clip.srt", [(0.5, 1.5, "hello there"), (2.2, 2.8, "bye now")])
    prompts = []
    original = LlamaVid.build_prompt
    monkeypatch.setattr(LlamaVid, "build_prompt",
                        lambda self, *a, **k: prompts.append(original(self, *a, **k)) or prompts[-1])
    code, out, err = run_cli(capsys, "ask", media["video"], "Who says bye?", "--long", "--subtitles", srt, "--json",
                             *model_args(tiny))
    assert code == 0, err
    # frames at 0,1,2,3 s; a line goes with the last frame before its end (published rule)
    expected = (f"{PUBLISHED_SYSTEM} USER: Below is a movie. Memorize the content and answer my question after "
                "watching this movie.<image><image>hello there<image>bye now<image>Now the movie end.\nWho says "
                "bye? ASSISTANT:")
    assert prompts[-1] == expected
    code, out_short, _ = run_cli(capsys, "ask", media["video"], "Who says bye?", "--json", *model_args(tiny))
    assert prompts[-1] == f"{PUBLISHED_SYSTEM} USER: <image>\nWho says bye? ASSISTANT:"
    assert json.loads(out)["prompt_tokens"] > json.loads(out_short)["prompt_tokens"]


@pytest.mark.slow
def test_context_overflow_strict_is_refused_before_encoding_with_a_hint_that_works(small, media, tmp_path, capsys,
                                                                                  long_cache, monkeypatch):
    code, out, err = run_cli(capsys, "ask", media["long"], "what?", "--strict-context", *model_args(small))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("llamavid: error: ") and "Traceback" not in err
    assert str(media["long"]) in lines[-1] and "--max-frames" in lines[-1] and "--fps" in lines[-1]
    assert "160" in lines[-1]
    assert cached_files(tmp_path) == [], "the video was encoded although it could not fit"
    # the suggested frame count does fit, strictly
    monkeypatch.setenv("LLAMAVID_CACHE", str(long_cache))
    suggested = int(lines[-1].split("--max-frames ")[1].split()[0])
    code, out, err = run_cli(capsys, "ask", media["long"], "what?", "--max-frames", suggested, "--strict-context",
                             "--json",
                             *model_args(small))
    assert code == 0, err
    assert json.loads(out)["frames"] == suggested and "frames_available" not in json.loads(out)
    # one more frame does not
    code, out, err = run_cli(capsys, "ask", media["long"], "what?", "--max-frames", suggested + 1, "--strict-context",
                             *model_args(small))
    assert code == 1 and f"--max-frames {suggested}" in err


@pytest.mark.slow
def test_context_overflow_by_default_uses_the_most_frames_that_fit(small, media, capsys, monkeypatch,
                                                                   shared_long_cache):
    seen = []
    original = LlamaVid.prompt_embeddings
    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, f, prompts, **k: seen.append((list(k["frame_indices"]), prompts[0].tokens))
                        or original(self, f, prompts, **k))
    code, out, err = run_cli(capsys, "ask", media["long"], "what?", "--json", *model_args(small))
    assert code == 0, err
    record = json.loads(out)
    strict = run_cli(capsys, "ask", media["long"], "what?", "--strict-context", *model_args(small))[2]
    most = int(strict.split("--max-frames ")[1].split()[0])
    assert record["frames"] == most and record["frames_available"] == 60
    indices, prompt_tokens = seen[0]
    assert len(indices) == most and indices[0] == 0 and indices[-1] == 59  # spread over the whole video
    assert prompt_tokens + 8 <= 160  # the prompt and the answer fit the 160-token context
    note = [line for line in err.splitlines() if "do not fit" in line]
    assert len(note) == 1 and f"using {most} frames" in note[0] and "60 frames" in note[0]


@pytest.mark.slow
def test_a_question_too_long_for_any_frame_gets_a_hint_that_can_work(small, media, capsys, shared_long_cache):
    question = "why " * 200
    code, out, err = run_cli(capsys, "ask", media["long"], question, *model_args(small))
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert "the question takes" in last and "shorten it" in last and "--max-frames" not in last


@pytest.mark.slow
def test_max_frames_samples_uniformly_then_fits(small, media, capsys, monkeypatch, shared_long_cache):
    seen = []
    original = LlamaVid.prompt_embeddings
    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, *a, **k: seen.append(list(k.get("frame_indices") or []))
                        or original(self, *a, **k))
    code, out, err = run_cli(capsys, "ask", media["long"], "what?", "--max-frames", "20", "--json", *model_args(small))
    assert code == 0, err
    record = json.loads(out)
    assert record["frames"] == 20
    indices = seen[-1]
    assert len(indices) == 20 and indices[0] == 0 and indices[-1] == 59  # 60 frames at 1 fps
    gaps = np.diff(indices)
    assert gaps.min() >= 3 and gaps.max() <= 4  # 59 / 19 = 3.1: evenly spread
    assert planning.uniform_indices(60, 1) == [30] and planning.uniform_indices(5, 9) == [0, 1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("style", ["brief", "detailed"])
def test_summarize_segments_a_video_too_long_for_the_context(small, media, capsys, style, monkeypatch,
                                                             shared_long_cache):
    questions = []
    original = LlamaVid.prompt_embeddings
    monkeypatch.setattr(LlamaVid, "prompt_embeddings",
                        lambda self, f, prompts, **k: questions.extend(p.question for p in prompts)
                        or original(self, f, prompts, **k))
    code, out, err = run_cli(capsys, "summarize", media["long"], "--style", style, "--json",
                             *model_args(small, max_new=6))
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == {"input", "style", "summary", "model", "frames", "segments", "seconds"}
    assert record["style"] == style and record["frames"] == 60 and isinstance(record["summary"], str)
    segs = record["segments"]
    assert len(segs) >= 2
    assert all(set(s) == {"start", "end", "frames", "summary"} for s in segs)
    assert sum(s["frames"] for s in segs) == 60
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == 59.0
    for a, b in zip(segs, segs[1:]):
        assert a["start"] <= a["end"] < b["start"]
        assert b["start"] - a["end"] == pytest.approx(1.0)  # contiguous at 1 fps: no frame left out
    assert questions == [summary.SEGMENT_QUESTION] * len(segs)


def test_summarize_short_video_in_one_piece(tiny, media, capsys):
    code, out, err = run_cli(capsys, "summarize", media["video"], "--style", "detailed", "--json", *model_args(tiny))
    assert code == 0, err
    record = json.loads(out)
    assert [(s["start"], s["end"], s["frames"]) for s in record["segments"]] == [(0.0, 3.0, 4)]
    assert record["segments"][0]["summary"] == record["summary"]
    code, out, err = run_cli(capsys, "summarize", media["video"], "--style", "long", *model_args(tiny))
    assert code == 1 and "--style long" in err and "Traceback" not in err


def test_model_resolution_order_and_missing_model_message(tiny, media, capsys, monkeypatch):
    vt = ["--vision-tower", str(tiny.vision_path), "--temperature", "0", "--max-new-tokens", "4"]
    monkeypatch.setenv("LLAMAVID_MODEL", str(tiny.path))
    code, out, err = run_cli(capsys, "ask", media["image"], "what?", *vt)
    assert code == 0 and f"loading {tiny.path}" in err
    monkeypatch.setenv("LLAMAVID_MODEL", str(media["root"] / "no-such-model"))
    code, out, err = run_cli(capsys, "ask", media["image"], "what?", "--model", str(tiny.path), *vt)
    assert code == 0 and f"loading {tiny.path}" in err  # --model wins over the environment
    monkeypatch.delenv("LLAMAVID_MODEL")
    code, out, err = run_cli(capsys, "ask", media["image"], "what?", *vt)
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 2  # "loading ..." and the error, no traceback
    assert last.startswith("llamavid: error: YanweiLi/llama-vid-7b-full-224-video-fps-1")
    assert "--model DIR" in last and "LLAMAVID_MODEL" in last


def test_bad_input_is_one_line(tiny, media, capsys):
    code, out, err = run_cli(capsys, "ask", media["root"] / "missing.mp4", "what?", *model_args(tiny))
    assert code == 1 and err.strip() == f"llamavid: error: {media['root'] / 'missing.mp4'}: no such file"
    code, out, err = run_cli(capsys, "ask", media["image"], "  ", *model_args(tiny))
    assert code == 1 and "question is empty" in err and "Traceback" not in err


def test_python_api_is_what_the_cli_wraps(tiny, tiny_model, media, capsys):
    greedy = dict(temperature=0.0, max_new_tokens=8)
    result = llamavid.ask(tiny_model, media["image"], "what?", **greedy)
    assert set(result.to_json()) == ASK_KEYS and result.frames == 1
    code, out, _ = run_cli(capsys, "ask", media["image"], "what?", "--json", *model_args(tiny))
    assert json.loads(out)["answer"] == result.answer
    options = llamavid.AskOptions(**greedy)
    assert llamavid.ask(tiny_model, media["image"], "what?", options).answer == result.answer
    with llamavid.open_input(tiny_model, media["image"], options) as vin:
        chat = llamavid.ChatSession(tiny_model, vin, options)
        first = chat.ask("what?")
        chat.ask("and then?")
        assert first.text == result.answer and [q for q, _ in chat.history] == ["what?", "and then?"]
        chat.reset()
        assert chat.to_json()["turns"] == []
        summary = llamavid.summarize(tiny_model, vin, options, style="brief")
        assert summary.frames == 1 and len(summary.segments) == 1


def test_a_cached_ask_probes_nothing_hashes_once_opens_once_and_builds_one_prompt(tiny, media, capsys, monkeypatch):
    from llamavid.features.vidtok import Vidtok
    from llamavid.media import video
    from llamavid.pipeline import materialize, prepare

    counts = {"probe": 0, "hash": 0, "open": 0, "prompt": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(video, "probe", counted("probe", video.probe))
    monkeypatch.setattr(prepare, "content_hash", counted("hash", prepare.content_hash))
    opened = counted("open", prepare.open_vidtok)
    monkeypatch.setattr(prepare, "open_vidtok", opened)
    monkeypatch.setattr(materialize, "open_vidtok", opened)
    monkeypatch.setattr(LlamaVid, "build_prompt", counted("prompt", LlamaVid.build_prompt))
    code, _, err = run_cli(capsys, "ask", media["video"], "what?", *model_args(tiny))
    assert code == 0, err
    assert counts == {"probe": 1, "hash": 1, "open": 1, "prompt": 1}, "a new video: probed, hashed, opened once"
    counts.update(probe=0, hash=0, open=0, prompt=0)
    code, _, err = run_cli(capsys, "ask", media["video"], "what?", *model_args(tiny))
    assert code == 0, err
    assert counts == {"probe": 0, "hash": 1, "open": 1, "prompt": 1}, "a cached video is not demuxed again"

    # features are read straight into the model's dtype
    import torch

    model = llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="bfloat16")
    dtypes = []
    original = Vidtok.features
    monkeypatch.setattr(Vidtok, "features",
                        lambda self, *a, **k: dtypes.append(k.get("dtype")) or original(self, *a, **k))
    llamavid.ask(model, media["video"], "what?", temperature=0.0, max_new_tokens=2)
    assert dtypes and set(dtypes) == {torch.bfloat16}


@pytest.mark.slow
def test_subtitles_given_at_ask_time_are_used_even_when_the_video_is_cached(tiny, media, tmp_path, capsys, monkeypatch):
    prompts = []
    original = LlamaVid.build_prompt
    monkeypatch.setattr(LlamaVid, "build_prompt",
                        lambda self, *a, **k: prompts.append(original(self, *a, **k)) or prompts[-1])
    video = shutil.copy(media["video"], tmp_path / "v.mp4")
    code, first, err = run_cli(capsys, "ask", video, "Who speaks?", "--long", "--json", *model_args(tiny))
    assert code == 0, err
    assert "encoded" in err and "hello there" not in prompts[-1]
    srt = write_srt(tmp_path / "given.srt", [(0.5, 1.5, "hello there")])
    code, cached, err = run_cli(capsys, "ask", video, "Who speaks?", "--long", "--subtitles", srt, "--json",
                                *model_args(tiny))
    assert code == 0 and "using cached features" in err
    with_cache = prompts[-1]
    code, fresh, err = run_cli(capsys, "ask", video, "Who speaks?", "--long", "--subtitles", srt, "--no-cache",
                               "--json",
                               *model_args(tiny))
    assert code == 0 and "encoded" in err
    assert "hello there" in with_cache and prompts[-1] == with_cache  # the cache changes nothing
    assert json.loads(cached)["answer"] == json.loads(fresh)["answer"]
    # a sidecar .srt added after the video was cached is used too (it is read at ask time)
    write_srt(tmp_path / "v.srt", [(2.2, 2.8, "bye now")])
    code, _, err = run_cli(capsys, "ask", video, "Who speaks?", "--long", *model_args(tiny))
    assert code == 0 and "using cached features" in err and "bye now" in prompts[-1]
