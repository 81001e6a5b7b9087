"""``ChatSession``: a multi-turn conversation about one video.

Each turn is planned like any question (its own context tokens, computed with that turn's question, go
into the latest user turn), before the video is encoded when it is not yet; earlier turns stay as text,
as the published CLI does. The session's slash
commands (/reset, /save FILE, /quit) are parsed here too, so every front end treats them alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core import fileio
from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError
from ..core.fileio import Closing
from ..core.options import AskOptions
from ..model.generation import Answer
from ..pipeline.inputs import VideoInput
from ..pipeline.materialize import materialized, timeline_held
from ..pipeline.planning import plan_question
from ..pipeline.prepare import Prepared, prepare
from .qa import Question, answer_questions

COMMANDS_HELP = "Commands: /reset (forget the conversation), /save FILE.json, /quit (or Ctrl-D)."


@dataclass(frozen=True)
class Command:
    """A slash command typed in a chat: ``name`` is "reset", "save", "quit" or "help"."""

    name: str
    argument: str = ""


def parse_command(line: str) -> Command | None:
    """``/save x.json`` -> Command("save", "x.json"); a line that is not a command -> None.

    Unknown commands are an ``InputError`` (so a typo is not sent to the model as a question).
    """
    text = line.strip()
    if not text.startswith("/"):
        return None
    word, _, argument = text.partition(" ")
    name = {"/quit": "quit", "/exit": "quit", "/reset": "reset", "/save": "save", "/help": "help"}.get(word)
    if name is None:
        raise InputError(f"unknown command {word}. {COMMANDS_HELP}")
    if name == "save" and not argument.strip():
        raise InputError("usage: /save FILE.json")
    return Command(name, argument.strip())


class ChatSession(Closing):
    """A conversation about one video: ``ask`` a turn, ``reset``, ``save`` the transcript.

    ``video``: a prepared input (``llamavid.pipeline.prepare``; its features are materialized by the first
    turn that can be answered, so a question that cannot is refused before any encoding) or a
    materialized one (``VideoInput``). The session closes what it materialized; ``open_chat`` prepares a
    path and hands the session the preparation too.
    """

    def __init__(self, model, video: Prepared | VideoInput, options: AskOptions | None = None, *,
                 callbacks: Callbacks = NO_CALLBACKS, **overrides: Any):
        self.model = model
        self.options = (options or AskOptions()).replace(**overrides)
        self.callbacks = callbacks
        self.history: list[tuple[str, str]] = []
        self._evidence: list[list | None] = []  # per turn, when the options ask for it
        self._timeline: Prepared | VideoInput = video
        self._vin: VideoInput | None = video if isinstance(video, VideoInput) else None
        self._owned: list[Closing] = []

    @property
    def source(self) -> str:
        return self._timeline.source

    @property
    def num_frames(self) -> int:
        return len(self._timeline.timestamps)

    def ask(self, question: str, stream: Callable[[str], None] | None = None) -> Answer:
        """One turn; the ``Answer`` carries ``evidence`` when the session's options ask for it."""
        q = Question(question, self.options, tuple(self.history))
        plan = plan_question(self.model, self._timeline, q.text, q.options, history=q.history)
        if self._vin is None:
            self._vin, _ = materialized(self.model, self._timeline, callbacks=self.callbacks)
            self._owned.append(self._vin)
            if not timeline_held(self._timeline, self._vin):
                plan = None  # frames failed to decode: plan again on what was encoded
            self._timeline = self._vin
        [result] = answer_questions(self.model, self._vin, [q], plans=[plan],
                                    on_text=None if stream is None else (lambda _i, piece: stream(piece)),
                                    callbacks=self.callbacks)
        if result.error is not None:
            raise result.error
        self.history.append((question, result.answer.text))
        self._evidence.append(result.answer.evidence)
        return result.answer

    def reset(self) -> None:
        self.history.clear()
        self._evidence.clear()

    def to_json(self) -> dict[str, Any]:
        turns = []
        for (q, a), evidence in zip(self.history, self._evidence):
            turns.append({"question": q, "answer": a} if evidence is None else
                         {"question": q, "answer": a, "evidence": [r.to_json() for r in evidence]})
        return {"model": self.model.name, "input": self.source, "frames": self.num_frames, "turns": turns}

    def save(self, path: str | os.PathLike) -> Path:
        """The transcript as JSON, written atomically (the folder must exist; the input is never replaced)."""
        path = Path(path)
        if fileio.same_file(path, self.source):
            raise InputError("is the video this chat is about; save to another file", where=path)
        if path.exists() and not _is_saved_chat(path):
            raise InputError("already exists and is not a saved chat; choose another file name", where=path)
        fileio.write_text_atomic(path, json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n")
        return path

    def close(self) -> None:
        for thing in reversed(self._owned):
            thing.close()
        self._owned.clear()


def open_chat(model, source: str | os.PathLike, options: AskOptions | None = None, *,
              callbacks: Callbacks = NO_CALLBACKS, **overrides: Any) -> ChatSession:
    """A chat about a video, image or .vidtok: prepared now, its features materialized by the first turn."""
    options = (options or AskOptions()).replace(**overrides)
    ready = prepare(model, source, options, callbacks=callbacks)
    session = ChatSession(model, ready, options, callbacks=callbacks)
    session._owned.append(ready)
    return session


def _is_saved_chat(path: Path) -> bool:
    """An earlier /save's file (which a new /save may replace), not something else of the user's."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and set(record) == {"model", "input", "frames", "turns"}
