"""`llamavid ask`: one question, a folder of videos, or a batch of JSONL questions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llamavid.core.options import AskOptions

from . import options as opt
from .common import expand_inputs
from .output import Reporter, is_terminal, message, print_result, write_evidence, write_out


@opt.with_groups(opt.MODEL, opt.QUESTION)
def ask(
    input: Annotated[Optional[str], typer.Argument(
        help="A video, image, .vidtok file, a folder of videos, or - for paths on stdin.")] = None,
    question: Annotated[Optional[str], typer.Argument(help="The question.")] = None,
    batch: Annotated[Optional[str], typer.Option(
        "--batch", help="JSONL questions file ({\"id\"?, \"video\", \"question\", options...}); - for stdin.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Write JSONL answers here (a rerun resumes; only an earlier output of the same batch "
                               "is replaced).")] = None,
    force: opt.Force = False,
    batch_size: opt.QuestionsPerBatch = 8,
    json_out: opt.Json = False,
    *,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Answer a question about a video: llamavid ask movie.mp4 "Who is Murphy?" """
    from llamavid.core.errors import InputError
    from llamavid.core.options import check_text
    from llamavid.pipeline.prepare import check_source

    if batch is None and (input is None or question is None):
        raise InputError("give INPUT and QUESTION, or --batch FILE")
    if batch is not None and (input is not None or question is not None):
        raise InputError("--batch takes its questions from the file; give no INPUT or QUESTION")
    if batch is None and input != "-" and not Path(input).is_dir():
        check_source(input)  # a missing, empty or unreadable input is refused before the model loads
    if question is not None:
        check_text(question)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    many = batch is not None or input == "-" or Path(input).is_dir()
    if many:
        items = _batch_items(batch, input, question, options)
        sink = _sink(items, output, force=force, batch=batch)
        _run_batch(model.load(), items, sink, batch_size)
        return
    if output is not None:
        raise InputError("-o/--output is for batches and folders; one answer goes to stdout")
    m = model.load()
    from llamavid.tasks.qa import ask as ask_question

    streaming = not json_out and is_terminal(sys.stdout)
    with Reporter(f"encoding {Path(input).name}") as reporter:
        def stream(piece: str) -> None:
            reporter.close()
            write_out(piece)

        result = ask_question(m, input, question, options, stream=stream if streaming else None,
                              callbacks=reporter.callbacks())
    print_result(result.to_json(), result.answer, json_out=json_out, streamed=streaming)
    if not json_out:
        write_evidence(result.evidence)


def _batch_items(batch: str | None, input: str | None, question: str | None, options):
    from llamavid.core.errors import InputError
    from llamavid.tasks.batch import folder_items, read_batch

    if batch is None:
        return folder_items(expand_inputs([input], allow_vidtok=True), question, options)
    if batch == "-":
        return read_batch(sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin, defaults=options,
                          source="stdin")
    path = Path(batch)
    if path.is_dir():
        raise InputError("is a folder; --batch takes a JSONL file of questions (to ask one question about every "
                         "video in a folder: llamavid ask FOLDER QUESTION)", where=batch)
    if not path.exists():
        raise InputError("no such file", where=batch)
    if not (path.is_file() or path.is_fifo()):
        raise InputError("is not a regular file (a device?); --batch takes a JSONL file of questions", where=batch)
    with open(path, "rb") as f:
        return read_batch(f, defaults=options, base_dir=path.parent, source=path.name)


def _sink(items, output: Path | None, *, force: bool, batch: str | None):
    from llamavid.core.fileio import OrderedJsonlPrinter, ResumableJsonl

    order = [i.id for i in items]
    if output is None:
        return OrderedJsonlPrinter(sys.stdout, order)
    inputs = [batch] if batch not in (None, "-") else []
    inputs += sorted({i.video for i in items if i.video})
    return ResumableJsonl(output, order, force=force, inputs=inputs)


def _run_batch(m, items, sink, batch_size: int) -> None:
    from llamavid.tasks.batch import run_batch

    try:
        with Reporter("questions", unit="questions") as reporter:
            counts = run_batch(m, items, sink, callbacks=reporter.callbacks(), questions_per_batch=batch_size)
    finally:
        sink.close()
    message(f"llamavid: {counts.answered} answered, {counts.failed} failed, {counts.skipped} already done")
    if counts.failed:
        raise SystemExit(1)
