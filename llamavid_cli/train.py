"""`llamavid train`: one stage of the published three-stage recipe (see llamavid.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import options as opt
from .output import message, print_json, warn


def train(
    stage: Annotated[int, typer.Option(
        "--stage", help="1 alignment (projectors), 2 instruction (+LLM, QFormer), 3 long video (LLM, "
                        "QFormer frozen).")],
    data: Annotated[List[Path], typer.Option(
        "--data", help="LLaVA-style JSON with image, video or vidtok entries (repeatable).")],
    model: Annotated[str, typer.Option(
        "--model", help="The checkpoint to start from (published layout; a previous stage's output/model).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Run directory: checkpoint-N/ (resume), model/ (final), train_log.jsonl.")],
    media_root: Annotated[Optional[Path], typer.Option(
        "--media-root", help="Base of relative media paths (default: each JSON file's folder).")] = None,
    feature_cache: Annotated[Optional[Path], typer.Option(
        "--feature-cache", help="Where video features are cached (default: OUTPUT/features).")] = None,
    vision_tower: opt.VisionTower = None,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the data (fractions allowed).")] = 1.0,
    global_batch_size: Annotated[Optional[int], typer.Option(
        "--global-batch-size", help="Samples per optimizer step, over all processes (default: 256 / 128 / "
                                    "8 by stage).")] = None,
    batch_size: opt.OldBatchSize = None,
    micro_batch_size: Annotated[int, typer.Option(
        "--micro-batch-size", help="Samples per process per forward (the rest is gradient accumulation).")] = 4,
    learning_rate: Annotated[Optional[float], typer.Option(
        "--lr", help="Peak learning rate (default: 1e-3 / 2e-5 / 2e-5 by stage).")] = None,
    warmup_ratio: Annotated[float, typer.Option(
        "--warmup-ratio", help="Share of the steps spent warming the learning rate up (published: 0.03).")] = 0.03,
    max_tokens: Annotated[Optional[int], typer.Option(
        "--max-tokens", help="Truncate samples (default 2048, 65536 in stage 3).")] = None,
    max_frames: opt.MaxFrames = None,
    fps: opt.Fps = 1.0,
    bf16: Annotated[Optional[bool], typer.Option(
        "--bf16/--no-bf16", help="bf16 mixed precision (default: on with a GPU).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in the backward pass to save memory (default: on with a GPU).")] = None,
    long: Annotated[Optional[bool], typer.Option(
        "--long/--short", help="Use the movie prompt for every sample (default: per sample's \"long\").")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the data order and dropout (a rerun is repeatable).")] = 0,
    save_steps: Annotated[int, typer.Option(
        "--save-steps", help="Write a resumable checkpoint every N optimizer steps.")] = 500,
    save_format: Annotated[str, typer.Option(
        "--save-format", help="safetensors (default; no pickle), or bin: the published pickled shards (loaded with "
                              "weights_only).")] = "safetensors",
    embed_vision: Annotated[bool, typer.Option(
        "--embed-vision", help="Store a bf16 copy of the vision encoder in the checkpoint (always done when the "
                               "starting model carried one); otherwise eva_vit_g.pth is linked beside it.")] = False,
    device: opt.Device = None,
    json_out: opt.Json = False,
) -> None:
    """Train one stage; rerunning the same command resumes from the newest checkpoint."""
    from llamavid.train.trainer import TrainConfig
    from llamavid.train.trainer import train as run

    if batch_size is not None:
        warn("--batch-size is deprecated for train: use --global-batch-size")
        global_batch_size = batch_size if global_batch_size is None else global_batch_size
    cfg = TrainConfig(
        stage=stage, data=[str(d) for d in data], model=model, output=str(output),
        vision_tower=str(vision_tower) if vision_tower else None, media_root=str(media_root) if media_root else None,
        feature_cache=str(feature_cache) if feature_cache else None, fps=fps, max_frames=max_frames, epochs=epochs,
        batch_size=global_batch_size, micro_batch_size=micro_batch_size, learning_rate=learning_rate,
        warmup_ratio=warmup_ratio, max_tokens=max_tokens, bf16=bf16, gradient_checkpointing=gradient_checkpointing,
        seed=seed, save_steps=save_steps, long_video=long, device=device, save_format=save_format,
        embed_vision=embed_vision,
    )

    def on_log(record: dict) -> None:
        if json_out:
            print_json(record)
        elif "loss" in record:
            message(f"step {record['step']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, "
                    f"{record['seconds']:.0f} s")
        else:
            message(f"llamavid: {record}")

    result = run(cfg, on_log=on_log)
    message(f"llamavid: trained {result.steps} steps ({result.trained_parameters} tensors) in {result.seconds:.0f} s; "
            f"model: {result.model_dir}")
