"""Pieces several commands share: which model, which inputs, the options of a question."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

from .output import message


def model_name(option: str | None) -> str:
    """--model, else $LLAMAVID_MODEL, else the built-in default (the released short-video model)."""
    from llamavid.model.builtin import default_model_name

    return option or default_model_name()


def load(option: str | None, *, vision_tower: Path | str | None = None, qformer_tokenizer: str | None = None,
         device: str | None = None, dtype: str | None = None, quantize: str | None = None):
    """Load the model the user asked for, saying so on stderr (it can take a while), with the library's
    notes (the dtype it chose, the KV cache a long prompt gets) as stderr lines."""
    import llamavid
    from llamavid.model.checkpoint import user_cache_dir
    from llamavid.model.quantize import parse_quantize

    bits = parse_quantize(quantize)
    user_cache_dir()  # a cache setting that cannot work is refused before the model loads
    name = model_name(option)
    message(f"llamavid: loading {name}")
    return llamavid.load_model(name, vision_tower=str(vision_tower) if vision_tower else None,
                               qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
                               load_in_8bit=bits == 8, load_in_4bit=bits == 4, callbacks=status_callbacks())


def status_callbacks():
    """Library notes as "llamavid: ..." lines on stderr, warnings as warnings."""
    from llamavid.core.callbacks import Callbacks

    from .output import warn

    return Callbacks(status=lambda text: message(f"llamavid: {text}"), warning=warn)


def ask_options(*, fps: float = 1.0, max_frames: int | None = None, long: bool | None = None,
                strict_context: bool = False, subtitles: Path | None = None, temperature: float | None = None,
                top_p: float | None = None, max_new_tokens: int | None = None, seed: int | None = None,
                no_cache: bool = False, start: str | None = None, end: str | None = None, evidence: bool = False,
                choices: list[str] | None = None, kv_cache: str | None = None, asr: bool = False,
                asr_model: str | None = None, language: str | None = None, look_closer: bool | None = None):
    """The command line's question options, validated once (a bad value is a one-line error)."""
    from llamavid.core.options import AskOptions

    options = AskOptions(fps=fps, max_frames=max_frames, long=long, strict_context=strict_context,
                      subtitles=str(subtitles) if subtitles is not None else None, temperature=temperature,
                      top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, cache=not no_cache, start=start,
                      end=end, evidence=evidence, choices=tuple(choices) if choices else None,
                      kv_cache=kv_cache or "auto", asr=asr, asr_model=asr_model, language=language,
                      look_closer=look_closer)
    if options.speech:  # a recognizer that cannot be had is refused now, before any model loads
        from llamavid.pipeline.prepare import speech_options

        speech_options(options)
    return options


def expand_inputs(inputs: Iterable[str], *, allow_vidtok: bool = False) -> list[Path]:
    """Files as given; folders -> every video/image file inside, recursively, sorted; "-" -> paths on stdin."""
    from llamavid.core.errors import InputError
    from llamavid.media import video

    out: list[Path] = []
    for item in inputs:
        if item == "-":
            out.extend(Path(line.strip()) for line in sys.stdin if line.strip())
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and (video.is_video_path(p) or (allow_vidtok and p.suffix == ".vidtok")))
            if not found:
                raise InputError(f"{item}: no video files in this folder")
            out.extend(found)
        else:
            out.append(path)
    return out
