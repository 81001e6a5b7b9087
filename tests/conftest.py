"""Shared fixtures: a tiny checkpoint in the published layout, built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Before torch is first imported (checkpoint_fixture below): OpenMP threads that wait for work sleep instead
# of spinning. On a machine shared with other jobs (2 cores, two test runs at once) spinning threads fight
# over the cores and made CPU-bound tests 2-3x slower; results are the same either way. Children started by
# tests inherit it. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
def _float32_cpu_default(monkeypatch):
    """In this process the suite runs as on a CPU without native bfloat16, whatever the machine: loading
    without a dtype gives float32 everywhere, as the numeric tests expect. The dtype rule itself is tested
    with injected probes (test_memory.py)."""
    import llamavid.model.memory

    monkeypatch.setattr(llamavid.model.memory, "cpu_bf16_support", lambda: None)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own llamavid cache directory (no test sees another's cached files)."""
    monkeypatch.setenv("LLAMAVID_CACHE", str(tmp_path / "llamavid-cache"))


# ---------------------------------------------------------------------------------------------------------
# Running the CLI: in this process (fast, patchable) or as a real process. Never a path into a virtualenv:
# the suite must pass wherever llamavid is installed.

LLAMAVID = [sys.executable, "-m", "llamavid_cli"]


def run_cli(capsys, *args, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """Run ``llamavid ARGS`` in this process: (exit status, stdout, stderr)."""
    import io

    from llamavid_cli.main import main

    capsys.readouterr()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args, **kwargs):
    """Run ``llamavid ARGS`` as its own process (``python -m llamavid_cli``): a CompletedProcess with text."""
    import subprocess

    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([*LLAMAVID, *[str(a) for a in args]], **kwargs)


def model_args(ckpt, max_new: int = 8) -> list[str]:
    """CLI options for a tiny checkpoint, answering greedily and briefly, in float32: tests compare greedy
    answers across batch sizes and processes, which a random tiny model keeps only in float32 (the default
    is bfloat16 on CPUs that compute it natively; tests of that rule live in test_memory.py)."""
    return ["--model", str(ckpt.path), "--vision-tower", str(ckpt.vision_path), "--temperature", "0",
            "--max-new-tokens", str(max_new), "--dtype", "float32"]
