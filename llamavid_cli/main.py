"""Entry point of the `llamavid` command: a thin Typer layer over the library.

Errors a user can cause are ``LlamaVidError``s: printed as one line on stderr, exit status 1, no
traceback unless ``--debug`` (anywhere on the command line) or LLAMAVID_DEBUG=1.
"""

from __future__ import annotations

import os
import sys

import typer

from llamavid import __version__

# modules of llamavid_cli, in --help order
COMMANDS = ("ask", "chat", "summarize", "search", "encode", "info", "serve", "train")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamavid {__version__}")
        raise typer.Exit()


def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug",
                               help="Show full tracebacks on errors (also accepted after the subcommand)."),
) -> None:
    """Video question answering with LLaMA-VID: every frame is two LLM tokens."""


def build_app() -> typer.Typer:
    """The command line: every command registered here, explicitly (each is a function of its module)."""
    import importlib

    from . import eval as eval_cli

    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        help="Video question answering with LLaMA-VID: every frame is two LLM tokens.",
    )
    app.callback()(root)
    for name in COMMANDS:
        app.command(name)(getattr(importlib.import_module(f".{name}", __package__), name))
    evals = typer.Typer(no_args_is_help=True, help=eval_cli.HELP)
    for name in eval_cli.COMMANDS:
        evals.command(name)(getattr(eval_cli, name))
    app.add_typer(evals, name="eval")
    return app


def _parser_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, other command-line errors, aborts) of click and of the copy newer Typer carries."""
    import click

    usage, errors, aborts = [click.UsageError], [click.ClickException], [click.Abort]
    try:
        from typer._click.exceptions import ClickException, UsageError
        from typer.exceptions import Abort
    except ImportError:  # older Typer: plain click only
        pass
    else:
        usage.append(UsageError)
        errors.append(ClickException)
        aborts.append(Abort)
    return tuple(usage), tuple(errors), tuple(aborts)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LLAMAVID_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    app = build_app()
    usage_errors, cli_errors, aborts = _parser_exceptions()
    try:
        code = app(args=argv, prog_name="llamavid", standalone_mode=False)
    except SystemExit:
        raise
    except usage_errors as exc:  # a mistyped command line: one line, like every other error
        if debug:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `llamavid` or `llamavid eval` alone: the help
            sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx else "")
            sys.exit(0)
        where = exc.ctx.command_path if exc.ctx is not None else "llamavid"
        sys.stderr.write(f"llamavid: error: {' '.join(exc.format_message().split())} (see {where} --help)\n")
        sys.exit(2)
    except cli_errors as exc:
        if debug:
            raise
        sys.stderr.write(f"llamavid: error: {' '.join(exc.format_message().split())}\n")
        sys.exit(exc.exit_code)
    except (*aborts, KeyboardInterrupt):
        if debug:
            raise
        sys.stderr.write("llamavid: interrupted\n")
        sys.exit(130)
    except OSError as exc:  # the system refused a file the command was given: a name too long, a full disk...
        if debug:
            raise
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
        sys.stderr.write(f"llamavid: error: {' '.join(f'{where}{exc.strerror or exc}'.split())}\n")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the one place every error is turned into a line
        from llamavid.core.errors import LlamaVidError

        if debug:
            raise
        if isinstance(exc, LlamaVidError):
            from .output import error_text

            sys.stderr.write(f"llamavid: error: {error_text(exc)}\n")
            sys.exit(exc.exit_code)
        text = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"llamavid: internal error: {type(exc).__name__}: {text} (run with --debug for the "
                         "traceback)\n")
        sys.exit(1)
    if code == 130:
        sys.stderr.write("llamavid: interrupted\n")
    if isinstance(code, int) and code:
        sys.exit(code)
