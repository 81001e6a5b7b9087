"""Subtitles: reading .srt files in the encodings people have, finding them beside a video or inside
it, and attaching each line to a frame by the published rule (the LAST sampled frame whose time is
strictly before the line's END time; frame 0 when none is). Expected attachments are worked out by
hand in the comments."""

from __future__ import annotations

import subprocess

import media
import pytest

from llamavid.core.errors import InputError, LlamaVidError
from llamavid.media import subtitles as subs
from llamavid.media import video

# In file order: out of order and overlapping.
HAND_MADE = [
    (2.5, 3.5, "third"),  # ends 3.5: frames before 3.5 are 0..3 -> frame 3
    (0.2, 1.5, "first"),  # ends 1.5 -> frame 1
    (1.0, 3.0, "<i>over</i>lap"),  # ends exactly on frame 3's time: strictly before 3.0 -> frame 2
    (0.0, 0.5, "hello"),  # -> frame 0
    (3.2, 3.9, "also"),  # -> frame 3, after "third" (it starts later)
    (0.6, 1.0, "edge"),  # ends exactly at frame 1's time -> frame 0, after "hello"
    (10.0, 12.0, "late"),  # after the video's last frame -> the last frame, 4
]
EXPECTED_AT_1FPS = ["hello edge", "first", "overlap", "third also", "late"]


def test_hand_made_overlapping_out_of_order_lines_attach_by_the_published_rule(tmp_path):
    clip = media.make_video(tmp_path / "clip.mp4", seconds=5, fps=10)
    srt = media.write_srt(tmp_path / "clip.srt", HAND_MADE)  # the sidecar of clip.mp4
    lines, source = subs.resolve(clip)
    assert source == "clip.srt"
    assert [line.text for line in lines] == ["hello", "first", "edge", "overlap", "third", "also", "late"]  # by start
    times = video.sample_times(video.probe(clip), 1)
    assert times == pytest.approx([0, 1, 2, 3, 4])
    assert subs.attach_to_frames(lines, times) == EXPECTED_AT_1FPS
    assert subs.attach_to_frames(subs.load_srt(srt), times) == EXPECTED_AT_1FPS

    # At 2 frames/s (frames at 0, 0.5, ..., 4.5), by hand: hello(end 0.5) -> 0; edge(1.0) -> 0.5;
    # first(1.5) -> 1.0; overlap(3.0) -> 2.5; third(3.5) -> 3.0; also(3.9) -> 3.5; late -> 4.5.
    times2 = video.sample_times(video.probe(clip), 2)
    assert subs.attach_to_frames(lines, times2) == [
        "hello", "edge", "first", "", "", "overlap", "third", "also", "", "late"]


def test_a_line_ending_before_the_first_frame_goes_to_frame_zero():
    lines = [subs.SubtitleLine(0.0, 0.4, "early"), subs.SubtitleLine(0.0, 9.0, "long")]
    assert subs.attach_to_frames(lines, [0.5, 1.5]) == ["early", "long"]
    assert subs.attach_to_frames(lines, []) == []


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252", "utf-8"])
def test_encodings(tmp_path, encoding):
    text = "Café déjà vu — naïve «quote»" if encoding != "cp1252" else "Café déjà vu – naïve «quote»"
    path = media.write_srt(tmp_path / "s.srt", [(0.0, 1.0, text), (1.0, 2.5, "<b>second</b>\nline &amp; more")],
                           encoding=encoding)
    raw = path.read_bytes()
    assert raw.startswith({"utf-8-sig": b"\xef\xbb\xbf", "utf-16": b"\xff\xfe"}.get(encoding, b"1"))
    lines = subs.load_srt(path)
    assert [(line.start, line.end, line.text) for line in lines] == [
        (0.0, 1.0, text), (1.0, 2.5, "second line & more")]


def test_sidecar_discovery(tmp_path):
    clip = tmp_path / "movie.mkv"
    clip.write_bytes(b"")  # discovery looks at names only
    assert subs.find_sidecar(clip) is None
    media.write_srt(tmp_path / "movie.en.srt", [(0, 1, "tagged")])
    media.write_srt(tmp_path / "other.srt", [(0, 1, "not ours")])
    assert subs.find_sidecar(clip) == tmp_path / "movie.en.srt"
    media.write_srt(tmp_path / "movie.srt", [(0, 1, "exact")])
    assert subs.find_sidecar(clip) == tmp_path / "movie.srt"  # NAME.srt wins over NAME.<lang>.srt


@pytest.mark.slow
def test_embedded_mov_text_stream_is_extracted(tmp_path):
    clip = media.make_video(tmp_path / "plain.mp4", seconds=3, fps=10)
    srt = media.write_srt(tmp_path / "s.srt", [(0.25, 1.2, "inside one"), (1.5, 2.75, "inside two")])
    muxed = tmp_path / "with_subs.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-i", str(srt), "-map", "0:v", "-map", "1:s",
                    "-c", "copy", "-c:s", "mov_text", str(muxed)], check=True)
    lines = subs.extract_embedded(muxed)
    assert [(line.start, line.end, line.text) for line in lines] == [
        (0.25, 1.2, "inside one"), (1.5, 2.75, "inside two")]
    found, source = subs.resolve(muxed)  # no sidecar named with_subs.srt: the stream is used
    assert found == lines and source.startswith("embedded")
    # frames at 0, 1, 2 s: "inside one" ends 1.2 -> frame 1 (1.0 < 1.2); "inside two" ends 2.75 -> frame 2
    assert subs.attach_to_frames(found, video.sample_times(video.probe(muxed), 1)) == ["", "inside one", "inside two"]
    assert subs.extract_embedded(clip) == []
    assert subs.resolve(clip) == ([], None)


def test_malformed_cues_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "bad.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\ngood one\n\n"
                    "2\n00:00:0x,000 --> banana\nbroken timing\n\n"
                    "3\n00:00:03,000 --> 00:00:04,500\ngood two\n\n"
                    "4\n00:00:05,000 --> 00:00:04,000\nends before it starts\n", encoding="utf-8")
    warnings: list[str] = []
    lines = subs.load_srt(path, on_warning=warnings.append)
    assert [line.text for line in lines] == ["good one", "good two"]
    assert len(warnings) == 1 and "bad.srt" in warnings[0] and "skipped 2" in warnings[0]
    assert subs.load_srt(path) == lines  # without a listener the result is the same

    clean = media.write_srt(tmp_path / "clean.srt", [(0, 1, "a"), (1, 2, "b")])
    warnings.clear()
    subs.load_srt(clean, on_warning=warnings.append)
    assert warnings == []


@pytest.mark.parametrize("content", [b"just some notes\nnot subtitles at all\n", b"\x00\x01\x02\xff" * 50])
def test_a_file_with_no_readable_cue_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "notes.srt"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        subs.load_srt(path)
    assert isinstance(caught.value, LlamaVidError)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="no such file"):
        subs.resolve(tmp_path / "v.mp4", tmp_path / "missing.srt")
    assert subs.load_srt(media.write_srt(tmp_path / "empty.srt", [])) == []  # empty is not malformed
