"""Questions over videos, images and .vidtok files: ``ask``, ``ChatSession``, ``summarize`` and batches.

The CLI's ask / chat / summarize commands only parse arguments and print; everything they do is here.
A video is encoded once into a ``.vidtok`` kept in the user cache under its content hash (plus the
encoder and frame rate), so the next question about the same file starts at once.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import numpy as np

from . import fileio
from . import subtitles as subs
from . import video
from .checkpoint import user_cache_dir
from .decoding import SamplingOptions
from .encode import EncodeOptions, encode_file
from .errors import ContextOverflowError, InputError, LlamaVidError
from .model import Answer, LlamaVid
from .vidtok import Vidtok, content_hash, open_vidtok

# Published generation defaults: the chat CLI, and the movie (long-video) script.
CHAT_SAMPLING = SamplingOptions(max_new_tokens=512, temperature=0.2, top_p=0.7)
MOVIE_SAMPLING = SamplingOptions(max_new_tokens=1024, temperature=0.6, top_p=0.9)

SUMMARY_QUESTIONS = {
    "brief": "Summarize the video in two or three sentences.",
    "detailed": "Describe the video in detail: what happens, who appears, and in what order.",
}
SEGMENT_QUESTION = "Describe what happens in this part of the video."
MERGE_INSTRUCTION = ("Here are descriptions of consecutive parts of one video, in order:\n{parts}\n"
                     "Write one {style} summary of the whole video.")


def default_sampling(model: LlamaVid, long_video: bool | None = None) -> SamplingOptions:
    long_video = model.config.long_video if long_video is None else long_video
    return MOVIE_SAMPLING if long_video else CHAT_SAMPLING


# ---------------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class VideoInput:
    """A video ready for questions: its token file, the frames used, and their subtitle text."""

    source: str
    tokens: Vidtok
    frame_indices: list[int] | None  # None: every frame of the token file
    timestamps: np.ndarray
    subtitle_lines: list[tuple[float, float, str]]
    encoded: bool = False  # encoded now (not found in the cache)
    _tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    def frame_subtitles(self) -> list[str]:
        return subs.attach_to_frames([subs.SubtitleLine(*line) for line in self.subtitle_lines], list(self.timestamps))

    def subset(self, indices: Sequence[int]) -> "VideoInput":
        """The same video restricted to some of its selected frames (for segment-wise work)."""
        base = self.frame_indices if self.frame_indices is not None else list(range(len(self.tokens)))
        picked = [base[i] for i in indices]
        return VideoInput(self.source, self.tokens, picked, self.timestamps[list(indices)], self.subtitle_lines)

    def close(self) -> None:
        self.tokens.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> "VideoInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def uniform_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total // 2]
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, count)})


def cache_path_for(source_hash: str, encoder_fingerprint: str, fps: float) -> Path:
    """Where the token file of a video lives in the user cache."""
    key = f"{source_hash.split(':')[-1][:24]}-{encoder_fingerprint.split(':')[-1][:12]}-fps{fps:g}"
    return user_cache_dir() / "vidtok" / f"{key}.vidtok"


def open_video_input(
    model: LlamaVid,
    source: str | os.PathLike,
    *,
    fps: float = 1.0,
    subtitles: str | os.PathLike | None = None,
    max_frames: int | None = None,
    cache: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> VideoInput:
    """A video, image or .vidtok, ready for this model's questions (encoding a video if needed)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames {max_frames}: must be at least 1")
    tmpdir = None
    encoded = False
    if path.suffix == ".vidtok":
        tokens = open_vidtok(path)
        tokens.check_encoder(model.vision_identity()["fingerprint"])
    else:
        if path.is_dir():
            raise InputError(f"{source}: is a directory")
        identity = model.vision_identity()
        if cache:
            out = cache_path_for(content_hash(path), identity["fingerprint"], fps)
            out.parent.mkdir(parents=True, exist_ok=True)
        else:
            tmpdir = tempfile.TemporaryDirectory(prefix="llamavid-")
            out = Path(tmpdir.name) / (path.stem + ".vidtok")
        result = encode_file(model.vision_encoder, path, out, EncodeOptions(fps=fps, subtitles=subtitles),
                             on_progress=on_progress, on_warning=on_warning)
        encoded = result.status != "skipped"
        tokens = open_vidtok(out)
    lines = list(tokens.subtitles)
    if subtitles is not None and path.suffix == ".vidtok":
        lines = [(l.start, l.end, l.text) for l in subs.load_srt(subtitles)]
    indices = uniform_indices(len(tokens), max_frames) if max_frames else None
    stamps = np.asarray(tokens.timestamps)
    stamps = stamps[indices] if indices is not None else stamps
    return VideoInput(str(source), tokens, indices, stamps, lines, encoded=encoded, _tmpdir=tmpdir)


def check_fits(model: LlamaVid, question: str, n_frames: int, *, long_video: bool | None = None,
               max_new_tokens: int = 0, source: str = "") -> None:
    """Refuse early (before encoding or the QFormer) when the frames cannot fit the context."""
    subs_text = [""] * n_frames if (model.config.long_video if long_video is None else long_video) else None
    need = model.prompt_length(question, n_frames=n_frames, long_video=long_video, frame_subtitles=subs_text)
    if need + 1 > model.context_length:
        per = model.tokens_per_frame
        fit = max(1, (model.context_length - (need - n_frames * per) - max(1, min(max_new_tokens, 256))) // per)
        where = f"{source}: " if source else ""
        raise ContextOverflowError(
            f"{where}{n_frames} frames x {per} tokens + the question need {need} tokens but the model's context holds "
            f"{model.context_length}; use --max-frames {fit} (or a lower --fps)"
        )


def planned_frames(source: str | os.PathLike, fps: float) -> int | None:
    """How many frames encoding a video would give (None for a .vidtok: it is already known)."""
    path = Path(source)
    if path.suffix == ".vidtok" or not path.is_file():
        return None
    return len(video.sample_times(video.probe(path), fps))


# ---------------------------------------------------------------------------------------------------------
# ask


@dataclass
class AskResult:
    """One answered question: the record ``llamavid ask --json`` prints."""

    input: str
    question: str
    answer: str
    model: str
    frames: int
    prompt_tokens: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def answer_on(model: LlamaVid, vin: VideoInput, question: str, *, long_video: bool | None = None,
              sampling: SamplingOptions | None = None, stream: Callable[[str], None] | None = None,
              history: Sequence[tuple[str, str]] = (), template: str | None = None) -> Answer:
    long_video = model.config.long_video if long_video is None else long_video
    sampling = sampling or default_sampling(model, long_video)
    check_fits(model, question, vin.num_frames, long_video=long_video, max_new_tokens=sampling.max_new_tokens,
               source=vin.source)
    return model.answer(vin.tokens, question, frame_subtitles=vin.frame_subtitles() if long_video else None,
                        history=history, long_video=long_video, template=template, sampling=sampling,
                        stream=stream, frame_indices=vin.frame_indices)


def ask(
    model: LlamaVid,
    source: str | os.PathLike,
    question: str,
    *,
    fps: float = 1.0,
    subtitles: str | os.PathLike | None = None,
    max_frames: int | None = None,
    long_video: bool | None = None,
    sampling: SamplingOptions | None = None,
    stream: Callable[[str], None] | None = None,
    cache: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> AskResult:
    """Answer one question about a video, image or .vidtok file."""
    t0 = time.perf_counter()
    if not question or not question.strip():
        raise InputError("the question is empty")
    planned = planned_frames(source, fps)
    if planned is not None and max_frames is None:
        check_fits(model, question, planned, long_video=long_video, source=str(source),
                   max_new_tokens=(sampling or default_sampling(model, long_video)).max_new_tokens)
    with open_video_input(model, source, fps=fps, subtitles=subtitles, max_frames=max_frames, cache=cache,
                          on_progress=on_progress, on_warning=on_warning) as vin:
        ans = answer_on(model, vin, question, long_video=long_video, sampling=sampling, stream=stream)
        return AskResult(str(source), question, ans.text, model.name, vin.num_frames, ans.prompt_tokens,
                         round(time.perf_counter() - t0, 3))


# ---------------------------------------------------------------------------------------------------------
# chat


class ChatSession:
    """A multi-turn conversation about one video.

    Each turn recomputes the context tokens with that turn's question and puts them into the latest
    user turn; earlier turns stay as text, as the published CLI does.
    """

    def __init__(self, model: LlamaVid, vin: VideoInput, *, long_video: bool | None = None,
                 sampling: SamplingOptions | None = None, template: str | None = None):
        self.model = model
        self.video = vin
        self.long_video = model.config.long_video if long_video is None else long_video
        self.sampling = sampling or default_sampling(model, self.long_video)
        self.template = template
        self.history: list[tuple[str, str]] = []

    def ask(self, question: str, stream: Callable[[str], None] | None = None) -> Answer:
        if not question.strip():
            raise InputError("the question is empty")
        ans = answer_on(self.model, self.video, question, long_video=self.long_video, sampling=self.sampling,
                        stream=stream, history=self.history, template=self.template)
        self.history.append((question, ans.text))
        return ans

    def reset(self) -> None:
        self.history.clear()

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model.name, "input": self.video.source, "frames": self.video.num_frames,
                "turns": [{"question": q, "answer": a} for q, a in self.history]}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        write_atomic(path, json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n")
        return path


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing (see fileio.write_text_atomic); the folder must already exist."""
    if not path.parent.exists():
        raise InputError(f"{path.parent}: no such directory")
    fileio.write_text_atomic(path, text)


# ---------------------------------------------------------------------------------------------------------
# summarize


@dataclass
class Segment:
    start: float
    end: float
    frames: int
    summary: str


@dataclass
class Summary:
    input: str
    style: str
    summary: str
    model: str
    frames: int
    segments: list[Segment]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def summarize(model: LlamaVid, vin: VideoInput, *, style: str = "brief", long_video: bool | None = None,
              sampling: SamplingOptions | None = None, stream: Callable[[str], None] | None = None,
              on_segment: Callable[[Segment], None] | None = None) -> Summary:
    """A summary of the whole video; when it is too long for the context, segment by segment, then the
    segment summaries are merged (repeatedly, if even they do not fit)."""
    t0 = time.perf_counter()
    if style not in SUMMARY_QUESTIONS:
        raise InputError(f"--style {style}: expected one of {', '.join(SUMMARY_QUESTIONS)}")
    long_video = model.config.long_video if long_video is None else long_video
    sampling = sampling or default_sampling(model, long_video)
    question = SUMMARY_QUESTIONS[style]
    n = vin.num_frames
    per = model.tokens_per_frame
    overhead = model.prompt_length(SEGMENT_QUESTION, n_frames=0, long_video=long_video,
                                   frame_subtitles=[] if long_video else None)
    reserve = min(sampling.max_new_tokens, 512)
    if model.prompt_length(question, n_frames=n, long_video=long_video,
                           frame_subtitles=[""] * n if long_video else None) + reserve <= model.context_length:
        ans = answer_on(model, vin, question, long_video=long_video, sampling=sampling, stream=stream)
        seg = Segment(float(vin.timestamps[0]), float(vin.timestamps[-1]), n, ans.text)
        return Summary(vin.source, style, ans.text, model.name, n, [seg], round(time.perf_counter() - t0, 3))
    fit = (model.context_length - overhead - reserve) // per
    if fit < 1:
        raise ContextOverflowError(f"{vin.source}: the context ({model.context_length}) cannot hold even one frame and a summary")
    count = math.ceil(n / fit)
    bounds = np.linspace(0, n, count + 1).round().astype(int)
    segments = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = vin.subset(range(int(a), int(b)))
        ans = answer_on(model, part, SEGMENT_QUESTION, long_video=long_video, sampling=sampling)
        seg = Segment(float(part.timestamps[0]), float(part.timestamps[-1]), int(b - a), ans.text)
        segments.append(seg)
        if on_segment:
            on_segment(seg)
    texts = [f"[{fmt_time(s.start)}-{fmt_time(s.end)}] {s.summary}" for s in segments]
    final = _merge(model, texts, style, sampling, stream)
    return Summary(vin.source, style, final, model.name, n, segments, round(time.perf_counter() - t0, 3))


def _merge(model: LlamaVid, texts: list[str], style: str, sampling: SamplingOptions,
           stream: Callable[[str], None] | None) -> str:
    """Merge part descriptions with text-only prompts, in groups that fit the context.

    Each part is first cut to at most half of the room the instruction leaves, so every group holds at
    least two parts and each round shrinks the list: the merge always ends, however small the context.
    """
    reserve = min(sampling.max_new_tokens, 512)
    room = model.context_length - reserve - model.text_prompt_length(MERGE_INSTRUCTION.format(parts="", style=style))
    per_part = room // 2 - 2  # "\n" joins and tokenizer boundary effects
    if per_part < 4:
        raise ContextOverflowError(
            f"the model's context ({model.context_length}) leaves no room to merge segment summaries; "
            "lower --max-new-tokens")
    while True:
        texts = [_trim_tokens(model, t, per_part) for t in texts]
        groups: list[list[str]] = [[]]
        for text in texts:
            trial = groups[-1] + [text]
            prompt = MERGE_INSTRUCTION.format(parts="\n".join(trial), style=style)
            if groups[-1] and model.text_prompt_length(prompt) + reserve > model.context_length:
                groups.append([text])
            else:
                groups[-1] = trial
        if len(groups) == 1:
            prompt = MERGE_INSTRUCTION.format(parts="\n".join(groups[0]), style=style)
            return model.answer_text(prompt, sampling=sampling, stream=stream).text
        if len(groups) >= len(texts):
            raise ContextOverflowError("the segment summaries are too long to merge within the model's context")
        texts = [model.answer_text(MERGE_INSTRUCTION.format(parts="\n".join(g), style=style), sampling=sampling).text
                 for g in groups]


def _trim_tokens(model: LlamaVid, text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` LLM tokens (a long part description must not block the merge)."""
    ids = model.text_tokenizer.encode(text)
    return text if len(ids) <= limit else model.text_tokenizer.decode(ids[:limit])


# ---------------------------------------------------------------------------------------------------------
# batches

BATCH_OPTIONS = {"temperature", "top_p", "max_new_tokens", "seed", "fps", "max_frames", "subtitles", "long"}


@dataclass
class BatchItem:
    """One line of a questions file (or one video of a folder)."""

    id: str
    video: str | None = None
    question: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def read_batch(lines: Iterable[str], *, base_dir: Path | None = None, source: str = "questions") -> list[BatchItem]:
    """Parse JSONL questions: {"id"?, "video", "question", options...}. Bad lines become items with an
    error (reported in the output), never exceptions: one bad line must not sink the batch."""
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fallback = f"line-{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            items.append(BatchItem(fallback, error=f"{source}:{number}: not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            items.append(BatchItem(fallback, error=f"{source}:{number}: expected a JSON object"))
            continue
        item_id = str(record.get("id", fallback))
        if item_id in seen:
            items.append(BatchItem(f"{item_id}#dup{number}", error=f"{source}:{number}: duplicate id {item_id!r}"))
            continue
        seen.add(item_id)
        missing = [k for k in ("video", "question") if not isinstance(record.get(k), str) or not record.get(k).strip()]
        unknown = sorted(set(record) - {"id", "video", "question"} - BATCH_OPTIONS)
        if missing or unknown:
            what = f"missing {', '.join(missing)}" if missing else f"unknown option(s) {', '.join(unknown)}"
            items.append(BatchItem(item_id, record.get("video"), record.get("question"), error=f"{source}:{number}: {what}"))
            continue
        video_path = record["video"]
        if base_dir is not None and not os.path.isabs(video_path):
            video_path = str(base_dir / video_path)
        options = {k: v for k, v in record.items() if k in BATCH_OPTIONS}
        items.append(BatchItem(item_id, video_path, record["question"], options))
    return items


def read_done(path: Path) -> dict[str, dict]:
    """Records already in an output file, by id (a torn last line from a kill is ignored)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                done[str(record["id"])] = record
    return done


class BatchWriter:
    """Writes records durably as they finish (append + fsync), then in input order at the end.

    With a file, a rerun resumes: ids that already have an answer are skipped, failed ones are retried,
    and no id is ever written twice in the final file. To a stream, records are printed in input order
    as soon as every earlier one is done.
    """

    def __init__(self, order: list[str], out: Path | TextIO):
        self.order = order
        self.position = {item_id: i for i, item_id in enumerate(order)}
        self.records: dict[str, dict] = {}
        self.path = out if isinstance(out, Path) else None
        self.stream = None if isinstance(out, Path) else out
        self._next = 0
        self._file = None
        if self.path is not None:
            self.records = {k: v for k, v in read_done(self.path).items() if "answer" in v and k in self.position}
            if not self.path.parent.exists():
                raise InputError(f"{self.path.parent}: no such directory")
            try:
                self._file = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{self.path}: cannot write ({exc.strerror})") from None
            if _ends_torn(self.path):  # killed mid-line: start the next record on a line of its own
                self._file.write("\n")

    def done(self, item_id: str) -> bool:
        return item_id in self.records

    def write(self, record: dict) -> None:
        item_id = str(record["id"])
        self.records[item_id] = record
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        else:
            while self._next < len(self.order) and self.order[self._next] in self.records:
                self.stream.write(json.dumps(self.records[self.order[self._next]], ensure_ascii=False) + "\n")
                self.stream.flush()
                self._next += 1

    def close(self) -> None:
        """Rewrite the file in input order, one record per id (atomically)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        lines = [json.dumps(self.records[i], ensure_ascii=False) + "\n" for i in self.order if i in self.records]
        write_atomic(self.path, "".join(lines))


def _ends_torn(path: Path) -> bool:
    """The file is non-empty and its last byte is not a newline."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _sampling_for(options: dict, base: SamplingOptions) -> SamplingOptions:
    return SamplingOptions(
        max_new_tokens=int(options.get("max_new_tokens", base.max_new_tokens)),
        temperature=float(options.get("temperature", base.temperature)),
        top_p=float(options.get("top_p", base.top_p)),
        seed=options.get("seed", base.seed),
    )


def run_batch(
    model: LlamaVid,
    items: list[BatchItem],
    writer: BatchWriter,
    *,
    defaults: dict[str, Any] | None = None,
    sampling: SamplingOptions | None = None,
    cache: bool = True,
    questions_per_batch: int = 8,
    on_item: Callable[[dict], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Answer a list of questions, grouped by video so that each token file is opened once and the
    questions on one video go through the QFormer and the LLM together. Returns counts."""
    defaults = defaults or {}
    counts = {"answered": 0, "failed": 0, "skipped": 0}

    def emit(record: dict) -> None:
        writer.write(record)
        counts["failed" if "error" in record else "answered"] += 1
        if on_item:
            on_item(record)

    groups: dict[tuple, list[BatchItem]] = {}
    for item in items:
        if writer.done(item.id):
            counts["skipped"] += 1
            continue
        if item.error:
            emit({"id": item.id, "error": item.error})
            continue
        opts = {**defaults, **item.options}
        key = (item.video, float(opts.get("fps", 1.0)), opts.get("subtitles"), opts.get("max_frames"), opts.get("long"))
        groups.setdefault(key, []).append(item)
    total = sum(len(g) for g in groups.values())
    finished = 0
    for (video_path, fps, subtitle_path, max_frames, long_flag), group in groups.items():
        try:
            vin = open_video_input(model, video_path, fps=fps, subtitles=subtitle_path, max_frames=max_frames, cache=cache)
        except LlamaVidError as exc:
            for item in group:
                emit({"id": item.id, "video": item.video, "question": item.question, "error": str(exc)})
            finished += len(group)
            if on_progress:
                on_progress(finished, total)
            continue
        with vin:
            long_video = model.config.long_video if long_flag is None else bool(long_flag)
            base = sampling or default_sampling(model, long_video)
            by_sampling: dict[tuple, list[BatchItem]] = {}
            for item in group:
                s = _sampling_for({**defaults, **item.options}, base)
                by_sampling.setdefault((s.max_new_tokens, s.temperature, s.top_p, s.seed), []).append(item)
            for (max_new, temp, top_p, seed), same in by_sampling.items():
                opts = SamplingOptions(max_new_tokens=max_new, temperature=temp, top_p=top_p, seed=seed)
                for start in range(0, len(same), questions_per_batch):
                    chunk = same[start : start + questions_per_batch]
                    for record in _answer_chunk(model, vin, chunk, long_video, opts):
                        emit(record)
                    finished += len(chunk)
                    if on_progress:
                        on_progress(finished, total)
    return counts


def _answer_chunk(model: LlamaVid, vin: VideoInput, chunk: list[BatchItem], long_video: bool,
                  opts: SamplingOptions) -> list[dict]:
    """Answer questions on one video together; if that fails, one by one so only the bad one fails."""
    t0 = time.perf_counter()
    try:
        for item in chunk:
            check_fits(model, item.question, vin.num_frames, long_video=long_video, max_new_tokens=opts.max_new_tokens,
                       source=vin.source)
        answers = model.answer_batch(vin.tokens, [i.question for i in chunk],
                                     frame_subtitles=vin.frame_subtitles() if long_video else None,
                                     long_video=long_video, sampling=opts, frame_indices=vin.frame_indices)
    except LlamaVidError as exc:
        if len(chunk) == 1:
            return [{"id": chunk[0].id, "video": chunk[0].video, "question": chunk[0].question, "error": str(exc)}]
        return [r for item in chunk for r in _answer_chunk(model, vin, [item], long_video, opts)]
    seconds = round((time.perf_counter() - t0) / len(chunk), 3)
    return [{"id": item.id, "video": item.video, "question": item.question, "answer": a.text, "model": model.name,
             "frames": a.frames, "prompt_tokens": a.prompt_tokens, "seconds": seconds}
            for item, a in zip(chunk, answers)]
