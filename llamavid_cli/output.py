"""Terminal conventions shared by all commands.

Machine output (JSON, JSONL, answers) goes to stdout; messages, warnings and progress go to stderr.
Progress bars appear only when stderr is a terminal, so pipelines stay quiet.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def message(text: str) -> None:
    """A progress or status line for humans (stderr)."""
    stderr.print(text, markup=False)


def warn(text: str) -> None:
    stderr.print(f"llamavid: warning: {text}", markup=False, style="yellow")


def print_json(record: Any) -> None:
    """One JSON record on one stdout line, flushed at once (for pipes and `jq`)."""
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "frames") -> Iterator[Any]:
    """A rich progress bar with rate and ETA on a terminal; a silent stand-in when stderr is piped."""
    if not is_terminal(sys.stderr):
        yield _SilentProgress()
        return
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")
        yield _RichProgress(progress, task, unit)


class _SilentProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **kw: Any) -> None:
        pass


class _RichProgress:
    def __init__(self, progress, task, unit: str):
        self.progress, self.task, self.unit = progress, task, unit

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)
        speed = self.progress.tasks[self.task].speed
        if speed:
            self.progress.update(self.task, rate=f"{speed:.1f} {self.unit}/s")

    def update(self, **kw: Any) -> None:
        self.progress.update(self.task, **kw)
