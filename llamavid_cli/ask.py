"""`llamavid ask`: one question, a folder of videos, or a batch of JSONL questions."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .common import expand_inputs, load, sampling_options
from .main import app
from .output import is_terminal, message, print_json, progress_bar, warn


def encode_progress(bar):
    seen = [0]

    def on_progress(done: int, total: int) -> None:
        bar.update(total=total)
        bar.advance(done - seen[0])
        seen[0] = done

    return on_progress


@app.command()
def ask(
    input: Optional[str] = typer.Argument(None, help="A video, image, .vidtok file, or a folder of videos."),
    question: Optional[str] = typer.Argument(None, help="The question."),
    batch: Optional[str] = typer.Option(None, "--batch", help="JSONL questions file ({\"id\"?, \"video\", \"question\", options...}); - for stdin."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write JSONL answers here (a rerun resumes)."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint directory, Hugging Face id or built-in name (default: $LLAMAVID_MODEL, else the released video model)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy (default 0.2; 0.6 for long videos)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass (default 0.7; 0.9 for long videos)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Answer length limit (default 512; 1024 for long videos)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Make sampling repeatable."),
    fps: float = typer.Option(1.0, "--fps", help="Frames per second to sample from a video."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Use N frames spread evenly over the video."),
    subtitles: Optional[Path] = typer.Option(None, "--subtitles", help="An .srt file for the video."),
    long: Optional[bool] = typer.Option(None, "--long/--short", help="Force the long-video (movie) prompt, or the short one (default: as the model was trained)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not keep the encoded video in the cache."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="8bit or 4bit (bitsandbytes)."),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower", help="Path to eva_vit_g.pth."),
    qformer_tokenizer: Optional[str] = typer.Option(None, "--qformer-tokenizer", help="Folder or id of the bert-base-uncased tokenizer."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object (JSONL for folders and batches)."),
) -> None:
    """Answer a question about a video: llamavid ask movie.mp4 "Who is Murphy?" """
    from llamavid import qa
    from llamavid.errors import InputError

    if batch is None and (input is None or question is None):
        raise InputError("give INPUT and QUESTION, or --batch FILE")
    if batch is not None and (input is not None or question is not None):
        raise InputError("--batch takes its questions from the file; give no INPUT or QUESTION")
    if batch is None and input != "-" and not Path(input).exists():
        raise InputError(f"{input}: no such file")
    if question is not None and not question.strip():
        raise InputError("the question is empty")
    m = load(model, vision_tower=str(vision_tower) if vision_tower else None, qformer_tokenizer=qformer_tokenizer,
             device=device, dtype=dtype, quantize=quantize)
    base = qa.default_sampling(m, long)
    sampling = sampling_options(temperature, top_p, max_new_tokens, seed, base)
    defaults = {"fps": fps, "max_frames": max_frames, "subtitles": str(subtitles) if subtitles else None, "long": long}

    if batch is not None or Path(input).is_dir() or input == "-":
        if batch is not None:
            items = _read_batch_items(batch)
        else:
            videos = expand_inputs([input], allow_vidtok=True)
            items = [qa.BatchItem(str(v), str(v), question) for v in videos]
        _run_batch(m, items, output, defaults, sampling, cache=not no_cache)
        return

    t0 = time.perf_counter()
    with progress_bar(f"encoding {Path(input).name}", None) as bar:
        vin_kwargs = dict(fps=fps, subtitles=subtitles, max_frames=max_frames, cache=not no_cache,
                          on_progress=encode_progress(bar), on_warning=warn)
        planned = qa.planned_frames(input, fps)
        if planned is not None and max_frames is None:
            qa.check_fits(m, question, planned, long_video=long, max_new_tokens=sampling.max_new_tokens, source=input)
        vin = qa.open_video_input(m, input, **vin_kwargs)
    with vin:
        report_tokens(input, vin, cache=not no_cache)
        streaming = not json_out and is_terminal(sys.stdout)
        stream = (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if streaming else None
        answer = qa.answer_on(m, vin, question, long_video=long, sampling=sampling, stream=stream)
        if json_out:
            result = qa.AskResult(input, question, answer.text, m.name, vin.num_frames, answer.prompt_tokens,
                                  round(time.perf_counter() - t0, 3))
            print_json(result.to_json())
        elif streaming:
            sys.stdout.write("\n")
        else:
            sys.stdout.write(answer.text + "\n")


def report_tokens(input: str, vin, *, cache: bool) -> None:
    """Say on stderr whether the video was encoded now or its cached token file was reused."""
    if Path(input).suffix == ".vidtok":
        return
    where = vin.tokens.path if cache else "a temporary file"
    if vin.encoded:
        message(f"llamavid: encoded {len(vin.tokens)} frames into {where}")
    else:
        message(f"llamavid: using cached tokens {where}")


def _read_batch_items(batch: str):
    from llamavid import qa
    from llamavid.errors import InputError

    if batch == "-":
        return qa.read_batch(sys.stdin, source="stdin")
    path = Path(batch)
    if not path.is_file():
        raise InputError(f"{batch}: no such file")
    with open(path, encoding="utf-8", errors="replace") as f:
        return qa.read_batch(f, base_dir=path.parent, source=path.name)


def _run_batch(m, items, output: Optional[Path], defaults: dict, sampling, *, cache: bool) -> None:
    from llamavid import qa

    writer = qa.BatchWriter([i.id for i in items], output if output is not None else sys.stdout)
    try:
        with progress_bar("questions", len(items), unit="questions") as bar:
            counts = qa.run_batch(m, items, writer, defaults=defaults, sampling=sampling, cache=cache,
                                  on_item=lambda record: bar.advance(1))
    finally:
        writer.close()
    message(f"llamavid: {counts['answered']} answered, {counts['failed']} failed, {counts['skipped']} already done")
    if counts["failed"]:
        raise SystemExit(1)
