"""Entry point of the `llamavid` command."""

from __future__ import annotations

import typer

from llamavid import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Video question answering with LLaMA-VID.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamavid {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Video question answering with LLaMA-VID."""


def main() -> None:
    app()
