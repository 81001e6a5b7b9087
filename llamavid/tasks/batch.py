"""Many questions: JSONL question files, folders of videos, and the one batch answerer behind
``ask --batch``, ``ask FOLDER``, ``llamavid eval`` and the demo evaluation.

Every line is validated here, once (types, ranges, UTF-8), and a bad line becomes an error record
(``{"id", "error"}``) while the batch goes on. Questions are grouped by video so that each video is
opened (and, if needed, encoded) once and its questions go through the model together.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import JSON, InputError
from ..core.fileio import RecordSink
from ..core.options import BATCH_OPTION_FIELDS, AskOptions, OptionError, check_text, options_from_json
from ..pipeline.prepare import input_key
from .qa import QUESTIONS_PER_BATCH, AnswerRecord, Question, answer_about

BATCH_FIELDS = ("id", "video", "question", *BATCH_OPTION_FIELDS)


@dataclass
class BatchItem:
    """One question of a batch (a line of a questions file, or one video of a folder)."""

    id: str
    video: str | None = None
    question: str | None = None
    options: AskOptions = field(default_factory=AskOptions)
    error: str | None = None  # the line was bad: this is its error record's message


def read_batch(lines: Iterable[str | bytes], *, defaults: AskOptions, base_dir: Path | None = None,
               source: str = "questions") -> list[BatchItem]:
    """Parse JSONL questions: ``{"id"?, "video", "question", options...}``. Bad lines become items with
    an error (reported in the output), never exceptions: one bad line must not sink the batch."""
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        where = f"{source}:{number}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a file may start with a BOM
            except UnicodeDecodeError:
                items.append(BatchItem(f"line-{number}", error=f"{where}: not valid UTF-8 text"))
                continue
        elif number == 1:
            raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            items.append(BatchItem(f"line-{number}", error=f"{where}: not valid JSON ({exc.msg})"))
            continue
        item = _parse_record(record, number, where, seen, defaults, base_dir)
        items.append(item)
    return items


def _parse_record(record: Any, number: int, where: str, seen: set[str], defaults: AskOptions,
                  base_dir: Path | None) -> BatchItem:
    fallback = f"line-{number}"
    if not isinstance(record, dict):
        return BatchItem(fallback, error=f"{where}: expected a JSON object")
    raw_id = record.get("id", fallback)
    if (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))
            or (isinstance(raw_id, str) and not raw_id.strip())):
        return BatchItem(fallback, error=f"{where}: \"id\" must be a non-empty string or a whole number")
    item_id = str(raw_id)
    if item_id in seen:
        return BatchItem(f"{item_id}#dup{number}", error=f"{where}: duplicate id {item_id!r}")
    seen.add(item_id)
    video, question = record.get("video"), record.get("question")
    shown_video, shown_question = _shown(video), _shown(question)
    missing = [k for k in ("video", "question") if not isinstance(record.get(k), str) or not record[k].strip()]
    unknown = sorted(set(record) - set(BATCH_FIELDS))
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown field(s) {', '.join(unknown)}"
        return BatchItem(item_id, shown_video, shown_question, error=f"{where}: {what}")
    try:
        check_text(question)
        check_text(video, "the video path")
        options = options_from_json(record, defaults, base_dir=base_dir)
    except OptionError as exc:
        return BatchItem(item_id, video, question, error=f"{where}: {exc.render(JSON)}")
    except InputError as exc:
        return BatchItem(item_id, shown_video, shown_question, error=f"{where}: {exc.render(JSON)}")
    if base_dir is not None and not os.path.isabs(video):
        video = str(base_dir / video)
    return BatchItem(item_id, video, question, options)


def _shown(value: Any) -> str | None:
    """A line's text as its error record may repeat it: strings only, undecodable characters escaped."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def folder_items(videos: Sequence[str | os.PathLike], question: str, defaults: AskOptions) -> list[BatchItem]:
    """One item per video, the same question (``llamavid ask FOLDER "q"``); ids are the paths."""
    check_text(question)
    return [BatchItem(str(v), str(v), question, defaults) for v in videos]


@dataclass
class BatchCounts:
    answered: int = 0
    failed: int = 0
    skipped: int = 0


def run_batch(model, items: Sequence[BatchItem], sink: RecordSink, *, callbacks: Callbacks = NO_CALLBACKS,
              questions_per_batch: int = QUESTIONS_PER_BATCH) -> BatchCounts:
    """Answer the items into ``sink`` (records in input order there); ids the sink already holds are skipped.

    Answer records: ``{"id", "video", "question", "answer", "model", "frames", "prompt_tokens", "seconds"}``
    (and ``evidence`` / ``choices`` when the line asks for them, see ``qa.answer_fields``);
    failures: ``{"id", "video", "question", "error"}`` (or ``{"id", "error"}`` for a line that was not
    a question at all). ``callbacks.progress`` counts finished items.
    """
    counts = BatchCounts()
    todo = [item for item in items if not sink.done(item.id)]
    counts.skipped = len(items) - len(todo)
    finished = 0

    def emit(record: dict[str, Any]) -> None:
        nonlocal finished
        sink.write(record)
        if "error" in record:
            counts.failed += 1
        else:
            counts.answered += 1
        finished += 1
        callbacks.advance(finished, len(todo))

    groups: dict[tuple, list[BatchItem]] = {}
    for item in todo:
        if item.error is not None:
            emit({"id": item.id, "error": item.error})
            continue
        groups.setdefault(input_key(item.video, item.options), []).append(item)
    quiet = Callbacks(warning=callbacks.warning)  # progress here counts items, not encoded frames
    for group in groups.values():
        outcomes = answer_about(model, group[0].video, [Question(i.question, i.options) for i in group],
                                callbacks=quiet, questions_per_batch=questions_per_batch)
        for item, outcome in zip(group, outcomes):
            head = {"id": item.id, "video": item.video}
            if outcome.ok:
                record = AnswerRecord.of(model, outcome, item.video).to_json()
                emit(head | {k: v for k, v in record.items() if k != "input"})
            else:
                emit(head | {"question": item.question, "error": outcome.error.render(JSON)})
    return counts


