"""`llamavid summarize`: a summary of a whole video (segment by segment when it is long)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llamavid.core.options import AskOptions

from . import options as opt
from .main import app
from .output import Reporter, is_terminal, message, print_json, print_result, write_out


@app.command()
@opt.with_groups(opt.MODEL, opt.QUESTION.without("max_frames", "strict_context", "evidence", "choices"))
def summarize(
    input: Annotated[str, typer.Argument(help="A video, image or .vidtok file.")],
    style: opt.Style = "brief",
    chapters: opt.Chapters = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print {summary, segments: [{start, end, frames, summary}], ...} as one JSON object "
                       "(with --chapters: {chapters: [{start, end, title, summary}], ...}).")] = False,
    *,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Summarize a whole video (or --start/--end of it); videos too long for the context are summarized
    segment by segment, then merged. --chapters: a chapter list instead."""
    from llamavid.core.choices import SUMMARY_STYLES
    from llamavid.core.errors import InputError
    from llamavid.pipeline.inputs import open_input
    from llamavid.tasks.summary import fmt_time, summarize as summarize_video

    if style not in SUMMARY_STYLES:
        raise InputError(f"--style {style}: expected one of {', '.join(SUMMARY_STYLES)}")
    m = model.load()
    with Reporter(f"encoding {Path(input).name}") as reporter:
        vin = open_input(m, input, options, callbacks=reporter.callbacks())
    if chapters:
        with vin:
            _chapters(m, vin, options, reporter, json_out)
        return
    with vin:
        streaming = not json_out and is_terminal(sys.stdout)
        on_segment = None if json_out else (lambda s: message(f"[{fmt_time(s.start)}-{fmt_time(s.end)}] {s.summary}"))
        result = summarize_video(m, vin, options, style=style, stream=write_out if streaming else None,
                                 on_segment=on_segment, callbacks=reporter.callbacks())
    print_result(result.to_json(), result.summary, json_out=json_out, streamed=streaming)


def _chapters(m, vin, options, reporter, json_out: bool) -> None:
    from llamavid.tasks.chapters import chapter_list, make_chapters
    from llamavid.core.timecode import format_clock

    def progress(c) -> None:
        message(f"[{format_clock(c.start)}-{format_clock(c.end, up=True)}] {c.title}: {' '.join(c.summary.split())}")

    result = make_chapters(m, vin, options, on_chapter=None if json_out else progress, callbacks=reporter.callbacks())
    if json_out:
        print_json(result.to_json())
    else:
        write_out(chapter_list(result.chapters))
