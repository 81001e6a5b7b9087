"""`llamavid summarize`: a summary of a whole video (segment by segment when it is long)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .common import ask_options, load
from .main import app
from .output import Reporter, is_terminal, message, print_json, write_out


@app.command()
def summarize(
    input: Annotated[str, typer.Argument(help="A video, image or .vidtok file.")],
    style: opt.Style = "brief",
    model: opt.Model = None,
    temperature: opt.Temperature = None,
    top_p: opt.TopP = None,
    max_new_tokens: opt.MaxNewTokens = None,
    seed: opt.Seed = None,
    fps: opt.Fps = 1.0,
    subtitles: opt.Subtitles = None,
    long: opt.Long = None,
    no_cache: opt.NoCache = False,
    start: opt.Start = None,
    end: opt.End = None,
    chapters: opt.Chapters = False,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    quantize: opt.Quantize = None,
    vision_tower: opt.VisionTower = None,
    qformer_tokenizer: opt.QFormerTokenizer = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print {summary, segments: [{start, end, frames, summary}], ...} as one JSON object "
                       "(with --chapters: {chapters: [{start, end, title, summary}], ...}).")] = False,
) -> None:
    """Summarize a whole video (or --start/--end of it); videos too long for the context are summarized
    segment by segment, then merged. --chapters: a chapter list instead."""
    from llamavid.choices import SUMMARY_STYLES
    from llamavid.errors import InputError
    from llamavid.inputs import open_input
    from llamavid.summary import fmt_time, summarize as summarize_video

    if style not in SUMMARY_STYLES:
        raise InputError(f"--style {style}: expected one of {', '.join(SUMMARY_STYLES)}")
    options = ask_options(fps=fps, long=long, subtitles=subtitles, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, seed=seed, no_cache=no_cache, start=start, end=end)
    m = load(model, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
             quantize=quantize)
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
    if json_out:
        print_json(result.to_json())
    elif streaming:
        write_out("\n")
    else:
        write_out(result.summary + "\n")


def _chapters(m, vin, options, reporter, json_out: bool) -> None:
    from llamavid.chapters import chapter_list, make_chapters
    from llamavid.timecode import format_clock

    def progress(c) -> None:
        message(f"[{format_clock(c.start)}-{format_clock(c.end, up=True)}] {c.title}: {' '.join(c.summary.split())}")

    result = make_chapters(m, vin, options, on_chapter=None if json_out else progress, callbacks=reporter.callbacks())
    if json_out:
        print_json(result.to_json())
    else:
        write_out(chapter_list(result.chapters))
