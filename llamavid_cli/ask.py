"""`llamavid ask`: one question, a folder of videos, or a batch of JSONL questions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .common import ask_options, expand_inputs, load
from .main import app
from .output import Reporter, is_terminal, message, print_json, write_out


@app.command()
def ask(
    input: Annotated[Optional[str], typer.Argument(help="A video, image, .vidtok file, a folder of videos, or - for paths on stdin.")] = None,
    question: Annotated[Optional[str], typer.Argument(help="The question.")] = None,
    batch: Annotated[Optional[str], typer.Option(
        "--batch", help="JSONL questions file ({\"id\"?, \"video\", \"question\", options...}); - for stdin.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Write JSONL answers here (a rerun resumes; only an earlier output of the same batch is replaced).")] = None,
    force: opt.Force = False,
    model: opt.Model = None,
    temperature: opt.Temperature = None,
    top_p: opt.TopP = None,
    max_new_tokens: opt.MaxNewTokens = None,
    seed: opt.Seed = None,
    fps: opt.Fps = 1.0,
    max_frames: opt.MaxFrames = None,
    subtitles: opt.Subtitles = None,
    long: opt.Long = None,
    strict_context: opt.StrictContext = False,
    no_cache: opt.NoCache = False,
    start: opt.Start = None,
    end: opt.End = None,
    evidence: opt.Evidence = False,
    choice: opt.Choice = None,
    batch_size: opt.QuestionsPerBatch = 8,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    quantize: opt.Quantize = None,
    vision_tower: opt.VisionTower = None,
    qformer_tokenizer: opt.QFormerTokenizer = None,
    json_out: opt.Json = False,
) -> None:
    """Answer a question about a video: llamavid ask movie.mp4 "Who is Murphy?" """
    from llamavid.errors import InputError
    from llamavid.options import check_text

    if batch is None and (input is None or question is None):
        raise InputError("give INPUT and QUESTION, or --batch FILE")
    if batch is not None and (input is not None or question is not None):
        raise InputError("--batch takes its questions from the file; give no INPUT or QUESTION")
    if batch is None and input != "-" and not Path(input).exists():
        raise InputError(f"{input}: no such file")
    if question is not None:
        check_text(question)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    options = ask_options(fps=fps, max_frames=max_frames, long=long, strict_context=strict_context, subtitles=subtitles,
                          temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                          no_cache=no_cache, start=start, end=end, evidence=evidence, choices=choice)
    many = batch is not None or input == "-" or Path(input).is_dir()
    if many:
        items = _batch_items(batch, input, question, options)
        sink = _sink(items, output, force=force, batch=batch)
        m = load(model, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
                 quantize=quantize)
        _run_batch(m, items, sink, batch_size)
        return
    if output is not None:
        raise InputError("-o/--output is for batches and folders; one answer goes to stdout")
    m = load(model, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
             quantize=quantize)
    from llamavid.qa import ask as ask_question

    streaming = not json_out and is_terminal(sys.stdout)
    with Reporter(f"encoding {Path(input).name}") as reporter:
        def stream(piece: str) -> None:
            reporter.close()
            write_out(piece)

        result = ask_question(m, input, question, options, stream=stream if streaming else None,
                              callbacks=reporter.callbacks())
    if json_out:
        print_json(result.to_json())
        return
    write_out("\n" if streaming else result.answer + "\n")
    if result.evidence is not None:
        from llamavid.evidence import format_ranges

        write_out(f"evidence: {format_ranges(result.evidence)}\n")


def _batch_items(batch: str | None, input: str | None, question: str | None, options):
    from llamavid.batch import folder_items, read_batch
    from llamavid.errors import InputError

    if batch is None:
        return folder_items(expand_inputs([input], allow_vidtok=True), question, options)
    if batch == "-":
        return read_batch(sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin, defaults=options,
                          source="stdin")
    path = Path(batch)
    if not path.is_file():
        raise InputError(f"{batch}: no such file")
    with open(path, "rb") as f:
        return read_batch(f, defaults=options, base_dir=path.parent, source=path.name)


def _sink(items, output: Path | None, *, force: bool, batch: str | None):
    from llamavid.fileio import OrderedJsonlPrinter, ResumableJsonl

    order = [i.id for i in items]
    if output is None:
        return OrderedJsonlPrinter(sys.stdout, order)
    inputs = [batch] if batch not in (None, "-") else []
    inputs += sorted({i.video for i in items if i.video})
    return ResumableJsonl(output, order, force=force, inputs=inputs)


def _run_batch(m, items, sink, batch_size: int) -> None:
    from llamavid.batch import run_batch

    try:
        with Reporter("questions", unit="questions") as reporter:
            counts = run_batch(m, items, sink, callbacks=reporter.callbacks(), questions_per_batch=batch_size)
    finally:
        sink.close()
    message(f"llamavid: {counts.answered} answered, {counts.failed} failed, {counts.skipped} already done")
    if counts.failed:
        raise SystemExit(1)
