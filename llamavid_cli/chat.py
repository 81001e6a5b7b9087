"""`llamavid chat` and `llamavid summarize`: a conversation about a video, and its summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .ask import encode_progress
from .common import load, sampling_options
from .main import app
from .output import is_terminal, message, print_json, progress_bar, warn

CHAT_HELP = "Commands: /reset (forget the conversation), /save FILE.json, /quit (or Ctrl-D)."


def _open(m, input: str, fps: float, subtitles, max_frames, no_cache: bool):
    from llamavid import qa

    with progress_bar(f"encoding {Path(input).name}", None) as bar:
        return qa.open_video_input(m, input, fps=fps, subtitles=subtitles, max_frames=max_frames, cache=not no_cache,
                                   on_progress=encode_progress(bar), on_warning=warn)


@app.command()
def chat(
    input: str = typer.Argument(..., help="A video, image or .vidtok file."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint directory, Hugging Face id or built-in name."),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    fps: float = typer.Option(1.0, "--fps"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames"),
    subtitles: Optional[Path] = typer.Option(None, "--subtitles"),
    long: Optional[bool] = typer.Option(None, "--long/--short"),
    no_cache: bool = typer.Option(False, "--no-cache"),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower"),
) -> None:
    """Talk about a video. On a terminal: line editing and history; piped: one question a line in, one answer a line out."""
    from llamavid import qa
    from llamavid.errors import LlamaVidError

    m = load(model, vision_tower=str(vision_tower) if vision_tower else None, device=device, dtype=dtype)
    sampling = sampling_options(temperature, top_p, max_new_tokens, seed, qa.default_sampling(m, long))
    vin = _open(m, input, fps, subtitles, max_frames, no_cache)
    session = qa.ChatSession(m, vin, long_video=long, sampling=sampling)
    interactive = is_terminal(sys.stdin) and is_terminal(sys.stdout)
    with vin:
        if interactive:
            _interactive(session)
        else:
            for line in sys.stdin:
                question = line.strip()
                if not question:
                    continue
                try:
                    answer = session.ask(question)
                except LlamaVidError as exc:
                    message(f"llamavid: error: {exc}")
                    sys.stdout.write("\n")
                    continue
                sys.stdout.write(" ".join(answer.text.splitlines()) + "\n")  # one line per answer, whatever it holds
                sys.stdout.flush()


def _interactive(session) -> None:
    from llamavid.errors import LlamaVidError

    _enable_line_editing()
    message(f"llamavid: chatting about {session.video.source} ({session.video.num_frames} frames). {CHAT_HELP}")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/reset":
                session.reset()
                message("llamavid: conversation reset")
            elif command == "/save":
                if not arg.strip():
                    message("llamavid: usage: /save FILE.json")
                    continue
                try:
                    message(f"llamavid: saved {session.save(arg.strip())}")
                except (LlamaVidError, OSError) as exc:
                    message(f"llamavid: error: {exc}")
            else:
                message(f"llamavid: unknown command {command}. {CHAT_HELP}")
            continue
        sys.stdout.write("assistant> ")
        sys.stdout.flush()
        try:
            session.ask(line, stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        except KeyboardInterrupt:
            message("\nllamavid: answer interrupted")
            continue
        except LlamaVidError as exc:
            message(f"llamavid: error: {exc}")
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()


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


@app.command()
def summarize(
    input: str = typer.Argument(..., help="A video, image or .vidtok file."),
    style: str = typer.Option("brief", "--style", help="brief or detailed."),
    model: Optional[str] = typer.Option(None, "--model"),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    fps: float = typer.Option(1.0, "--fps"),
    subtitles: Optional[Path] = typer.Option(None, "--subtitles"),
    long: Optional[bool] = typer.Option(None, "--long/--short"),
    no_cache: bool = typer.Option(False, "--no-cache"),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower"),
    json_out: bool = typer.Option(False, "--json", help="Print {summary, segments: [{start, end, frames, summary}], ...}."),
) -> None:
    """Summarize a whole video; videos too long for the context are summarized segment by segment."""
    from llamavid import qa

    m = load(model, vision_tower=str(vision_tower) if vision_tower else None, device=device, dtype=dtype)
    sampling = sampling_options(temperature, top_p, max_new_tokens, seed, qa.default_sampling(m, long))
    vin = _open(m, input, fps, subtitles, None, no_cache)
    with vin:
        streaming = not json_out and is_terminal(sys.stdout)
        stream = (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if streaming else None
        on_segment = (lambda s: message(f"[{qa.fmt_time(s.start)}-{qa.fmt_time(s.end)}] {s.summary}")) if not json_out else None
        result = qa.summarize(m, vin, style=style, long_video=long, sampling=sampling, stream=stream, on_segment=on_segment)
        if json_out:
            print_json(result.to_json())
        elif streaming:
            sys.stdout.write("\n")
        else:
            sys.stdout.write(result.summary + "\n")
