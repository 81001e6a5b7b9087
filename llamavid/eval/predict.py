"""Running a model over benchmark items into a resumable JSONL file.

Why JSONL with one fsync'd line per item: evaluation runs take hours and get killed (preempted GPUs,
OOM, Ctrl-C). Each finished item is durable the moment its line is written, so a rerun skips every id
already in the file and redoes only the rest (``llamavid.core.fileio.ResumableJsonl``, the writer ``ask
--batch`` uses too). An item whose answer fails is recorded as ``{"id", "error"}`` and the run goes on:
one unreadable video must not cost the other 13,000 answers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llamavid.core.errors import InputError
from llamavid.core.fileio import ResumableJsonl
from llamavid.eval.benchmarks import EvalItem

AnswerFn = Callable[[EvalItem], str]
AnswerBatchFn = Callable[[list[EvalItem]], Sequence["str | BaseException"]]


@dataclass(frozen=True)
class Progress:
    """One finished item, for progress bars: ``done`` of ``total`` items still to do in this run."""

    done: int
    total: int
    item_id: str
    error: str | None = None


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class PredictionStats:
    """What a prediction run did. ``skipped`` items were already in the file from an earlier run."""

    total: int
    skipped: int
    written: int
    errors: int
    elapsed_s: float


# ----------------------------------------------------------------------------------------------------
# Prediction records


def queries(item: EvalItem) -> list[EvalItem]:
    """What the model must answer for one item: the item itself, or both questions of a consistency item.

    The second consistency question is the same item with ``question`` replaced, so ``answer_fn`` needs
    no special case.
    """
    if item.kind == "consistency":
        return [item, dataclasses.replace(item, question=str(item.extra.get("question2", "")))]
    return [item]


def prediction_record(item: EvalItem, answers: Sequence[str]) -> dict[str, Any]:
    """The JSONL line for an answered item (the fields scoring and judging read)."""
    record: dict[str, Any] = {
        "id": item.id,
        "video": item.video,
        "question": item.question,
        "answer": item.answer,
        "pred": answers[0],
        "kind": item.kind,
    }
    if item.kind == "consistency":
        record.update(question2=item.extra.get("question2"), pred1=answers[0], pred2=answers[1])
    if item.options is not None:
        record["options"] = item.options
    if "question_type" in item.extra:
        record["question_type"] = item.extra["question_type"]
    record["extra"] = item.extra
    return record


def error_record(item: EvalItem, exc: BaseException | str) -> dict[str, Any]:
    """The JSONL line for an item whose answer could not be produced; scoring counts these as errors."""
    message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return {"id": item.id, "video": item.video, "kind": item.kind, "error": " ".join(str(message).split())}


def _check_answers(answers: Sequence[Any], expected: int) -> str | None:
    """Why a model's answers are unusable, or None when they are fine."""
    if len(answers) != expected:
        return f"expected {expected} answers, got {len(answers)}"
    for answer in answers:
        if not isinstance(answer, str):
            return f"answer should be str, got {type(answer).__name__}"
    return None


def _answer_one(item: EvalItem, answer_fn: AnswerFn) -> dict[str, Any]:
    try:
        answers = [answer_fn(query) for query in queries(item)]
    except Exception as exc:  # noqa: BLE001 - any failure of the model on one item is recorded, not fatal
        return error_record(item, exc)
    problem = _check_answers(answers, len(queries(item)))
    return error_record(item, problem) if problem else prediction_record(item, answers)


def _answer_batch(batch: list[EvalItem], answer_batch_fn: AnswerBatchFn) -> list[dict[str, Any]]:
    """Records for a batch; ``answer_batch_fn`` returns one result per query: its answer, or the
    exception that stopped it (so one failing question fails only its own item)."""
    flat = [query for item in batch for query in queries(item)]
    try:
        answers = list(answer_batch_fn(flat))
    except Exception as exc:  # noqa: BLE001 - the whole batch failed: every item in it is an error
        return [error_record(item, exc) for item in batch]
    if len(answers) != len(flat):
        return [error_record(item, f"answer_batch_fn: expected {len(flat)} answers, got {len(answers)}")
                for item in batch]
    records, start = [], 0
    for item in batch:
        n = len(queries(item))
        mine = answers[start : start + n]
        start += n
        failed = next((a for a in mine if isinstance(a, BaseException)), None)
        problem = None if failed is not None else _check_answers(mine, n)
        records.append(error_record(item, failed) if failed is not None else
                       error_record(item, f"answer_batch_fn: {problem}") if problem else prediction_record(item, mine))
    return records


def group_by_video(items: Iterable[EvalItem], batch_size: int | None = None) -> list[list[EvalItem]]:
    """Batches of items sharing a video, in order of each video's first appearance.

    Items keep their input order inside a batch, so the output order equals the input order whenever a
    video's questions are contiguous in the input (true of every published benchmark file). A video with
    more than ``batch_size`` items is split into several batches.
    """
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.video, []).append(item)
    batches = []
    for group in groups.values():
        step = batch_size or len(group)
        batches += [group[i : i + step] for i in range(0, len(group), step)]
    return batches


def _check_unique_ids(items: Sequence[EvalItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"items: duplicate id {item.id!r} (resuming needs one id per item)")
        seen.add(item.id)


def run_predictions(
    items: Sequence[EvalItem],
    answer_fn: AnswerFn | None,
    out_path: str | os.PathLike[str],
    *,
    answer_batch_fn: AnswerBatchFn | None = None,
    batch_size: int | None = None,
    on_progress: ProgressFn | None = None,
) -> PredictionStats:
    """Answer every item not yet in ``out_path``, appending one JSONL line per item.

    Give either ``answer_fn(item) -> str`` or ``answer_batch_fn(items) -> list[str | exception]``; the
    batch form gets the items of one video at a time (at most ``batch_size``; see ``group_by_video`` for
    the order) so a model can encode each video once, and returns per query its answer or its error. Consistency items
    are asked twice (``queries``); in batch mode both
    questions travel in the same batch.

    Lines: ``{"id", "video", "question", "answer", "pred", "kind", ...}`` for answers, ``{"id", "video",
    "kind", "error"}`` for items whose answer failed. A rerun skips every id in the file (errors
    included: delete an error line to retry it); the file ends up in input order, one line per id. A file
    that is not an earlier output of these items is refused.
    """
    if (answer_fn is None) == (answer_batch_fn is None):
        raise ValueError("give exactly one of answer_fn and answer_batch_fn")
    started = time.monotonic()
    items = list(items)
    _check_unique_ids(items)
    out = ResumableJsonl(out_path, [item.id for item in items], retry_errors=False)
    pending = [item for item in items if not out.done(item.id)]
    skipped = len(items) - len(pending)
    written = errors = 0
    try:

        def emit(record: dict[str, Any]) -> None:
            nonlocal written, errors
            out.write(record)
            written += 1
            errors += "error" in record
            if on_progress is not None:
                on_progress(Progress(written, len(pending), record["id"], record.get("error")))

        if answer_fn is not None:
            for item in pending:
                emit(_answer_one(item, answer_fn))
        else:
            assert answer_batch_fn is not None
            for batch in group_by_video(pending, batch_size):
                for record in _answer_batch(batch, answer_batch_fn):
                    emit(record)
    finally:
        out.close()
    return PredictionStats(len(items), skipped, written, errors, time.monotonic() - started)
