"""`llamavid chat`: a conversation about a video, on a terminal or through a pipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llamavid.core.options import AskOptions

from . import options as opt
from .output import Reporter, error_text, is_terminal, message, write_evidence, write_out


@opt.with_groups(opt.MODEL, opt.QUESTION.without("choices"))
def chat(
    input: Annotated[str, typer.Argument(help="A video, image or .vidtok file.")],
    *,
    model: opt.ModelChoice,
    options: AskOptions,
) -> None:
    """Talk about a video. On a terminal: line editing and history; piped: one question a line in, one
    answer a line out (with --evidence, each answer line is followed by an 'evidence: ...' line).
    /reset, /save FILE.json and /quit work in both."""
    from llamavid.pipeline.prepare import check_source
    from llamavid.tasks.chat import open_chat

    check_source(input)  # a missing, empty or unreadable input is refused before the model loads
    m = model.load()
    # the video is prepared now and encoded (if it is not cached) by the first question that can be answered
    with Reporter(f"encoding {Path(input).name}") as reporter, \
            open_chat(m, input, options, callbacks=reporter.callbacks()) as session:
        interactive = is_terminal(sys.stdin) and is_terminal(sys.stdout)
        if interactive:
            from llamavid.tasks.chat import COMMANDS_HELP

            _enable_line_editing()
            message(f"llamavid: chatting about {session.source} ({session.num_frames} frames). {COMMANDS_HELP}")
        _converse(session, _prompted_lines() if interactive else sys.stdin, interactive=interactive, reporter=reporter)


def _prompted_lines():
    """Lines typed at the ``you>`` prompt, until Ctrl-D or Ctrl-C."""
    while True:
        try:
            yield input("you> ")
        except (EOFError, KeyboardInterrupt):
            write_out("\n")
            return


def _converse(session, lines, *, interactive: bool, reporter: Reporter) -> None:
    """Questions in, answers out; slash commands are carried out, never sent to the model.

    On a terminal the answer streams after ``assistant>``; piped, each answer is one line (an empty line
    for a question that failed), so answers and questions stay paired line by line.
    """
    from llamavid.core.errors import LlamaVidError

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        done = _command(session, line)
        if done == "quit":
            return
        if done is not None:
            continue
        if interactive:
            write_out("assistant> ")
        def stream(piece: str) -> None:
            reporter.close()  # an encoding bar ends before the answer's text
            write_out(piece)

        try:
            answer = session.ask(line, stream=stream if interactive else None)
            reporter.close()
        except KeyboardInterrupt:
            message("\nllamavid: answer interrupted")
            continue
        except LlamaVidError as exc:
            message(f"llamavid: error: {error_text(exc)}")
            if not interactive:
                write_out("\n")
            continue
        write_out("\n" if interactive else " ".join(answer.text.splitlines()) + "\n")
        write_evidence(answer.evidence)


def _command(session, line: str) -> str | None:
    """Carry out a slash command: "quit" ends the chat, "done" means it was a command; None: not a command."""
    from llamavid.core.errors import LlamaVidError
    from llamavid.tasks.chat import COMMANDS_HELP, parse_command

    try:
        command = parse_command(line)
    except LlamaVidError as exc:
        message(f"llamavid: {error_text(exc)}")
        return "done"
    if command is None:
        return None
    if command.name == "quit":
        return "quit"
    if command.name == "reset":
        session.reset()
        message("llamavid: conversation reset")
    elif command.name == "save":
        try:
            message(f"llamavid: saved {session.save(command.argument)}")
        except (LlamaVidError, OSError) as exc:
            message(f"llamavid: error: {error_text(exc)}")
    else:
        message(f"llamavid: {COMMANDS_HELP}")
    return "done"


def _enable_line_editing() -> None:
    """readline gives arrow keys and history (kept in the user cache between sessions)."""
    try:
        import atexit
        import readline

        from llamavid.model.checkpoint import user_cache_dir

        history = user_cache_dir() / "chat_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(1000)
        atexit.register(lambda: _save_history(readline, history))
    except ImportError:  # Windows without pyreadline: plain input() still works
        pass


def _save_history(readline, path) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass
