"""Shared fixtures: a tiny checkpoint in the published layout, built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Tests never reach a hub: loading code must work from local files and caches alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from checkpoint_fixture import TinyCheckpoint, build_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyCheckpoint:
    """The default fixture: compress_type "mean", mlp2x_gelu projector, 2 shards, eva_vit_g.pth beside it."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny):
    import llamavid

    return llamavid.load_model(tiny.path, vision_tower=tiny.vision_path, device="cpu", dtype="float32")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own llamavid cache directory (no test sees another's cached files)."""
    monkeypatch.setenv("LLAMAVID_CACHE", str(tmp_path / "llamavid-cache"))
