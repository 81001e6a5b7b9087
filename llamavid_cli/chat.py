"""`llamavid chat`: a conversation about a video, on a terminal or through a pipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .common import ask_options, load
from .main import app
from .output import Reporter, is_terminal, message, write_out


@app.command()
def chat(
    input: Annotated[str, typer.Argument(help="A video, image or .vidtok file.")],
    model: opt.Model = None,
    temperature: opt.Temperature = None,
    top_p: opt.TopP = None,
    max_new_tokens: opt.MaxNewTokens = None,
    seed: opt.Seed = None,
    fps: opt.Fps = 1.0,
    max_frames: opt.MaxFrames = None,
    subtitles: opt.Subtitles = None,
    long: opt.Long = None,
    strict_context: opt.StrictContext = False,
    no_cache: opt.NoCache = False,
    start: opt.Start = None,
    end: opt.End = None,
    evidence: opt.Evidence = False,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    quantize: opt.Quantize = None,
    vision_tower: opt.VisionTower = None,
    qformer_tokenizer: opt.QFormerTokenizer = None,
) -> None:
    """Talk about a video. On a terminal: line editing and history; piped: one question a line in, one
    answer a line out (with --evidence, each answer line is followed by an 'evidence: ...' line).
    /reset, /save FILE.json and /quit work in both."""
    from llamavid.chat import ChatSession
    from llamavid.inputs import open_input

    options = ask_options(fps=fps, max_frames=max_frames, long=long, strict_context=strict_context, subtitles=subtitles,
                          temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                          no_cache=no_cache, start=start, end=end, evidence=evidence)
    m = load(model, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer, device=device, dtype=dtype,
             quantize=quantize)
    with Reporter(f"encoding {Path(input).name}") as reporter:
        vin = open_input(m, input, options, callbacks=reporter.callbacks())
    with vin:
        session = ChatSession(m, vin, options, callbacks=reporter.callbacks())
        if is_terminal(sys.stdin) and is_terminal(sys.stdout):
            _interactive(session)
        else:
            _piped(session)


def _command(session, line: str) -> str | None:
    """Carry out a slash command; returns "quit" to end the chat, None otherwise (or when not a command)."""
    from llamavid.chat import parse_command
    from llamavid.errors import LlamaVidError

    try:
        command = parse_command(line)
    except LlamaVidError as exc:
        message(f"llamavid: {exc}")
        return "handled"
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
            message(f"llamavid: error: {exc}")
    else:
        from llamavid.chat import COMMANDS_HELP

        message(f"llamavid: {COMMANDS_HELP}")
    return "handled"


def _piped(session) -> None:
    """One question a line in, one answer a line out (an empty line for a failed question); commands work."""
    from llamavid.errors import LlamaVidError

    for line in sys.stdin:
        question = line.strip()
        if not question:
            continue
        done = _command(session, question)
        if done == "quit":
            return
        if done is not None:
            continue
        try:
            answer = session.ask(question)
        except LlamaVidError as exc:
            message(f"llamavid: error: {exc}")
            write_out("\n")
            continue
        write_out(" ".join(answer.text.splitlines()) + "\n")  # one line per answer, whatever it holds
        _write_evidence(answer)


def _write_evidence(answer) -> None:
    """The evidence line after an answer, when the chat was started with --evidence."""
    if answer.evidence is not None:
        from llamavid.evidence import format_ranges

        write_out(f"evidence: {format_ranges(answer.evidence)}\n")


def _interactive(session) -> None:
    from llamavid.chat import COMMANDS_HELP
    from llamavid.errors import LlamaVidError

    _enable_line_editing()
    message(f"llamavid: chatting about {session.video.source} ({session.video.num_frames} frames). {COMMANDS_HELP}")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write_out("\n")
            return
        if not line:
            continue
        done = _command(session, line)
        if done == "quit":
            return
        if done is not None:
            continue
        write_out("assistant> ")
        try:
            answer = session.ask(line, stream=write_out)
        except KeyboardInterrupt:
            message("\nllamavid: answer interrupted")
            continue
        except LlamaVidError as exc:
            message(f"llamavid: error: {exc}")
            continue
        write_out("\n")
        _write_evidence(answer)


def _enable_line_editing() -> None:
    """readline gives arrow keys and history (kept in the user cache between sessions)."""
    try:
        import atexit
        import readline

        from llamavid.checkpoint import user_cache_dir

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
