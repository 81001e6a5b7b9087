"""`llamavid train`: one stage of the published three-stage recipe (see llamavid.train)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options as opt
from .main import app
from .output import message, print_json


@app.command()
def train(
    stage: int = typer.Option(..., "--stage", help="1 alignment (projectors), 2 instruction (+LLM, QFormer), 3 long video (LLM, QFormer frozen)."),
    data: List[Path] = typer.Option(..., "--data", help="LLaVA-style JSON with image, video or vidtok entries (repeatable)."),
    model: str = typer.Option(..., "--model", help="The checkpoint to start from (published layout; a previous stage's output/model)."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory: checkpoint-N/ (resume), model/ (final), train_log.jsonl."),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help="Base of relative media paths (default: each JSON file's folder)."),
    feature_cache: Optional[Path] = typer.Option(None, "--feature-cache", help="Where video features are cached (default: OUTPUT/features)."),
    vision_tower: opt.VisionTower = None,
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the data (fractions allowed)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch (default: 256 / 128 / 8 by stage)."),
    micro_batch_size: int = typer.Option(4, "--micro-batch-size", help="Samples per process per forward (the rest is gradient accumulation)."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: 1e-3 / 2e-5 / 2e-5 by stage)."),
    warmup_ratio: float = typer.Option(0.03, "--warmup-ratio", help="Share of the steps spent warming the learning rate up (published: 0.03)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Truncate samples (default 2048, 65536 in stage 3)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Frames per video, spread evenly (default: all)."),
    fps: opt.Fps = 1.0,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 mixed precision (default: on with a GPU)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in the backward pass to save memory (default: on with a GPU)."),
    long: Optional[bool] = typer.Option(None, "--long/--short", help="Use the movie prompt for every sample (default: per sample's \"long\")."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order and dropout (a rerun is repeatable)."),
    save_steps: int = typer.Option(500, "--save-steps", help="Write a resumable checkpoint every N optimizer steps."),
    save_format: str = typer.Option("safetensors", "--save-format", help="safetensors (default; no pickle), or bin: the published pickled shards (loaded with weights_only)."),
    embed_vision: bool = typer.Option(False, "--embed-vision", help="Store a bf16 copy of the vision encoder in the checkpoint (always done when the starting model carried one); otherwise eva_vit_g.pth is linked beside it."),
    device: opt.Device = None,
    json_out: bool = typer.Option(False, "--json", help="Log records as JSON lines on stdout."),
) -> None:
    """Train one stage; rerunning the same command resumes from the newest checkpoint."""
    from llamavid.train.trainer import TrainConfig, train as run

    cfg = TrainConfig(
        stage=stage, data=[str(d) for d in data], model=model, output=str(output),
        vision_tower=str(vision_tower) if vision_tower else None, media_root=str(media_root) if media_root else None,
        feature_cache=str(feature_cache) if feature_cache else None, fps=fps, max_frames=max_frames, epochs=epochs,
        batch_size=batch_size, micro_batch_size=micro_batch_size, learning_rate=learning_rate,
        warmup_ratio=warmup_ratio, max_tokens=max_tokens, bf16=bf16, gradient_checkpointing=gradient_checkpointing,
        seed=seed, save_steps=save_steps, long_video=long, device=device, save_format=save_format,
        embed_vision=embed_vision,
    )

    def on_log(record: dict) -> None:
        if json_out:
            print_json(record)
        elif "loss" in record:
            message(f"step {record['step']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, {record['seconds']:.0f} s")
        else:
            message(f"llamavid: {record}")

    result = run(cfg, on_log=on_log)
    message(f"llamavid: trained {result.steps} steps ({result.trained_parameters} tensors) in {result.seconds:.0f} s; "
            f"model: {result.model_dir}")
