"""The code's own rules, checked with the tests (so CI keeps them): the layers' import contracts
(import-linter, pyproject.toml) and ruff's lint at the project's line length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_layers_import_only_downwards():
    importlinter = pytest.importorskip("importlinter.cli")
    assert importlinter.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_a_layer_reaching_up_breaks_the_contract(tmp_path, monkeypatch):
    """The contract is not vacuous: a model module importing the task layer is caught."""
    pytest.importorskip("importlinter.cli")
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "llamavid", copy / "llamavid", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copytree(ROOT / "llamavid_cli", copy / "llamavid_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    config = copy / "llamavid" / "model" / "config.py"
    config.write_text(config.read_text() + "\nfrom llamavid.tasks import qa  # noqa: E402,F401\n")
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
                          cwd=copy, env={"PYTHONPATH": str(copy), "PATH": ""}, capture_output=True, text=True)
    assert proc.returncode != 0 and "llamavid.model.config -> llamavid.tasks.qa" in proc.stdout, proc.stdout[-2000:]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_the_old_module_names_still_import_as_the_same_modules_with_a_warning():
    import importlib
    import warnings

    import llamavid

    for old, new in llamavid._MOVED.items():
        sys.modules.pop(f"llamavid.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"llamavid.{old}")
        assert module is importlib.import_module(f"llamavid.{new}"), old
        assert module.__spec__.name == f"llamavid.{new}"  # the real module keeps its own spec
        assert any(issubclass(w.category, DeprecationWarning) and f"llamavid.{new}" in str(w.message)
                   for w in caught), old
