"""SRT output in exactly the form openai-whisper's command line writes (whisper/utils.py, WriteSRT): cues
numbered from 1, HH:MM:SS,mmm with the hours always shown, "-->" in a text written "->", a blank line
after every cue; written whole or not at all, never over an existing file unless forced."""

from __future__ import annotations

import numpy as np
import pytest

from llamavid.core.errors import InputError
from llamavid.media.srt import format_srt, format_timestamp, write_srt
from llamavid.media.subtitles import SubtitleLine, load_srt, parse_srt

TEXTS = ["The old lighthouse keeper painted the door green.", "Children were playing football.", "Wait... what?",
         "Don't stop & go — café, naïve", "Two spaces? No: one.", "«Quoted» text, with commas; and a colon:",
         "A question?", "An exclamation!", "Semi-colons; dashes - and (parentheses)", "The end."] * 4

def test_srt_is_written_exactly_as_whisper_writes_it():
    lines = [SubtitleLine(0.0, 2.5, " Hello there. "), SubtitleLine(62.0625, 3601.9996, "A --> B and C-->D"),
             SubtitleLine(360000.0, 360001.001, "after a hundred hours")]
    assert format_srt(lines) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:01:02,062 --> 01:00:02,000\nA -> B and C->D\n\n"
        "3\n100:00:00,000 --> 100:00:01,001\nafter a hundred hours\n\n")


def test_srt_timestamps_round_to_the_millisecond_with_hours_always_shown():
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(59.9999) == "00:01:00,000"
    assert format_timestamp(3599.0004) == "00:59:59,000"
    assert format_timestamp(7322.5) == "02:02:02,500"
    with pytest.raises(InputError, match="expected a finite number of seconds"):
        format_timestamp(-0.5)
    with pytest.raises(InputError):
        format_timestamp(float("nan"))


def test_srt_leaves_out_empty_texts_and_folds_line_breaks():
    lines = [SubtitleLine(0, 1, "one"), SubtitleLine(1, 2, "  "), SubtitleLine(2, 3, "two\n\nlines")]
    assert format_srt(lines) == ("1\n00:00:00,000 --> 00:00:01,000\none\n\n"
                                 "2\n00:00:02,000 --> 00:00:03,000\ntwo lines\n\n")
    assert format_srt([]) == ""


def test_srt_round_trip():
    rng = np.random.default_rng(5)
    lines, t = [], 0.0
    for i, text in enumerate(TEXTS):
        start = round(t + rng.uniform(0, 3), 3)
        end = round(start + rng.uniform(0.2, 6), 3)
        lines.append(SubtitleLine(start, end, text))
        t = end + (36000.0 if i == 10 else 0.0)  # hours past ten
    assert parse_srt(format_srt(lines)) == lines


def test_write_srt_never_overwrites_unless_forced(tmp_path):
    path = tmp_path / "out.srt"
    first = [SubtitleLine(0.0, 1.0, "first")]
    write_srt(path, first)
    assert path.read_bytes() == b"1\n00:00:00,000 --> 00:00:01,000\nfirst\n\n"
    with pytest.raises(InputError, match=r"out\.srt: already exists; not overwritten"):
        write_srt(path, [SubtitleLine(0.0, 1.0, "second")])
    assert load_srt(path) == first
    write_srt(path, [SubtitleLine(0.0, 1.0, "second")], force=True)
    assert load_srt(path)[0].text == "second"
    with pytest.raises(InputError, match="is a directory"):
        write_srt(tmp_path, first)
    with pytest.raises(InputError, match="no such directory"):
        write_srt(tmp_path / "nope" / "x.srt", first)
    with pytest.raises(InputError):  # a bad time: nothing written
        write_srt(tmp_path / "bad.srt", [SubtitleLine(-1.0, 1.0, "x")])
    assert not (tmp_path / "bad.srt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.srt"]
