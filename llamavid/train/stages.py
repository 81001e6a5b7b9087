"""What each stage of the published recipe trains, and its default hyperparameters (the seed's table)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    trainable: tuple[str, ...]  # prefixes of our parameter names (see checkpoint.KEY_MAP for the published ones)
    batch_size: int
    learning_rate: float
    max_tokens: int


PROJECTORS = ("tokens.query_projector.", "tokens.key_projector.", "tokens.value_projector.",
              "tokens.content_projector.")

STAGES: dict[int, Stage] = {
    1: Stage(1, "alignment", PROJECTORS, batch_size=256, learning_rate=1e-3, max_tokens=2048),
    2: Stage(2, "instruction", PROJECTORS + ("qformer.", "llm."), batch_size=128, learning_rate=2e-5, max_tokens=2048),
    3: Stage(3, "long video", PROJECTORS + ("llm.",), batch_size=8, learning_rate=2e-5, max_tokens=65536),
}


def get_stage(number: int) -> Stage:
    try:
        return STAGES[int(number)]
    except (KeyError, ValueError):
        from ..core.errors import InputError

        raise InputError(f"--stage {number}: expected 1, 2 or 3") from None


def apply_freezing(model: nn.Module, stage: Stage) -> list[str]:
    """requires_grad per the stage; returns the names of the trained parameters."""
    trained = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(stage.trainable))
        if param.requires_grad:
            trained.append(name)
    return trained
