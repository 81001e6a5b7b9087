"""`llamavid search`: the moments of a library of videos that a query is about."""

from __future__ import annotations

from typing import Annotated, List

import typer

from llamavid.core.options import AskOptions, SearchOptions

from . import options as opt
from .output import Reporter, message, print_json, write_out


@opt.with_groups(opt.MODEL, opt.QUESTION.without("start", "end", "evidence", "choices", "look_closer"))
def search(
    items: Annotated[List[str], typer.Argument(
        metavar="PATH... QUERY",
        help=".vidtok files, videos (encoded once, through the cache) and folders (searched recursively), then "
             "the query, e.g. \"a purple ring\" or \"the code word tiger\".")],
    top: opt.Top = 5,
    closer: opt.Closer = SearchOptions.closer,
    rerank: opt.Rerank = None,
    answer: opt.AnswerMoments = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON record per moment on stdout: {\"video\", \"start\", \"end\", \"score\"} "
                       "(and \"answer\" with --answer).")] = False,
    *,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Search a library: llamavid search lectures/ "where the professor derives the Fourier transform" """
    from llamavid.core.errors import InputError
    from llamavid.core.options import check_text
    from llamavid.core.timecode import format_clock
    from llamavid.tasks.search import library_files
    from llamavid.tasks.search import search as search_library

    if len(items) < 2:
        raise InputError("give one or more PATHs (files or folders), then the QUERY")
    *paths, query = items
    check_text(query, "the query")
    settings = SearchOptions(top=top, closer=closer, rerank=rerank, answer=answer, ask=options)
    files = library_files(paths)  # a missing path or an empty folder is refused before the model loads
    m = model.load()
    with Reporter("searching", unit="files") as reporter:
        result = search_library(m, files, query, settings, callbacks=reporter.callbacks())
    if json_out:
        for moment in result.moments:
            print_json(moment.to_json())
    else:
        width = max((len(mo.video) for mo in result.moments), default=0)
        for mo in result.moments:
            span = f"{_hms(format_clock(mo.start, hours=True))}-{_hms(format_clock(mo.end, hours=True, up=True))}"
            write_out(f"{mo.video:<{width}}  {span}  {mo.score:.2f}\n")
            if mo.answer is not None:
                write_out(f"    {' '.join(mo.answer.answer.split())}\n")
    skipped = f"; {len(result.skipped)} skipped" if result.skipped else ""
    took = sum(result.seconds.values())
    message(f"llamavid: {len(result.moments)} moments from {result.files} files ({result.stretches} stretches) "
            f"in {took:.1f} s{skipped}")


def _hms(clock: str) -> str:
    """``H:MM:SS`` -> ``HH:MM:SS`` (one width for every line of a library's moments)."""
    return clock.zfill(8)
