"""Benchmark files in their published formats, read into one common item type.

Why one item type: prediction, judging and scoring should not care which dataset an item came from. Each
loader knows one published file layout (checked against the LLaMA-VID / Video-ChatGPT evaluation scripts
where those exist) and turns it into ``EvalItem``s with stable, unique ids, because ids are what make a
prediction run resumable and a judged file joinable with its predictions.

Every malformed file raises ``InputError`` naming the file and the item index (JSON list) or line (JSONL).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

from llamavid.core.errors import InputError

ItemKind = Literal["open", "generative", "consistency", "choice", "exact"]

#: Extensions tried, in this order, when a benchmark names a video without one.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".avi", ".mov", ".webm")

#: The instruction appended to every multiple-choice question (LLaVA's wording for option questions).
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class EvalItem:
    """One question about one video, whatever benchmark it came from.

    ``question`` is exactly what the model is asked: for multiple-choice items it already lists the options
    and the answer instruction (the bare question is kept in ``extra["raw_question"]``). ``answer`` is the
    ground truth (an option letter for choice items; ``None`` where a benchmark hides its answers).
    ``video`` is a path when the loader was given a video directory, otherwise the name from the file.
    For ``consistency`` items the second question is ``extra["question2"]``.
    """

    id: str
    video: str
    question: str
    answer: str | None
    kind: ItemKind
    options: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkSpec:
    """What the registry knows about one benchmark: how to read it and how it is scored."""

    name: str
    title: str
    kind: ItemKind
    files: str
    min_files: int
    max_files: int
    loader: Callable[[list[Path], Path | None], list[EvalItem]]
    judge_dimensions: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------
# Reading JSON / JSONL with positions for error messages


@dataclass(frozen=True)
class _Record:
    """A JSON object from a benchmark file and where it was (for one-line error messages)."""

    where: str
    data: dict[str, Any]


def _fail(path: Path, where: str | None, problem: str) -> InputError:
    place = f"{os.fspath(path)}: {where}: " if where else f"{os.fspath(path)}: "
    return InputError(place + problem)


def _read_json_value(path: Path) -> tuple[Any, bool]:
    """The parsed file and whether it was JSONL (one value per line) rather than one JSON document."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(path, None, "file not found") from None
    except IsADirectoryError:
        raise _fail(path, None, "is a directory, expected a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, None, f"cannot read ({exc})") from None
    if not text.strip():
        raise _fail(path, None, "file is empty")
    try:
        return json.loads(text), False
    except json.JSONDecodeError as whole_error:
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if len(numbered) < 2 or not _parses(numbered[0][1]):
            # One JSON document, broken: report where the parser gave up.
            raise _fail(path, f"line {whole_error.lineno}", f"not valid JSON ({whole_error.msg})") from None
        values: list[tuple[int, Any]] = []
        for number, line in numbered:
            try:
                values.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise _fail(path, f"line {number}", f"not valid JSON ({exc.msg})") from None
        return values, True


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _read_records(path: Path) -> list[_Record]:
    """The objects of a JSON list or a JSONL file, each with its position."""
    value, is_jsonl = _read_json_value(path)
    if is_jsonl:
        pairs = [(f"line {number}", data) for number, data in value]
    elif isinstance(value, list):
        pairs = [(f"item {index}", data) for index, data in enumerate(value)]
    elif isinstance(value, dict):
        # A JSONL file of one line reads as a single JSON document.
        pairs = [("line 1", value)]
    else:
        raise _fail(path, None, "expected a JSON list of objects (or JSON lines)")
    records = []
    for where, data in pairs:
        if not isinstance(data, dict):
            raise _fail(path, where, f"expected an object, got {type(data).__name__}")
        records.append(_Record(where, data))
    return records


@overload
def _text(path: Path, record: _Record, *names: str) -> str: ...
@overload
def _text(path: Path, record: _Record, *names: str, required: Literal[True]) -> str: ...
@overload
def _text(path: Path, record: _Record, *names: str, required: bool) -> str | None: ...


def _text(path: Path, record: _Record, *names: str, required: bool = True) -> str | None:
    """The first of ``names`` present in the record, as text (numbers are accepted: ids often are)."""
    for name in names:
        value = record.data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _fail(path, record.where, f"field {name!r} should be text, got {type(value).__name__}")
        return str(value)
    if required:
        wanted = " or ".join(repr(n) for n in names)
        raise _fail(path, record.where, f"missing field {wanted}")
    return None


# ----------------------------------------------------------------------------------------------------
# Videos and ids


class _VideoResolver:
    """Finds a benchmark's video file in ``video_dir``, remembering answers (one video has many questions)."""

    def __init__(self, video_dir: Path | None, prefixes: Sequence[str] = ("",)):
        self.video_dir = video_dir
        self.prefixes = tuple(prefixes)
        self._seen: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if self.video_dir is None:
            return name
        if name not in self._seen:
            self._seen[name] = self._find(name)
        return self._seen[name]

    def _find(self, name: str) -> str:
        assert self.video_dir is not None
        has_extension = os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
        for prefix in self.prefixes:
            base = os.path.join(self.video_dir, prefix + name)
            if has_extension and os.path.isfile(base):
                return base
            for ext in VIDEO_EXTENSIONS:
                if os.path.isfile(base + ext):
                    return base + ext
        # Not there: keep a path that says what was expected; answer_fn will fail on it and the item is
        # recorded as an error (see missing_videos() to check before a long run).
        return os.path.join(self.video_dir, self.prefixes[0] + name)


class _UniqueIds:
    """Makes ids unique: the first use keeps its id, later duplicates get ``_1``, ``_2``...

    Published files repeat ids (the published judge scripts patch them the same way), and resuming a run
    needs one id per item.
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, wanted: str) -> str:
        candidate, n = wanted, 0
        while candidate in self._used:
            n += 1
            candidate = f"{wanted}_{n}"
        self._used.add(candidate)
        return candidate


class _PerVideoIds:
    """Ids ``<video>_<k>`` with k counting each video's questions from 0, as the published scripts key them."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._unique = _UniqueIds()

    def __call__(self, video: str) -> str:
        k = self._counts.get(video, 0)
        self._counts[video] = k + 1
        return self._unique(f"{video}_{k}")


def missing_videos(items: Iterable[EvalItem]) -> list[EvalItem]:
    """Items whose video file does not exist, so a long run can be stopped before it starts."""
    found: dict[str, bool] = {}
    missing = []
    for item in items:
        if item.video not in found:
            found[item.video] = os.path.isfile(item.video)
        if not found[item.video]:
            missing.append(item)
    return missing


# ----------------------------------------------------------------------------------------------------
# Open-ended QA: MSVD-QA, MSRVTT-QA, ActivityNet-QA


def _load_msvd_style(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """MSVD-QA / MSRVTT-QA ``test_qa.json``: [{"video_id" | "video_name", "question", "answer", "id"}]."""
    (path,) = paths
    videos, unique, by_video = _VideoResolver(video_dir), _UniqueIds(), _PerVideoIds()
    items = []
    for record in _read_records(path):
        video = _text(path, record, "video_id", "video_name", "video")
        raw_id = _text(path, record, "id", "question_id", required=False)
        items.append(
            EvalItem(
                id=unique(raw_id) if raw_id is not None else by_video(video),
                video=videos(video),
                question=_text(path, record, "question"),
                answer=_text(path, record, "answer"),
                kind="open",
                extra={"video_name": video},
            )
        )
    return items


def _activitynet_paths(paths: list[Path]) -> tuple[Path, Path]:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0] / "test_q.json", paths[0] / "test_a.json"
    if len(paths) != 2:
        raise InputError("activitynet-qa needs two files, test_q.json and test_a.json (or their directory), got "
                         f"{len(paths)}")
    return paths[0], paths[1]


def _load_activitynet(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """ActivityNet-QA ``test_q.json`` [{"video_name","question_id","question"}] + ``test_a.json``.

    The answers file is [{"answer","type","question_id"}]. The published script pairs them by position;
    we pair by ``question_id`` (same result on the published files, right even if one file is reordered)
    and fall back to position only when the answers carry no ids. Videos are ``v_<video_name>.<ext>``.
    """
    q_path, a_path = _activitynet_paths(paths)
    questions = _read_records(q_path)
    answers = _read_records(a_path)
    by_id: dict[str, _Record] = {}
    for record in answers:
        qid = _text(a_path, record, "question_id", required=False)
        if qid is not None:
            by_id.setdefault(qid, record)
    positional = not by_id
    if positional and len(answers) != len(questions):
        raise _fail(a_path, None, f"{len(answers)} answers for {len(questions)} questions in {os.fspath(q_path)}")
    videos = _VideoResolver(video_dir, prefixes=("v_", ""))
    unique = _UniqueIds()
    items = []
    for index, record in enumerate(questions):
        video = _text(q_path, record, "video_name", "video_id")
        qid = _text(q_path, record, "question_id")
        answer_record = answers[index] if positional else by_id.get(qid)
        if answer_record is None:
            raise _fail(a_path, None, f"no answer for question_id {qid!r} ({record.where} of {os.fspath(q_path)})")
        extra: dict[str, Any] = {"video_name": video}
        if "type" in answer_record.data:
            extra["type"] = answer_record.data["type"]
        items.append(
            EvalItem(
                id=unique(qid),
                video=videos(video),
                question=_text(q_path, record, "question"),
                answer=_text(a_path, answer_record, "answer"),
                kind="open",
                extra=extra,
            )
        )
    return items


# ----------------------------------------------------------------------------------------------------
# Video-ChatGPT generative benchmark


def _load_videochatgpt_qa(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """``generic_qa.json`` / ``temporal_qa.json``: [{"video_name", "Q", "A"}]; ids ``<video_name>_<k>``."""
    return _load_videochatgpt(paths, video_dir, consistency=False)


def _load_videochatgpt_consistency(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """``consistency_qa.json``: [{"video_name", "Q1", "Q2", "A"}]; both questions share the answer."""
    return _load_videochatgpt(paths, video_dir, consistency=True)


def _load_videochatgpt(paths: list[Path], video_dir: Path | None, *, consistency: bool) -> list[EvalItem]:
    (path,) = paths
    videos, ids = _VideoResolver(video_dir), _PerVideoIds()
    items = []
    for record in _read_records(path):
        video = _text(path, record, "video_name")
        extra = {"video_name": video}
        if consistency:
            extra["question2"] = _text(path, record, "Q2")
        items.append(
            EvalItem(
                id=ids(video),
                video=videos(video),
                question=_text(path, record, "Q1" if consistency else "Q"),
                answer=_text(path, record, "A"),
                kind="consistency" if consistency else "generative",
                extra=extra,
            )
        )
    return items


# ----------------------------------------------------------------------------------------------------
# Multiple choice: Video-MME, EgoSchema, MVBench

_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[.):：]\s*")


def format_choice_question(question: str, options: Sequence[str]) -> str:
    """The text a model is asked for a multiple-choice item.

    Layout (documented in docs/EVAL.md)::

        <question>
        (A) <option 1>
        (B) <option 2>
        Answer with the option's letter from the given choices directly.
    """
    lines = [question.strip()]
    lines += [f"({OPTION_LETTERS[i]}) {text}" for i, text in enumerate(options)]
    lines.append(CHOICE_INSTRUCTION)
    return "\n".join(lines)


def _strip_option_prefixes(path: Path, record: _Record, options: Sequence[Any]) -> list[str]:
    """Option texts without their "A. " labels, checking the labels run A, B, C... when present."""
    if not isinstance(options, list) or len(options) < 2 or len(options) > len(OPTION_LETTERS):
        raise _fail(path, record.where, "field 'options' should be a list of 2 to 26 options")
    texts = []
    for index, option in enumerate(options):
        if not isinstance(option, str):
            raise _fail(path, record.where, f"option {index} should be text")
        match = _OPTION_PREFIX.match(option)
        if match and match.group(1) == OPTION_LETTERS[index]:
            option = option[match.end():]
        texts.append(option.strip())
    return texts


def _choice_item(
    *, item_id: str, video: str, question: str, options: list[str], answer_index: int | None, extra: dict[str, Any]
) -> EvalItem:
    return EvalItem(
        id=item_id,
        video=video,
        question=format_choice_question(question, options),
        answer=None if answer_index is None else OPTION_LETTERS[answer_index],
        kind="choice",
        options=options,
        extra={"raw_question": question, **extra},
    )


def _letter_index(path: Path, record: _Record, answer: str, n_options: int) -> int:
    """The option index of an answer given as "B", "(B)" or "B. text"."""
    match = re.match(r"^\s*\(?([A-Za-z])\)?(?:$|[\s.):])", answer)
    if not match or OPTION_LETTERS.find(match.group(1).upper()) >= n_options:
        raise _fail(path, record.where,
                    f"answer {answer!r} is not one of the option letters A-{OPTION_LETTERS[n_options - 1]}")
    return OPTION_LETTERS.index(match.group(1).upper())


def _videomme_flat(path: Path, records: list[_Record]) -> list[tuple[_Record, dict[str, Any]]]:
    """Flat question records, expanding the nested release ({"videoID", "questions": [...]})."""
    flat = []
    for record in records:
        nested = record.data.get("questions")
        if isinstance(nested, list):
            parent = {k: v for k, v in record.data.items() if k != "questions"}
            for index, question in enumerate(nested):
                if not isinstance(question, dict):
                    raise _fail(path, f"{record.where} question {index}", "expected an object")
                flat.append((_Record(f"{record.where} question {index}", {**parent, **question}), parent))
        else:
            flat.append((record, {}))
    return flat


def _load_videomme(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """Video-MME JSON/JSONL: {"videoID" | "video", "question", "options": ["A. ..."], "answer": "A"}."""
    (path,) = paths
    videos, unique, by_video = _VideoResolver(video_dir), _UniqueIds(), _PerVideoIds()
    items = []
    for record, _parent in _videomme_flat(path, _read_records(path)):
        video = _text(path, record, "videoID", "video", "video_name", "video_id")
        options = _strip_option_prefixes(path, record, record.data.get("options"))
        answer = _text(path, record, "answer", required=False)
        raw_id = _text(path, record, "question_id", "id", required=False)
        extra = {k: record.data[k] for k in ("duration", "domain", "sub_category", "task_type") if k in record.data}
        items.append(
            _choice_item(
                item_id=unique(raw_id) if raw_id is not None else by_video(video),
                video=videos(video),
                question=_text(path, record, "question"),
                options=options,
                answer_index=None if answer is None else _letter_index(path, record, answer, len(options)),
                extra={"video_name": video, **extra},
            )
        )
    return items


def _egoschema_answers(path: Path) -> dict[str, int]:
    value, is_jsonl = _read_json_value(path)
    if is_jsonl or not isinstance(value, dict):
        raise _fail(path, None, "expected a JSON object {q_uid: answer index}")
    answers = {}
    for key, index in value.items():
        if isinstance(index, str) and index.strip().isdigit():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int):
            raise _fail(path, f"key {key!r}", f"answer should be an option index 0-4, got {index!r}")
        answers[str(key)] = index
    return answers


def _load_egoschema(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """EgoSchema ``questions.json`` [{"q_uid","question","option 0".."option 4"}] + optional answers.

    The answers file (``subset_answers.json``) maps q_uid -> option index. Questions without an answer
    (EgoSchema's full set is scored by its server) get ``answer=None`` and are counted, not scored.
    """
    q_path = paths[0]
    answers = _egoschema_answers(paths[1]) if len(paths) > 1 else {}
    videos, unique = _VideoResolver(video_dir), _UniqueIds()
    items = []
    for record in _read_records(q_path):
        q_uid = _text(q_path, record, "q_uid")
        options = []
        for k in range(len(OPTION_LETTERS)):
            text = _text(q_path, record, f"option {k}", required=False)
            if text is None:
                break
            options.append(text.strip())
        if len(options) < 2:
            raise _fail(q_path, record.where, "missing fields 'option 0', 'option 1', ...")
        index = answers.get(q_uid)
        if index is None and "answer" in record.data:
            index = record.data["answer"]
        if index is not None and not (isinstance(index, int) and 0 <= index < len(options)):
            where = os.fspath(paths[1]) if len(paths) > 1 else os.fspath(q_path)
            raise InputError(f"{where}: answer for {q_uid!r} is {index!r}, not an option index 0-{len(options) - 1}")
        items.append(
            _choice_item(
                item_id=unique(q_uid),
                video=videos(q_uid),
                question=_text(q_path, record, "question"),
                options=options,
                answer_index=index,
                extra={"video_name": q_uid},
            )
        )
    return items


def _load_mvbench(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """MVBench task files: [{"video", "question", "candidates": [...], "answer": "<candidate text>"}].

    Several task files may be given at once; ids are ``<file stem>_<index>`` and the stem is kept as
    ``extra["task"]``.
    """
    videos, unique = _VideoResolver(video_dir), _UniqueIds()
    items = []
    for path in paths:
        for index, record in enumerate(_read_records(path)):
            video = _text(path, record, "video")
            candidates = record.data.get("candidates")
            if (not isinstance(candidates, list) or len(candidates) < 2
                    or not all(isinstance(c, str) for c in candidates)):
                raise _fail(path, record.where, "field 'candidates' should be a list of at least 2 texts")
            if len(candidates) > len(OPTION_LETTERS):
                raise _fail(path, record.where, "too many candidates")
            answer = _text(path, record, "answer", required=False)
            answer_index = None
            if answer is not None:
                stripped = [c.strip() for c in candidates]
                if answer.strip() not in stripped:
                    raise _fail(path, record.where, f"answer {answer!r} is not one of the candidates")
                answer_index = stripped.index(answer.strip())
            extra = {k: record.data[k] for k in ("start", "end", "accurate_start", "accurate_end") if k in record.data}
            items.append(
                _choice_item(
                    item_id=unique(f"{path.stem}_{index}"),
                    video=videos(video),
                    question=_text(path, record, "question"),
                    options=[c.strip() for c in candidates],
                    answer_index=answer_index,
                    extra={"video_name": video, "task": path.stem, **extra},
                )
            )
    return items


# ----------------------------------------------------------------------------------------------------
# The llamavid synthetic set (LLaVA-style conversations)

_IMAGE_TOKEN = re.compile(r"<image>|<video>")


def _load_synthetic(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """[{"id", "video", "conversations": [{"from": "human", "value": "<image>\\n<q>"}, {"from": "gpt", ...}],
    "question_type", "answer"}]; ``answer`` falls back to the first gpt turn."""
    (path,) = paths
    videos, unique = _VideoResolver(video_dir), _UniqueIds()
    items = []
    for index, record in enumerate(_read_records(path)):
        turns = record.data.get("conversations")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise _fail(path, record.where, "field 'conversations' should be a list of {'from', 'value'} objects")
        human = next((t.get("value") for t in turns if t.get("from") == "human"), None)
        gpt = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
        if not isinstance(human, str):
            raise _fail(path, record.where, "no 'human' turn with a text 'value'")
        answer = _text(path, record, "answer", required=False)
        if answer is None:
            if not isinstance(gpt, str):
                raise _fail(path, record.where, "no 'answer' field and no 'gpt' turn")
            answer = gpt
        video = _text(path, record, "video")
        raw_id = _text(path, record, "id", required=False)
        items.append(
            EvalItem(
                id=unique(raw_id if raw_id is not None else str(index)),
                video=videos(video),
                question=_IMAGE_TOKEN.sub("", human).strip(),
                answer=answer,
                kind="exact",
                extra={"video_name": video,
                       "question_type": _text(path, record, "question_type", required=False) or "unknown"},
            )
        )
    return items


def _load_synthetic_mc(paths: list[Path], video_dir: Path | None) -> list[EvalItem]:
    """llamavid's multiple-choice synthetic set (``mc.json``, see ``llamavid.data.synthetic.choice_items``):
    [{"id", "video", "question", "options": [texts], "answer": "B", "question_type"}]."""
    (path,) = paths
    videos, unique = _VideoResolver(video_dir), _UniqueIds()
    items = []
    for index, record in enumerate(_read_records(path)):
        options = _strip_option_prefixes(path, record, record.data.get("options"))
        answer = _text(path, record, "answer", required=False)
        raw_id = _text(path, record, "id", required=False)
        video = _text(path, record, "video")
        items.append(_choice_item(
            item_id=unique(raw_id if raw_id is not None else str(index)), video=videos(video),
            question=_text(path, record, "question"), options=options,
            answer_index=None if answer is None else _letter_index(path, record, answer, len(options)),
            extra={"video_name": video,
                   "question_type": _text(path, record, "question_type", required=False) or "unknown"}))
    return items


# ----------------------------------------------------------------------------------------------------
# The registry

BENCHMARKS: Mapping[str, BenchmarkSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            BenchmarkSpec("msvd-qa", "MSVD-QA", "open", "test_qa.json", 1, 1, _load_msvd_style, ("qa",)),
            BenchmarkSpec("msrvtt-qa", "MSRVTT-QA", "open", "test_qa.json", 1, 1, _load_msvd_style, ("qa",)),
            BenchmarkSpec("activitynet-qa", "ActivityNet-QA", "open", "test_q.json test_a.json (or their directory)", 1,
                          2, _load_activitynet, ("qa",)),
            BenchmarkSpec(
                "videochatgpt-general",
                "Video-ChatGPT (correctness, detail, context)",
                "generative",
                "generic_qa.json",
                1,
                1,
                _load_videochatgpt_qa,
                ("correctness", "detail", "context"),
            ),
            BenchmarkSpec("videochatgpt-temporal", "Video-ChatGPT (temporal)", "generative", "temporal_qa.json", 1, 1,
                          _load_videochatgpt_qa, ("temporal",)),
            BenchmarkSpec("videochatgpt-consistency", "Video-ChatGPT (consistency)", "consistency",
                          "consistency_qa.json", 1, 1, _load_videochatgpt_consistency, ("consistency",)),
            BenchmarkSpec("videomme", "Video-MME", "choice", "a .json or .jsonl question file", 1, 1, _load_videomme),
            BenchmarkSpec("egoschema", "EgoSchema", "choice", "questions.json [subset_answers.json]", 1, 2,
                          _load_egoschema),
            BenchmarkSpec("mvbench", "MVBench", "choice", "one or more task .json files", 1, 64, _load_mvbench),
            BenchmarkSpec("synthetic", "llamavid synthetic", "exact", "a LLaVA-style .json list", 1, 1,
                          _load_synthetic),
            BenchmarkSpec("synthetic-mc", "llamavid synthetic (multiple choice)", "choice", "mc.json", 1, 1,
                          _load_synthetic_mc),
        )
    }
)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registry entry for ``name``; an ``InputError`` listing the known names otherwise."""
    spec = BENCHMARKS.get(name.strip().lower())
    if spec is None:
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return spec


def load_benchmark(
    kind_name: str,
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    video_dir: str | os.PathLike[str] | None = None,
) -> list[EvalItem]:
    """Read a benchmark's published files into ``EvalItem``s (see ``BENCHMARKS`` for names and files).

    ``video_dir``: where the videos are; each item's ``video`` becomes the file found there (trying
    ``VIDEO_EXTENSIONS``). Without it, ``video`` is the name from the benchmark file.
    """
    spec = get_benchmark(kind_name)
    if isinstance(paths, (str, os.PathLike)):
        path_list = [Path(paths)]
    else:
        path_list = [Path(p) for p in paths]
    if not spec.min_files <= len(path_list) <= spec.max_files:
        raise InputError(f"{spec.name} reads {spec.files}; got {len(path_list)} file(s)")
    for path in path_list:
        if not path.exists():
            raise InputError(f"{os.fspath(path)}: file not found")
    if video_dir is not None and not Path(video_dir).is_dir():
        raise InputError(f"{os.fspath(video_dir)}: video directory not found")
    items = spec.loader(path_list, Path(video_dir) if video_dir is not None else None)
    if not items:
        raise InputError(f"{', '.join(os.fspath(p) for p in path_list)}: no items")
    return items
