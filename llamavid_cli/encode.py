"""`llamavid encode`: videos -> .vidtok feature files, once, resumable; composes with find and xargs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import options as opt
from .common import expand_inputs, status_callbacks
from .output import Reporter, error_text, message, print_json, warn


def encode(
    inputs: Annotated[List[str], typer.Argument(
        help="Video/image files, folders (searched recursively), or - for paths on stdin.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="A .vidtok file (one input) or a folder. Default: beside each input.")] = None,
    fps: opt.Fps = 1.0,
    subtitles: opt.Subtitles = None,
    model: opt.Model = None,
    vision_tower: opt.VisionTower = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    frames_per_batch: opt.FramesPerBatch = None,
    batch_size: opt.OldBatchSize = None,
    compact: opt.Compact = False,
    asr: opt.Asr = False,
    asr_model: opt.AsrModel = None,
    language: opt.Language = None,
    write_srt: opt.WriteSrt = False,
    force: opt.Force = False,
    json_out: opt.Json = False,
) -> None:
    """Encode videos into .vidtok files of vision features (with timestamps and subtitles)."""
    import llamavid
    from llamavid.core.errors import InputError, LlamaVidError, Opt
    from llamavid.features.encode import (
        EncodeOptions,
        encode_file,
        guard_output,
        output_is_folder,
        output_path_for,
        shard_from_env,
        shard_inputs,
    )
    from llamavid.media.srt import check_srt_target, srt_path_for
    from llamavid.model.builtin import default_model_name
    from llamavid.model.devices import check_device_dtype

    if batch_size is not None:
        warn("--batch-size is deprecated for encode: use --frames-per-batch")
        frames_per_batch = batch_size if frames_per_batch is None else frames_per_batch
    speech = asr or str(subtitles) == "speech"
    if (asr_model is not None or language is not None or write_srt) and not speech:
        raise InputError(Opt("write_srt" if write_srt else "language" if language else "asr_model"),
                         " applies to speech recognition: add ", Opt("asr"))
    recognizer = None
    if speech:
        from llamavid.media.asr import recognizer as find_recognizer

        recognizer = find_recognizer(asr_model, language)  # a model that cannot be had is refused now
    opts = EncodeOptions(fps=fps, storage="int8" if compact else "float16", frames_per_batch=frames_per_batch,
                         subtitles=subtitles, force=force, asr=recognizer)  # checked here, before any model loads
    check_device_dtype(device, dtype)
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no inputs")
    if subtitles is not None and len(paths) > 1:
        raise InputError("--subtitles takes one input (put NAME.srt beside each video instead)")
    many = output_is_folder(output, len(paths))
    outputs = [output_path_for(p, output, many=many) for p in paths]
    clashes = {o for o in outputs if outputs.count(o) > 1}
    rank, world, local_rank = shard_from_env()
    if world > 1:  # under `accelerate launch` / torchrun: this process takes its share of the inputs
        jobs = shard_inputs(list(zip(paths, outputs)), rank, world)
        if device is None:
            import torch

            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    else:
        jobs = list(zip(paths, outputs))
    if output is not None and many:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output directory ({exc.strerror or exc})", where=output) from None
    refused: dict[Path, LlamaVidError] = {}
    for src, dst in jobs:  # before any model loads: an output that holds something else is refused
        try:
            if dst in clashes:
                raise InputError(f"another input also maps to {dst}; use ", Opt("output"), " with one input at a time",
                                 where=src)
            guard_output(dst, src, force=force)
            if write_srt:
                check_srt_target(srt_path_for(src), force=force)
        except LlamaVidError as exc:
            refused[dst] = exc
    if len(refused) == len(jobs) == 1:
        raise next(iter(refused.values()))
    if len(refused) == len(jobs):
        _report_failures(jobs, refused, json_out)
    if vision_tower is not None:
        encoder = llamavid.load_vision_encoder(vision_tower=vision_tower, device=device, dtype=dtype,
                                               callbacks=status_callbacks())
    else:
        encoder = llamavid.load_vision_encoder(model or default_model_name(), device=device, dtype=dtype,
                                               callbacks=status_callbacks())
    failures = 0
    for src, dst in jobs:
        try:
            if dst in refused:
                raise refused[dst]
            with Reporter(src.name, status=False) as reporter:
                cb = reporter.callbacks()
                result = encode_file(encoder, src, dst, opts, on_progress=cb.progress, on_warning=cb.warning,
                                     on_wait=reporter.status)
        except KeyboardInterrupt:
            message(f"llamavid: interrupted; run the same command again to resume {src}")
            raise SystemExit(130)
        except LlamaVidError as exc:
            failures += 1
            if json_out:
                print_json({"input": str(src), "output": str(dst), "status": "failed", "error": error_text(exc)})
            message(f"llamavid: error: {error_text(exc)}")
            continue
        if write_srt and result.status != "failed":
            written = _write_srt(src, dst, force)
            if written is not None and not json_out:
                message(f"{src}: transcript -> {written}")
        if json_out:
            print_json(result.to_json())
        elif result.status == "skipped":
            message(f"{src}: up to date ({result.output})")
        else:
            rate = result.frames / result.seconds if result.seconds else 0.0
            message(f"{src}: {result.frames} frames -> {result.output} ({result.seconds:.1f} s, {rate:.1f} frames/s)"
                    + (f", resumed at frame {result.resumed_from}" if result.resumed_from else ""))
    if failures:
        if len(jobs) > 1:
            message(f"llamavid: {failures} of {len(jobs)} inputs failed")
        raise SystemExit(1)


def _report_failures(jobs, refused, json_out: bool) -> None:
    """Every input was refused before any work: each says why, and the command fails without loading a model."""
    for src, dst in jobs:
        if json_out:
            print_json({"input": str(src), "output": str(dst), "status": "failed", "error": error_text(refused[dst])})
        message(f"llamavid: error: {error_text(refused[dst])}")
    message(f"llamavid: {len(jobs)} of {len(jobs)} inputs failed")
    raise SystemExit(1)


def _write_srt(src: Path, vidtok: Path, force: bool) -> Path | None:
    """The transcript the .vidtok holds, written beside the video as NAME.srt (whisper's format)."""
    from llamavid.features.vidtok import open_vidtok
    from llamavid.media.srt import srt_path_for, write_srt
    from llamavid.media.subtitles import SubtitleLine

    with open_vidtok(vidtok) as vt:
        transcript = vt.transcript
    if transcript is None or not transcript["lines"]:
        message(f"llamavid: {src}: no speech was transcribed; no .srt written")
        return None
    return write_srt(srt_path_for(src), [SubtitleLine(*line) for line in transcript["lines"]], force=force)
