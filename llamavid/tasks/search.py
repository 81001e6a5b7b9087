"""Search a library of videos: the moments, across every file, that a query is about.

    llamavid.search(model, ["lectures/"], "where the professor derives the Fourier transform")
      -> SearchResult: ranked Moments {video, start, end, score}

Two stages:

1. **Every stretch of every file, cheaply.** Each ``.vidtok`` has a search index (``llamavid.features.
   search_index``: its stretches of up to 10 s cut where the content changes, and a small summary of each),
   made once and kept beside it. Files are streamed one at a time (memory does not grow with the library):
   per stretch a *visual* score, the model's text-guided attention from the query to the stretch's summary
   (``relevance.token_scores``, the look-closer scorer, no LLM; as a log-mean-exp, so stretches of one or
   three runs compare), and a *text* score, how much of the query's words (IDF-weighted over the library's
   lines, stop words left out) the stretch's subtitle and transcript lines hold. Visual scores are
   standardised over the whole library (z = how far above the library's mean, in standard deviations; the
   same query's attention, so files compare) and mapped to (0, 1) by ``sigmoid(z - VISUAL_Z)``; the stretch's
   first-stage score is ``1 - (1 - text) (1 - visual)``: either kind of evidence alone can rank it first.
   The library's best ``BEST_RUNS`` (200) stretches by their summary are ranked again among themselves by their
   *best run* (each run's summary frame from the index as a picture of its own, the best one's score), keeping
   their visual scores: a summary puts up to three runs' frames side by side, pooled to a coarse grid, so a
   small shape blurs there and a purple column in one run and a red ring in the next read somewhat as a
   purple ring. **The best are looked at closer** (``SearchOptions.closer``, 50): each of the first stage's
   best stretches gets its visual score again, from its best stored frame at full resolution (z over those
   stretches) plus ``CLOSER_MIX`` times the z of its best run, the sum standardised again; they are ranked
   again among themselves (the best of up to ten stored frames is a maximum over noisy scores; with the best
   run they ranked best). The stored frames are read only for these few stretches, and best runs are scored in the
   first stage, while each file's index is at hand, only for the stretches that enter a running top 200
   (``_Library.runs_now``: about 200 ln(stretches / 200) of them), so the cost hardly grows with the library
   and no index is read twice (``STRETCH_SCORE`` "parts" scores the first stage by every stretch's best run:
   1.5-1.7x its cost).
2. **The model checks the best candidates** (``SearchOptions.candidates``): each is asked, through the usual
   path (``qa.answer_about`` with the moment as ``start``/``end``, ``choices`` yes/no), ``CHECK_PROMPT``; the
   check is the likelihood of "Yes" against "No", and the moment's score becomes ``(1 - g) first + g check``
   with ``g = w (1 - first)`` (``w``: ``rerank_weight``): the check decides in proportion to the first stage's
   doubt, so a moment whose lines say every word of the query keeps its place whatever a weak model's check
   says (on the demo model the check alone ranks the right moment of spoken queries near the bottom of its
   ten candidates: benchmarks/search.py). With ``answer``, the query is then asked as a question on each
   moment returned.

Files the search cannot use are named in a warning and skipped (a damaged or foreign ``.vidtok``, a video that
cannot be decoded); features of another vision encoder than the model's are refused before any work, since
they cannot be compared (nor read by this model).
"""

from __future__ import annotations

import heapq
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import InputError, LlamaVidError, VidtokError
from ..core.options import AskOptions, SearchOptions, check_text
from ..features.search_index import IndexSettings, index_for
from ..features.vidtok import Vidtok, looks_like_vidtok, open_vidtok
from ..media import video as media_video
from ..pipeline.inputs import open_input
from ..pipeline.planning import resolve_long_video
from .qa import AnswerRecord, Question, answer_about
from .relevance import token_scores

VISUAL_Z = 2.0  # a stretch this many standard deviations above the library's mean scores 0.5 by its picture
CHECK_PROMPT = "Does this part of the video show {query}? Answer yes or no."
CHECK_CHOICES = ("Yes", "No")
# what the first stage's text-guided attention reads: the query as typed. Inside ``CHECK_PROMPT`` (the question
# the check asks, which ``train --recipe checks`` grounds) it was no better on the tuning split's library, with
# the shipped demo model or the check recipe's, and slower (docs/RESULTS.md, "Check questions")
VISUAL_TEXT = "{query}"
SUMMARY_CHUNK = 256  # stretch summaries through the QFormer at a time
# how the first stage scores a stretch's summary: "whole", its runs' pooled frames side by side as one picture
# (a purple column in one run and a red ring in another then read somewhat as a purple ring), or "parts", each
# run's frame as a picture of its own and the stretch by the best of them ("best run"). "parts" ranked better
# on the tuning split but costs 1.5-1.7x the first stage (2.4 pictures a stretch), over the 5-s goal on ten
# hours here, so the best run enters at the closer look instead (docs/RESULTS.md, "The best run of a stretch")
STRETCH_SCORES = ("parts", "whole")
STRETCH_SCORE = "whole"
# the closer look's score: z(best stored frame) + CLOSER_MIX * z(best run), over the stretches it looks at and
# standardised again (0: the stored frames alone)
CLOSER_MIX = 0.5
# with "whole": the first stage's best BEST_RUNS stretches by their summary are ranked again among themselves by
# their best run, keeping their scores (``_Library.finish``): most of what "parts" gains, at a cost that does
# not grow with the library (0: off; docs/RESULTS.md, "Lures after the phrases")
BEST_RUNS = 200
STOP_WORDS = frozenset(
    "a an the is are was were be been being of in on at to for with and or by from as it its this that these "
    "those where when what which who whom whose how does do did show shows shown showing part parts moment "
    "video clip scene there here said say says saying".split())
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class LibraryFile:
    """One file of the library: where it is, and how results and messages name it."""

    path: Path
    label: str

    @property
    def is_vidtok(self) -> bool:
        return self.path.suffix.lower() == ".vidtok" or looks_like_vidtok(self.path)


@dataclass
class Moment:
    """A stretch of one video that the query is about: ``start``-``end`` seconds from the video's start."""

    video: str
    start: float
    end: float
    score: float  # the final score, in [0, 1]
    first: float  # the first stage's score
    check: float | None = None  # the model's check (the likelihood of yes), when it was checked
    answer: AnswerRecord | None = None
    file: LibraryFile | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"video": self.video, "start": round(self.start, 3), "end": round(self.end, 3),
                                  "score": round(self.score, 4)}
        if self.answer is not None:
            record["answer"] = self.answer.answer
        return record


@dataclass
class SearchResult:
    """The moments found, best first, and what the search did (files, stretches, skipped files, seconds)."""

    query: str
    moments: list[Moment]
    files: int  # files searched
    stretches: int  # stretches scored
    skipped: list[str] = field(default_factory=list)  # the warnings of files left out
    indexes: dict[str, int] = field(default_factory=dict)  # index use: used / built / rebuilt / unsaved
    seconds: dict[str, float] = field(default_factory=dict)  # first, rerank, answer

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "moments": [m.to_json() for m in self.moments], "files": self.files,
                "stretches": self.stretches, "skipped": list(self.skipped), "indexes": dict(self.indexes),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


# ---------------------------------------------------------------------------------------------------------
# the library


def library_files(inputs: Iterable[str | os.PathLike | LibraryFile]) -> list[LibraryFile]:
    """Files as given; folders searched recursively for ``.vidtok`` files and videos (hidden files left out; a
    video with its ``NAME.vidtok`` beside it is searched once, through the ``.vidtok``). A missing input or a
    folder with nothing to search is an ``InputError`` naming it."""
    out: list[LibraryFile] = []
    seen: set[str] = set()

    def add(item: LibraryFile) -> None:
        key = os.path.normcase(os.path.abspath(item.path))
        if key not in seen:
            seen.add(key)
            out.append(item)

    for item in inputs:
        if isinstance(item, LibraryFile):
            add(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and (p.suffix.lower() == ".vidtok" or media_video.is_video_path(p)))
            tokens = {p.with_suffix("") for p in found if p.suffix.lower() == ".vidtok"}
            found = [p for p in found if p.suffix.lower() == ".vidtok" or p.with_suffix("") not in tokens]
            if not found:
                raise InputError("holds no .vidtok files or videos to search", where=os.fspath(item))
            for p in found:
                add(LibraryFile(p, os.fspath(p)))
        elif path.exists():
            add(LibraryFile(path, os.fspath(item)))
        else:
            raise InputError("no such file or folder", where=os.fspath(item))
    if not out:
        raise InputError("nothing to search: give .vidtok files, videos or folders")
    return out


def check_encoders(model, files: Sequence[LibraryFile], *, callbacks: Callbacks = NO_CALLBACKS,
                   skipped: list[str] | None = None) -> list[LibraryFile]:
    """The files the search can use, before any work: every ``.vidtok``'s header is read (a damaged or foreign
    file is named in a warning, also added to ``skipped``, and left out). Features of another vision encoder
    than the model's cannot be compared with the others (nor read by this model): the search is refused,
    naming one such file."""
    fingerprint = model.vision_identity()["fingerprint"]
    usable: list[LibraryFile] = []
    foreign: list[tuple[LibraryFile, str]] = []
    for item in files:
        if not item.is_vidtok:
            usable.append(item)
            continue
        try:
            with open_vidtok(item.path) as vt:
                made_with = str(vt.encoder.get("fingerprint"))
        except LlamaVidError as exc:
            text = f"{item.label}: skipped: {_reason(exc, item)}"
            callbacks.warn(text)
            if skipped is not None:
                skipped.append(text)
            continue
        if made_with == fingerprint:
            usable.append(item)
        else:
            foreign.append((item, made_with))
    if foreign:
        (first, made_with), more = foreign[0], len(foreign) - 1
        others = f" (as are {more} more)" if more else ""
        raise VidtokError(f"made with vision encoder {made_with}{others}, the model with {fingerprint}: features of "
                          "two encoders cannot be searched together (their scores do not compare); encode the "
                          "videos again with this model", where=first.label)
    if not usable:
        raise InputError("nothing left to search: every file was skipped")
    return usable


def _reason(exc: LlamaVidError, item: LibraryFile) -> str:
    """An error's reason without the file it names (the message names the file once, by its label)."""
    text = exc.render()
    for name in (exc.where, os.fspath(item.path), item.label):
        if name and text.startswith(f"{name}: "):
            return text[len(name) + 2:]
    return text


# ---------------------------------------------------------------------------------------------------------
# text


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits, any script)."""
    return _WORD.findall(text.casefold())


def query_terms(query: str) -> list[str]:
    """The words of a query that a line must hold to match: its words less the stop words (all of its words
    when it has nothing else), each once, in order."""
    every = list(dict.fromkeys(words(query)))
    kept = [w for w in every if w not in STOP_WORDS]
    return kept or every


@dataclass
class _Candidate:
    file: int
    start: float
    end: float
    visual: float  # the raw visual score (log-mean-exp)
    terms: int  # a bit per query term held by the stretch's lines
    first: float = 0.0
    text: float = 0.0  # the IDF-weighted share of the query's terms its lines hold
    stretch: int = 0  # its row in its file's index
    best_run: float | None = None  # the best of its runs' scores, each run's frame a picture of its own
    closer: float | None = None  # the best stored frame's visual score, when looked at closer


class _Library:
    """What the first stage keeps while files stream past: a few candidates per file, the visual scores'
    running mean and variance (Welford), per query term the number of lines that hold it, and the best
    ``runs`` raw visual scores so far (a min-heap: see ``runs_now``)."""

    def __init__(self, terms: list[str], keep: int, runs: int = 0, matched: int = 0, reorder: int = 0):
        self.terms, self.keep = terms, keep
        self.runs, self.matched, self.reorder = runs, matched, reorder
        self.candidates: list[_Candidate] = []
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.lines = 0
        self.line_counts = np.zeros(len(terms), dtype=np.int64)
        self.visual_top: list[float] = []

    def runs_now(self, visual: np.ndarray, terms: np.ndarray) -> list[int]:
        """Which of a file's stretches get their best run now, while the file's index is at hand (they are kept
        as candidates), so that no index is read twice: those among the best ``runs`` raw visual scores so far
        (a running top; about ``runs * ln(stretches / runs)`` of them over a library, and every one of the
        library's best ``runs`` among them), and of those a line matches (whose rank the library's term
        weights decide), the ``matched`` holding the most terms, the best-looking first. Any other stretch that
        reaches the closer look has its index read again there."""
        out = []
        if self.runs > 0:
            for s in np.argsort(-visual, kind="stable").tolist():
                if len(self.visual_top) < self.runs:
                    heapq.heappush(self.visual_top, float(visual[s]))
                elif visual[s] > self.visual_top[0]:
                    heapq.heapreplace(self.visual_top, float(visual[s]))
                else:
                    break  # sorted: none after it gets in either
                out.append(s)
        if self.matched > 0:
            matched = sorted(np.nonzero(terms)[0].tolist(), key=lambda s: (-int(terms[s]).bit_count(), -visual[s]))
            out += matched[:self.matched]
        return sorted(set(out))

    def add_scores(self, scores: np.ndarray) -> None:
        for x in scores.astype(np.float64):
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 and self.m2 > 0 else 1.0

    def idf(self) -> np.ndarray:
        return np.log((self.lines + 1.0) / (self.line_counts + 0.5))

    def finish(self) -> list[_Candidate]:
        """Every kept candidate with its first-stage score, best first. With ``reorder``: the library's best
        ``reorder`` stretches by their summary are first ranked again among themselves by their best run: they
        keep their visual scores, handed out again in the order of their best runs, so the scale, and how text
        and picture weigh, stay as they were."""
        best = sorted(self.candidates, key=lambda c: (-c.visual, c.file, c.start))[:self.reorder]
        if len(best) >= 2 and all(c.best_run is not None for c in best):
            scores = [c.visual for c in best]  # best first
            for c, v in zip(sorted(best, key=lambda c: -c.best_run), scores):
                c.visual = v
        idf = self.idf()
        total = float(idf.sum()) or 1.0
        bits = 1 << np.arange(len(self.terms))
        for c in self.candidates:
            held = (c.terms & bits) != 0
            c.text = float(idf[held].sum()) / total
            c.first = _first(c.text, (c.visual - self.mean) / self.std)
        return sorted(self.candidates, key=lambda c: (-c.first, c.file, c.start))


def _first(text: float, z: float) -> float:
    """The first stage's score of a stretch from its text share and its visual z: either alone can rank it first."""
    visual = 1.0 / (1.0 + math.exp(-(z - VISUAL_Z)))
    return 1.0 - (1.0 - text) * (1.0 - visual)


def _file_lines(vin) -> list[tuple[float, float, str]]:
    """The lines a file's text is matched against: the subtitles that apply and its transcript, each once."""
    lines = [(float(s.start), float(s.end), s.text) for s in vin.subtitle_lines]
    transcript = vin.features.transcript if isinstance(vin.features, Vidtok) else None
    if transcript is not None:
        lines += [(float(a), float(b), str(t)) for a, b, t in transcript["lines"]]
    return list(dict.fromkeys(lines))


def _picture_dtype(model) -> torch.dtype:
    """The dtype index pictures go to the model in: as stored (float16) for a model on an accelerator, which
    converts them there; on the CPU the model's own, at once."""
    return model.dtype if model.device.type == "cpu" else torch.float16


def _best_runs(model, index, stretches: np.ndarray, attention_text: str, long_video: bool) -> np.ndarray:
    """Per stretch of ``stretches``: the best of its runs' scores, each run's summary frame (its class token and
    its pooled patches) a picture of its own; a log-mean-exp over the picture's patches."""
    rows = np.concatenate([np.arange(index.offsets[s], index.offsets[s + 1]) for s in stretches]) \
        if len(stretches) else np.zeros(0, dtype=np.int64)
    dtype = _picture_dtype(model)
    scores = np.empty(len(rows), dtype=np.float64)
    for a in range(0, len(rows), SUMMARY_CHUNK):
        chunk = rows[a:a + SUMMARY_CHUNK]
        scores[a:a + len(chunk)] = token_scores(model, index.part_pictures(chunk, dtype), attention_text,
                                                range(len(chunk)), long_video=long_video, chunk_frames=SUMMARY_CHUNK)
    counts = index.parts()[stretches]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
    best = np.maximum.reduceat(scores, starts) if len(rows) else np.zeros(0)
    return best - math.log(index.patches.shape[1])


def _score_file(model, number: int, vin, index, query: str, library: _Library, long_video: bool,
                attention_text: str, stretch_score: str = STRETCH_SCORE) -> int:
    """The first stage on one open file: every stretch's visual score (``attention_text``'s attention) and
    text score (``query``'s words) into ``library``, and the best run of those that may need it later
    (``_Library.runs_now``)."""
    n = len(index)
    if n == 0:
        return 0
    times = np.asarray(vin.timestamps, dtype=np.float64)
    step = float(vin.step)
    first, stop = index.stretches[:, 0], index.stretches[:, 1]
    starts = times[first]
    ends = np.minimum(times[stop - 1] + step, max(float(vin.duration), float(times[-1]) + step))
    visual = np.empty(n, dtype=np.float64)
    if stretch_score == "parts":
        visual[:] = _best_runs(model, index, np.arange(n), attention_text, long_video)
    else:
        parts, grid_tokens, dtype = index.parts(), index.patches.shape[1], _picture_dtype(model)
        for k in np.unique(parts):
            chosen = np.nonzero(parts == k)[0]
            for a in range(0, len(chosen), SUMMARY_CHUNK):
                rows = chosen[a:a + SUMMARY_CHUNK]
                pictures = index.summaries(rows, dtype)
                scores = token_scores(model, pictures, attention_text, range(len(rows)), long_video=long_video,
                                      chunk_frames=SUMMARY_CHUNK)
                visual[rows] = scores - math.log(int(k) * grid_tokens)  # log-mean-exp: counts of parts compare
    library.add_scores(visual)
    terms = np.zeros(n, dtype=np.int64)
    if library.terms:
        for a, b, text in _file_lines(vin):
            held = set(words(text))
            mask = sum(1 << i for i, t in enumerate(library.terms) if t in held)
            library.lines += 1
            library.line_counts += np.asarray([(mask >> i) & 1 for i in range(len(library.terms))])
            if mask:
                terms[(starts < b) & (ends > a)] |= mask
    keep = set(np.argsort(-visual, kind="stable")[:library.keep].tolist()) | set(np.nonzero(terms)[0].tolist())
    best_run: dict[int, float] = {}
    if stretch_score == "parts":
        best_run = {s: float(visual[s]) for s in keep}
    else:
        now = np.asarray(library.runs_now(visual, terms), dtype=np.int64)
        best_run = dict(zip(now.tolist(), _best_runs(model, index, now, attention_text, long_video).tolist()))
        keep |= set(best_run)
    for s in sorted(keep):
        library.candidates.append(_Candidate(number, float(starts[s]), float(ends[s]), float(visual[s]),
                                             int(terms[s]), stretch=int(s), best_run=best_run.get(s)))
    return n


# ---------------------------------------------------------------------------------------------------------
# the search


def search(model, inputs: Iterable[str | os.PathLike | LibraryFile], query: str,
           options: SearchOptions | None = None, *, callbacks: Callbacks = NO_CALLBACKS,
           index_settings: IndexSettings = IndexSettings(), visual_text: str = VISUAL_TEXT,
           stretch_score: str = STRETCH_SCORE, closer_mix: float = CLOSER_MIX,
           best_runs: int = BEST_RUNS) -> SearchResult:
    """The moments of a library (``.vidtok`` files, videos, folders searched recursively) that ``query`` is
    about, best first: ``options.top`` of them (see the module docstring for the two stages). Videos are
    encoded through the cache (``options.ask``: fps, subtitles). ``callbacks``: a warning for each file left
    out, status lines, progress as (files done, files). ``visual_text``: what the first stage's attention
    reads, with ``{query}``; ``stretch_score``, ``closer_mix`` and ``best_runs``: see ``STRETCH_SCORE``,
    ``CLOSER_MIX`` and ``BEST_RUNS`` (these four: tuning only)."""
    options = options or SearchOptions()
    if stretch_score not in STRETCH_SCORES:
        raise InputError(f"stretch_score {stretch_score!r}: expected one of {', '.join(STRETCH_SCORES)}")
    if not (math.isfinite(closer_mix) and closer_mix >= 0):
        raise InputError(f"closer_mix {closer_mix!r}: expected a number >= 0")
    if not (isinstance(best_runs, int) and not isinstance(best_runs, bool) and 0 <= best_runs <= 100_000):
        raise InputError(f"best_runs {best_runs!r}: expected a whole number from 0 to 100000")
    check_text(query, "the query")
    try:
        attention_text = visual_text.format(query=query.strip())
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"visual_text {visual_text!r}: expected a template whose only field is {{query}}") from exc
    skipped: list[str] = []
    files = check_encoders(model, library_files(inputs), callbacks=callbacks, skipped=skipped)
    long_video = resolve_long_video(model, options.ask.long)
    terms = query_terms(query)[:62]
    mixed = options.closer if closer_mix > 0 else 0  # the closer look's stretches that need a best run
    whole = stretch_score == "whole"
    library = _Library(terms, keep=options.candidates + options.top, runs=max(best_runs, mixed) if whole else 0,
                       matched=mixed if whole else 0, reorder=best_runs if whole else 0)
    indexes: dict[str, int] = {}
    searched: list[LibraryFile] = []
    stretches = 0
    t0 = time.perf_counter()
    quiet = Callbacks(warning=callbacks.warning)  # progress by files (per-file status lines would be noise)

    def skip(item: LibraryFile, exc: LlamaVidError) -> None:
        text = f"{item.label}: skipped: {_reason(exc, item)}"
        skipped.append(text)
        callbacks.warn(text)

    for i, item in enumerate(files):
        try:
            with open_input(model, item.path, options.ask, callbacks=quiet) as vin:
                index, status = index_for(vin.features, index_settings, callbacks=quiet, label=item.label)
                indexes[status] = indexes.get(status, 0) + 1
                stretches += _score_file(model, len(searched), vin, index, query, library, long_video,
                                         attention_text, stretch_score)
                searched.append(item)
        except LlamaVidError as exc:
            skip(item, exc)
        callbacks.advance(i + 1, len(files))
    if not searched:
        raise InputError("nothing left to search: every file was skipped")
    ranked = library.finish()
    seconds = {"first": time.perf_counter() - t0}
    if options.closer > 0:
        t1 = time.perf_counter()
        ranked = _look_closer(model, ranked, options.closer, searched, attention_text, options, long_video, callbacks,
                              closer_mix, index_settings)
        seconds["closer"] = time.perf_counter() - t1
    moments = [Moment(searched[c.file].label, c.start, c.end, c.first, c.first, file=searched[c.file])
               for c in ranked]
    checked = moments[:options.candidates] if options.rerank_weight > 0 else []
    if checked:
        t1 = time.perf_counter()
        _check(model, checked, query, options, callbacks)
        w = options.rerank_weight
        for m in checked:
            g = w * (1.0 - m.first)  # the check's share: the first stage's doubt
            m.score = (1.0 - g) * m.first + g * (m.check if m.check is not None else 0.5)
        moments = sorted(checked, key=lambda m: -m.score) + moments[len(checked):]
        seconds["rerank"] = time.perf_counter() - t1
    moments = moments[:options.top]
    if options.answer:
        t2 = time.perf_counter()
        _answer(model, moments, query, options, callbacks)
        seconds["answer"] = time.perf_counter() - t2
    return SearchResult(query, moments, len(searched), stretches, skipped, indexes, seconds)


def _look_closer(model, ranked: list[_Candidate], count: int, searched: list[LibraryFile], attention_text: str,
                 options: SearchOptions, long_video: bool, callbacks: Callbacks,
                 mix: float = CLOSER_MIX, index_settings: IndexSettings = IndexSettings()) -> list[_Candidate]:
    """Stage 1b: the first stage's best ``count`` stretches looked at closer. Each one's visual score becomes
    that of its best stored frame at full resolution (the query's attention over every patch of every frame in
    it, as look-closer's pass 1 scores frames) instead of its index summary's, whose frames are pooled to a
    coarse grid and mixed with each other; standardised over the ``count`` (z), it enters the first stage's
    formula as before; with ``mix``, plus ``mix`` times the z of their best runs' scores (``_best_runs``, from
    the index: at most ``max_parts`` small pictures a stretch; scored in the first stage, or here from the
    index read again for a stretch the first stage did not expect here), the sum standardised again. They
    are ranked again among themselves, above the rest."""
    top = ranked[:count]
    if len(top) < 2:
        return ranked
    quiet = Callbacks(warning=callbacks.warning)
    by_file: dict[int, list[_Candidate]] = {}
    for c in top:
        by_file.setdefault(c.file, []).append(c)
    for number, group in by_file.items():
        item = searched[number]
        try:
            with open_input(model, item.path, options.ask, callbacks=quiet) as vin:
                times = np.asarray(vin.timestamps, dtype=np.float64)
                for c in group:
                    inside = np.nonzero((times >= c.start - 1e-6) & (times < c.end - 1e-6))[0]
                    positions = inside if len(inside) else [int(np.argmin(np.abs(times - c.start)))]
                    c.closer = float(token_scores(model, vin.features, attention_text, positions,
                                                  long_video=long_video).max())
                missing = [c for c in group if c.best_run is None]
                if mix > 0 and missing:
                    index, _ = index_for(vin.features, index_settings, callbacks=quiet, label=item.label)
                    # the stretches as the first stage cut them (a file encoded again since has others: left out)
                    missing = [c for c in missing if c.stretch < len(index)
                               and abs(times[index.stretches[c.stretch, 0]] - c.start) < 1e-6]
                    runs = _best_runs(model, index, np.asarray([c.stretch for c in missing], dtype=np.int64),
                                      attention_text, long_video)
                    for c, r in zip(missing, runs):
                        c.best_run = float(r)
        except LlamaVidError as exc:  # changed on disk since the first stage: its stretches keep their first score
            callbacks.warn(f"{item.label}: not looked at closer: {_reason(exc, item)}")
    looked = [c for c in top if c.closer is not None and (mix == 0 or c.best_run is not None)]
    if len(looked) < 2:
        return ranked

    def standard(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (float(x.std()) or 1.0)

    value = standard(np.asarray([c.closer for c in looked], dtype=np.float64))
    if mix > 0:
        value = standard(value + mix * standard(np.asarray([c.best_run for c in looked], dtype=np.float64)))
    for c, v in zip(looked, value):
        c.first = _first(c.text, float(v))
    return sorted(top, key=lambda c: (-c.first, c.file, c.start)) + ranked[count:]


def _by_file(moments: Sequence[Moment]) -> dict[LibraryFile, list[Moment]]:
    groups: dict[LibraryFile, list[Moment]] = {}
    for m in moments:
        groups.setdefault(m.file, []).append(m)
    return groups


def _moment_options(options: AskOptions, m: Moment, **changes: Any) -> AskOptions:
    return options.replace(start=m.start, end=m.end, **changes)


def _check(model, moments: Sequence[Moment], query: str, options: SearchOptions, callbacks: Callbacks) -> None:
    """Stage 2: each moment asked ``CHECK_PROMPT`` through the usual path; ``check`` = P(yes) / (P(yes) + P(no))."""
    prompt = CHECK_PROMPT.format(query=query.strip())
    quiet = Callbacks(warning=callbacks.warning)
    for item, group in _by_file(moments).items():
        questions = [Question(prompt, _moment_options(options.ask, m, choices=CHECK_CHOICES, evidence=False,
                                                      look_closer=False)) for m in group]
        for m, answered in zip(group, answer_about(model, item.path, questions, label=item.label, callbacks=quiet)):
            if answered.error is not None:
                callbacks.warn(f"{item.label}: a moment could not be checked: {_reason(answered.error, item)}")
                continue
            yes, no = (c.score for c in answered.answer.choices)
            m.check = yes / (yes + no) if yes + no > 0 else 0.5


def _answer(model, moments: Sequence[Moment], query: str, options: SearchOptions, callbacks: Callbacks) -> None:
    """``answer``: the query asked as a question on each moment, through the usual path."""
    quiet = Callbacks(warning=callbacks.warning)
    for item, group in _by_file(moments).items():
        questions = [Question(query, _moment_options(options.ask, m)) for m in group]
        for m, answered in zip(group, answer_about(model, item.path, questions, label=item.label, callbacks=quiet)):
            if answered.error is not None:
                callbacks.warn(f"{item.label}: a moment could not be answered: {_reason(answered.error, item)}")
                continue
            m.answer = AnswerRecord.of(model, answered, item.label)


__all__ = ["CHECK_PROMPT", "LibraryFile", "Moment", "SearchResult", "check_encoders", "library_files",
           "query_terms", "search", "words"]
