"""`llamavid summarize`: a summary of a whole video (segment by segment when it is long)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llamavid.core.options import AskOptions

from . import options as opt
from .output import Reporter, is_terminal, message, print_json, print_result, write_out


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
    from llamavid.core.options import check_choice
    from llamavid.tasks.summary import fmt_time
    from llamavid.tasks.summary import summarize as summarize_video

    check_choice("style", style, SUMMARY_STYLES)
    from llamavid.pipeline.prepare import check_source

    check_source(input)  # a missing, empty or unreadable input is refused before the model loads
    m = model.load()
    if chapters:
        with Reporter(f"encoding {Path(input).name}") as reporter:
            _chapters(m, input, options, reporter, json_out)
        return
    streaming = not json_out and is_terminal(sys.stdout)
    with Reporter(f"encoding {Path(input).name}") as reporter:
        def on_segment(s) -> None:
            reporter.close()
            message(f"[{fmt_time(s.start)}-{fmt_time(s.end)}] {s.summary}")

        def stream(piece: str) -> None:
            reporter.close()
            write_out(piece)

        result = summarize_video(m, input, options, style=style, stream=stream if streaming else None,
                                 on_segment=None if json_out else on_segment, callbacks=reporter.callbacks())
    print_result(result.to_json(), result.summary, json_out=json_out, streamed=streaming)


def _chapters(m, input: str, options, reporter, json_out: bool) -> None:
    from llamavid.core.timecode import format_clock
    from llamavid.tasks.chapters import chapter_list, make_chapters

    def progress(c) -> None:
        reporter.close()
        message(f"[{format_clock(c.start)}-{format_clock(c.end, up=True)}] {c.title}: {' '.join(c.summary.split())}")

    result = make_chapters(m, input, options, on_chapter=None if json_out else progress, callbacks=reporter.callbacks())
    if json_out:
        print_json(result.to_json())
    else:
        write_out(chapter_list(result.chapters))
