"""The training loop: one stage of the recipe, on one CPU or many GPUs through accelerate.

Single process:            llamavid train --stage 2 --data train.json --model CKPT --output runs/s2
Several GPUs or nodes:     accelerate launch --config_file configs/accelerate_zero2.yaml -m llamavid_cli train ...

Every ``save_steps`` optimizer steps, ``output/checkpoint-N/`` gets the accelerate state (weights,
optimizer, scheduler, RNG) plus the model in the published layout (``checkpoint-N/model``); a rerun
of the same command resumes from the newest one. The final model is ``output/model``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core.errors import InputError
from ..core.fileio import write_text_atomic
from ..model.checkpoint import VISION_TOWER_NAME
from .data import ConversationDataset, FeatureStore, collate, load_samples
from .objective import TrainingModule
from .stages import apply_freezing, get_stage


@dataclass
class TrainConfig:
    stage: int
    data: list[str]
    model: str
    output: str
    vision_tower: str | None = None
    qformer_tokenizer: str | None = None
    media_root: str | None = None
    feature_cache: str | None = None  # default: <output>/features
    fps: float = 1.0
    max_frames: int | None = None
    epochs: float = 1.0
    batch_size: int | None = None  # global batch; default: the stage's (256 / 128 / 8)
    micro_batch_size: int = 4
    learning_rate: float | None = None  # default: the stage's (1e-3 / 2e-5 / 2e-5)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # clip the LLM's gradient and the vision side's (QFormer, token generator, projector) each to
    # max_grad_norm on its own: a grounding loss trains only the vision side, and clipped together its
    # gradient shrinks the LLM's step in every batch that has it (docs/RESULTS.md, "Look closer")
    clip_per_module: bool = False
    max_tokens: int | None = None  # default: the stage's (2048 / 2048 / 65536)
    bf16: bool | None = None  # default: on when a CUDA GPU is used
    gradient_checkpointing: bool | None = None  # default: on when a CUDA GPU is used
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    long_video: bool | None = None
    device: str | None = None
    save_format: str = "safetensors"
    embed_vision: bool = False
    log_every: int = 10


def clip_groups_of(model, trained: list[torch.nn.Parameter], per_module: bool) -> list[list[torch.nn.Parameter]]:
    """The trained parameters in the groups whose gradient norms are clipped: ``trained`` as one group, or
    (per_module) the LLM's and the rest's (the vision side: QFormer, token generator, projector)."""
    if not per_module:
        return [trained]
    ids = {id(p) for p in model.llm.parameters()}
    groups = [[p for p in trained if id(p) in ids], [p for p in trained if id(p) not in ids]]
    return [g for g in groups if g]


@dataclass
class TrainResult:
    output: str
    model_dir: str
    steps: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trained_parameters: int = 0


STATE_FILE = "trainer_state.json"


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` (its trainer_state.json is written last)."""
    found = []
    for d in output.glob("checkpoint-*"):
        try:
            found.append((int(d.name.split("-")[-1]), d))
        except ValueError:
            continue
    for _, d in sorted(found, reverse=True):
        if (d / STATE_FILE).is_file():
            return d
    return None


def train(cfg: TrainConfig, *, on_log: Callable[[dict], None] | None = None) -> TrainResult:
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from ..model.export import save_checkpoint
    from ..model.loading import load_model

    t0 = time.perf_counter()
    stage = get_stage(cfg.stage)
    output = Path(cfg.output)
    if output.exists() and not output.is_dir():
        raise InputError("already exists and is not a folder; the run directory must be a folder (new, or an "
                         "earlier run of this command, which is resumed)", where=output)
    use_cuda = (cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    bf16 = use_cuda if cfg.bf16 is None else cfg.bf16
    global_batch = cfg.batch_size or stage.batch_size
    accelerator = Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        cpu=not use_cuda,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    per_step = cfg.micro_batch_size * accelerator.num_processes
    accum = max(1, math.ceil(global_batch / per_step))
    accelerator.gradient_accumulation_steps = accum
    set_seed(cfg.seed)

    model = load_model(cfg.model, vision_tower=cfg.vision_tower, qformer_tokenizer=cfg.qformer_tokenizer,
                       device=accelerator.device, dtype="float32")
    samples = load_samples(cfg.data, cfg.media_root)
    store = FeatureStore(cfg.feature_cache or output / "features", model.vision_encoder, fps=cfg.fps)
    media = sorted({s.media for s in samples if s.media is not None})
    store.prepare(media[accelerator.process_index :: accelerator.num_processes])
    accelerator.wait_for_everyone()
    store.prepare(media)  # everything is encoded now: this only checks and maps paths

    trained = apply_freezing(model, stage)
    if not trained:
        raise InputError(f"stage {stage.number}: nothing to train")
    model.train()
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else use_cuda:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.qformer.gradient_checkpointing = True
    module = TrainingModule(model, max_tokens=cfg.max_tokens or stage.max_tokens, long_video=cfg.long_video)
    params = [p for p in module.parameters() if p.requires_grad]
    clip_groups = clip_groups_of(model, params, cfg.clip_per_module)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate or stage.learning_rate, weight_decay=cfg.weight_decay)
    dataset = ConversationDataset(samples, store, max_frames=cfg.max_frames)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.micro_batch_size, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)

    step, epoch, batch_in_epoch, resumed_from = 0, 0, 0, 0
    ckpt = latest_checkpoint(output)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / STATE_FILE).read_text())
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        resumed_from = step
        if on_log and accelerator.is_main_process:
            on_log({"event": "resumed", "checkpoint": str(ckpt), "step": step})

    losses: list[float] = []
    window: list[float] = []
    log_path = output / "train_log.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    while step < total_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
        for items in batches:
            with accelerator.accumulate(module):
                loss = module(items)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    for group in clip_groups:
                        accelerator.clip_grad_norm_(group, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batch_in_epoch += 1
            window.append(float(loss.detach()))
            if not accelerator.sync_gradients:
                continue
            step += 1
            mean = float(torch.tensor(window).mean())
            losses.append(mean)
            window = []
            record = {"step": step, "epoch": epoch, "loss": round(mean, 5), "lr": scheduler.get_last_lr()[0],
                      "seconds": round(time.perf_counter() - t0, 2)}
            if accelerator.is_main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if on_log and (step % cfg.log_every == 0 or step == total_steps):
                    on_log(record)
            if step % cfg.save_steps == 0 or step == total_steps:
                _save(accelerator, module, output, step, epoch, batch_in_epoch, cfg, save_checkpoint)
            if step >= total_steps:
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            continue
        break

    accelerator.wait_for_everyone()
    model_dir = output / "model"
    if accelerator.is_main_process:
        final = latest_checkpoint(output)
        if final is not None and (final / "model").is_dir():
            if model_dir.exists():
                shutil.rmtree(model_dir)
            shutil.copytree(final / "model", model_dir)
        (output / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    accelerator.wait_for_everyone()
    return TrainResult(str(output), str(model_dir), step, resumed_from, losses, time.perf_counter() - t0, len(trained))


class _TiedWeightsNote(logging.Filter):
    """Drops accelerate's note that a shared tensor was saved once: the LLM's output head is tied to its
    embeddings (one tensor under two names), and tying restores it on load (the resume test checks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def _save(accelerator, module, output: Path, step: int, epoch: int, batch_in_epoch: int, cfg: TrainConfig,
          save_checkpoint) -> None:
    """Accelerate state + the published-layout model into checkpoint-N; the state file last marks it whole."""
    ckpt = output / f"checkpoint-{step}"
    note = _TiedWeightsNote()
    logging.getLogger("accelerate.utils.other").addFilter(note)
    try:
        accelerator.save_state(str(ckpt))
    finally:
        logging.getLogger("accelerate.utils.other").removeFilter(note)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(module).model
        model_dir = ckpt / "model"
        vision_file = _vision_file(model)
        embed = cfg.embed_vision or vision_file is None
        save_checkpoint(model, model_dir, fmt=cfg.save_format, embed_vision=embed,
                        extra_config={} if embed else {"mm_vision_tower": VISION_TOWER_NAME})
        if not embed:
            _link_or_copy(vision_file, model_dir / VISION_TOWER_NAME)
        write_text_atomic(ckpt / STATE_FILE,
                          json.dumps({"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}))
        old = sorted((int(d.name.split("-")[-1]), d) for d in output.glob("checkpoint-*")
                     if d.name.split("-")[-1].isdigit())
        for _, d in old[: max(0, len(old) - cfg.save_total_limit)]:
            shutil.rmtree(d, ignore_errors=True)
    accelerator.wait_for_everyone()


def _vision_file(model) -> Path | None:
    """The eva_vit_g.pth the model's frozen encoder came from (None: it came embedded in the checkpoint)."""
    if model.vision_encoder is None:
        return None
    path = Path(model.vision_encoder.weights.description)
    return path if path.is_file() else None


def _link_or_copy(source: Path, dest: Path) -> None:
    """The trained model carries its frozen vision encoder beside it, so the folder works wherever it is
    moved: a hard link (no space) where the file system allows, else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
