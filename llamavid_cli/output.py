"""Terminal conventions shared by all commands.

Machine output (JSON, JSONL, answers) goes to stdout; messages, warnings and progress go to stderr.
Progress bars appear only when stderr is a terminal, so pipelines stay quiet.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


class _FlagStyle:
    """Library errors worded for the command line: options as flags (``--max-frames 12``)."""

    # options whose flag is not --name-with-dashes
    FLAGS = {"choices": "--choice", "cache": "--no-cache", "output": "-o", "frames_per_batch": "--frames-per-batch",
             "questions_per_batch": "--batch-size"}

    def flag(self, name: str) -> str:
        return self.FLAGS.get(name, "--" + name.replace("_", "-"))

    def option(self, opt) -> str:
        from llamavid.core.errors import shown

        if not opt.has_value:
            return self.flag(opt.name)
        value = opt.value if isinstance(opt.value, (str, int, float)) and not isinstance(opt.value, bool) else None
        text = str(value) if value is not None else shown(opt.value, as_json=True)
        if len(text) > 80:
            text = shown(opt.value, as_json=True)
        return f"{self.flag(opt.name)} {text}"

    def subject(self, opt) -> str:
        return self.option(opt) + ":"

    def where(self, where: str) -> str:
        return where


CLI = _FlagStyle()


def error_text(exc) -> str:
    """A library error as the command line says it (options as flags); other exceptions as they are."""
    from llamavid.core.errors import LlamaVidError

    return exc.render(CLI) if isinstance(exc, LlamaVidError) else " ".join(str(exc).split())


def message(text: str) -> None:
    """A progress or status line for humans (stderr)."""
    stderr.print(text, markup=False)


def warn(text: str) -> None:
    stderr.print(f"llamavid: warning: {text}", markup=False, style="yellow")


def print_json(record: Any) -> None:
    """One JSON record on one stdout line, flushed at once (for pipes and `jq`)."""
    from llamavid.core.fileio import dump_record

    sys.stdout.write(dump_record(record))  # valid UTF-8 whatever a file name holds
    sys.stdout.flush()


def print_result(record: dict, text: str, *, json_out: bool, streamed: bool) -> None:
    """A command's result on stdout: its JSON record, or its text (only a newline if it was streamed)."""
    if json_out:
        print_json(record)
    else:
        write_out("\n" if streamed else text + "\n")


def write_evidence(ranges) -> None:
    """The line ``evidence: 00:24-00:30 (0.82), ...`` after an answer that was asked for its evidence."""
    if ranges is not None:
        from llamavid.tasks.evidence import format_ranges

        write_out(f"evidence: {format_ranges(ranges)}\n")


def write_out(text: str) -> None:
    """Answer text on stdout, flushed (streamed answers arrive piece by piece)."""
    sys.stdout.write(text)
    sys.stdout.flush()


class Bar:
    """A progress bar started on first use (nothing is drawn for work that never reports progress)."""

    def __init__(self, description: str, unit: str = "frames"):
        self.description, self.unit = description, unit
        self._progress = None
        self._task = None
        self._done = 0

    def _start(self) -> None:
        if self._progress is not None or not is_terminal(sys.stderr):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=stderr, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=None, rate="")

    def update(self, **kw: Any) -> None:
        self._start()
        if self._progress is not None:
            self._progress.update(self._task, **kw)

    def advance(self, n: int = 1) -> None:
        self.set(self._done + n)

    def set(self, done: int, total: int | None = None) -> None:
        """Progress as (done, total) counts, as the library's callbacks report it."""
        self._start()
        self._done = done
        if self._progress is None:
            return
        kw: dict[str, Any] = {"completed": done}
        if total is not None:
            kw["total"] = total
        self._progress.update(self._task, **kw)
        speed = self._progress.tasks[0].speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:.1f} {self.unit}/s")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Reporter:
    """The library's callbacks for one command: a lazily started progress bar, status lines and warnings
    on stderr. The bar is closed before any other line is written, so lines never tear through it."""

    def __init__(self, description: str, unit: str = "frames", *, status: bool = True):
        self.bar = Bar(description, unit)
        self.show_status = status

    def callbacks(self):
        from llamavid.core.callbacks import Callbacks

        return Callbacks(progress=self.bar.set, warning=self.warning, status=self.status if self.show_status else None)

    def warning(self, text: str) -> None:
        self.bar.close()
        warn(text)

    def status(self, text: str) -> None:
        self.bar.close()
        message(f"llamavid: {text}")

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
