"""`llamavid info`: what a .vidtok file holds, or what a model checkpoint is (checked without running it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .output import print_json


def info(
    target: Annotated[str, typer.Argument(
        help="A .vidtok file, or a model: checkpoint directory, Hugging Face id or built-in name.")],
    json_out: opt.Json = False,
    verify: opt.Verify = False,
    vision_tower: opt.VisionTower = None,
) -> None:
    """Show what a .vidtok features file or a model checkpoint holds."""
    from llamavid.core.errors import InputError
    from llamavid.features.vidtok import looks_like_vidtok
    from llamavid.media.video import is_image_path, is_video_path

    if Path(target).is_file() and not looks_like_vidtok(target) and (is_video_path(target) or is_image_path(target)):
        raise InputError("is a video or image; llamavid info reads a .vidtok or a model (encode it first: "
                         "llamavid encode)", where=target)
    if target.endswith(".vidtok") or looks_like_vidtok(target):
        record = vidtok_info(Path(target), verify=verify)
    else:
        record = model_info(target, vision_tower=str(vision_tower) if vision_tower else None)
    if json_out:
        print_json(record)
        return
    for key, value in record.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for k, v in value.items():
                typer.echo(f"  {k}: {v}")
        elif isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value) and len(value) <= 8:
            typer.echo(f"{key}: {' x '.join(map(str, value)) if key.endswith('shape') else ', '.join(map(str, value))}")
        elif isinstance(value, list):
            typer.echo(f"{key}: {len(value)} item(s)")
            for item in value:
                typer.echo(f"  {item}")
        else:
            typer.echo(f"{key}: {value}")


def model_info(name: str, *, vision_tower: str | None = None) -> dict:
    """Load a checkpoint memory-mapped in its stored dtypes (no copies): every key and shape is checked."""
    from llamavid import load_model

    model = load_model(name, vision_tower=vision_tower, device="cpu", dtype="stored")
    cfg = model.config
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    try:
        vision = model.vision_identity()
    except Exception as exc:  # the encoder may only be reachable by download; say so rather than fail
        vision = {"error": " ".join(str(exc).split())}
    return {
        "model": name,
        "llm": {"hidden_size": cfg.llm_hidden_size, "layers": cfg.llm.get("num_hidden_layers"),
                "parameters": count(model.llm), "vocab_size": model.text_tokenizer.vocab_size},
        "context_length": model.context_length,
        "tokens_per_frame": model.tokens_per_frame,
        "compress_type": cfg.compress_type,
        "projector": cfg.mm_projector_type,
        "long_video": cfg.long_video,
        "conv_mode": cfg.conv_mode,
        "qformer": {"layers": model.qformer.config.layers, "hidden": model.qformer.config.hidden,
                    "queries": model.qformer.config.num_query, "parameters": count(model.qformer)},
        "vision": vision,
    }


def vidtok_info(path: Path, *, verify: bool = False) -> dict:
    from llamavid.features.vidtok import open_vidtok

    with open_vidtok(path) as vt:
        if verify:
            vt.verify()
        meta = dict(vt.meta)
        return {
            "file": str(path),
            "format_version": vt.format_version,
            "frames": vt.num_frames,
            "feature_shape": list(vt.feature_shape),
            "storage": vt.storage,
            "bytes": path.stat().st_size,
            "fps": vt.fps,
            "first_timestamp": float(vt.timestamps[0]) if vt.num_frames else 0.0,
            "last_timestamp": float(vt.timestamps[-1]) if vt.num_frames else 0.0,
            "source": vt.source,
            "encoder": vt.encoder,
            "subtitles": len(vt.subtitles),
            "transcript": None if vt.transcript is None else {
                "lines": len(vt.transcript["lines"]), "provenance": vt.transcript["provenance"]},
            "warnings": vt.warnings,
            "created_by": meta.get("created_by"),
            "created_at": meta.get("created_at"),
            "verified": bool(verify),
        }
