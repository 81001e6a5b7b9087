"""Pieces several commands share: which model, which inputs, sampling options."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

from .output import message


def model_name(option: str | None) -> str:
    """--model, else $LLAMAVID_MODEL, else the built-in default (the released short-video model)."""
    from llamavid.builtin import default_model_name

    return option or default_model_name()


def load(option: str | None, *, vision_tower: str | None = None, qformer_tokenizer: str | None = None,
         device: str | None = None, dtype: str | None = None, quantize: str | None = None):
    """Load the model the user asked for, saying so on stderr (it can take a while)."""
    import llamavid

    name = model_name(option)
    message(f"llamavid: loading {name}")
    bits = {"8bit": {"load_in_8bit": True}, "4bit": {"load_in_4bit": True}}.get(quantize or "", {})
    if quantize and not bits:
        raise llamavid.InputError(f"--quantize {quantize}: expected 8bit or 4bit")
    return llamavid.load_model(name, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device,
                               dtype=dtype, **bits)


def expand_inputs(inputs: Iterable[str], *, allow_vidtok: bool = False) -> list[Path]:
    """Files as given; folders -> every video/image file inside, recursively, sorted; "-" -> paths on stdin."""
    from llamavid import video
    from llamavid.errors import InputError

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


def sampling_options(temperature: float | None, top_p: float | None, max_new_tokens: int | None, seed: int | None,
                     base):
    """Command-line sampling flags over the published defaults (``base``)."""
    from llamavid import InputError, SamplingOptions

    try:
        return SamplingOptions(
            max_new_tokens=base.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=base.temperature if temperature is None else temperature,
            top_p=base.top_p if top_p is None else top_p,
            seed=seed,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
