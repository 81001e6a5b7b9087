"""A synthetic video-QA set: moving coloured shapes rendered with numpy, written as real videos by ffmpeg.

It exists so that a model can be trained and checked end to end on a 2-core CPU with no downloads.
Every answer is determined by what is drawn, so accuracy means something:

    single    one shape moving across the frame for 4 s        -> colour, shape
    sequence  1-3 shapes one after another (2 s each, 1 s gap) -> count, first colour, last colour
    needle    a long quiet video with ONE frame showing a shape -> its colour (the long-video test)
    window    a quiet video with ONE shape on screen for a few seconds -> colour, shape; and WHEN (evidence)
    scenes    3-6 scenes of 10-20 s, each its own backdrop and shape      -> where the scenes change (chapters)
    pick      a few seconds of shapes one after another (some frames with two side by side); ONE of them is
              the kind the question names                                -> its colour ("What color is the ring?")
    haystack  minutes of distractor shapes of every colour and of every other kind, all the way through, and
              ONE needle of the asked kind for one second at a set depth  -> its colour (the look-closer test)
    search    a library of clips of mixed lengths full of distractor shapes and subtitle lines; each query
              ("a purple ring", "the code word tiger") has ONE right moment in the whole library (search)
    content   3-6 parts of 10-20 s on ONE backdrop, each a new shape (or one joins or leaves) -> where (chapters)

Clips also carry a subtitle line (a code word), asked about with the long-video prompt, which shows
each frame's subtitle text. Videos are 224x224 (the vision encoder's input size) at 4 frames/s, so the
default 1 frame/s sampling takes every 4th frame; shapes stay on screen for whole seconds so that every
sampled frame shows what the answer says. Train and test splits use different seeds and different
video files; no video is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..core.fileio import atomic_path, write_text_atomic

SIZE = 224
NATIVE_FPS = 4
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "purple": (150, 60, 200), "white": (240, 240, 240),
}
SHAPES = ("circle", "ring", "bar", "column")
NUMBERS = ("zero", "one", "two", "three")
CODE_WORDS = ("apple", "river", "candle", "tiger", "window", "garden", "rocket", "pencil")
# Code words the test split never asks. The demo's tokenizer learns their pieces too, so that no two of
# CODE_WORDS share a first piece (with eight words alone "river" and "rocket" both began with "▁r");
# ``make_clips(word_pool=...)`` can also put them in training subtitles (measured: the small model then
# loses the subtitle skill, docs/RESULTS.md)
TRAIN_CODE_WORDS = (
    "rabbit", "ribbon", "robin", "ruler", "radish", "rescue", "cactus", "copper", "cotton", "cabin", "tunnel",
    "tomato", "ticket", "timber", "wagon", "walnut", "winter", "wizard", "guitar", "ginger", "galaxy", "goblin",
    "anchor", "arrow", "atlas", "acorn", "parrot", "pillow", "planet", "puzzle", "meadow", "marble", "lemon",
    "ladder", "basket", "falcon", "hammer", "island", "jacket", "kettle")

QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("What color is the shape?", "Which color does the moving shape have?"),
    "shape": ("What shape is shown in the video?", "What kind of shape moves in the video?"),
    "count": ("How many shapes appear in the video?", "How many different shapes are shown?"),
    "first": ("What color is the first shape?", "Which color appears first?"),
    "last": ("What color is the last shape?", "Which color appears last?"),
    "subtitle": ("What is the code word?", "Which code word is said in the video?"),
    "needle": ("One frame of this video shows a shape. What color is it?",
               "What color is the shape that appears once?"),
    # the question names the kind ({kind}): it cannot be answered without reading the question
    "pick": ("What color is the {kind}?", "Which color does the {kind} have?"),
}


def question_texts(named_kinds: bool = True) -> list[str]:
    """Every question the set asks, with the kind-naming ones written out for each kind (``named_kinds``
    False: without them, as the tokenizer of the demo recipe before look-closer was made)."""
    out = []
    for options in QUESTIONS.values():
        for q in options:
            if "{kind}" in q and not named_kinds:
                continue
            out += [q.format(kind=k) for k in SHAPES] if "{kind}" in q else [q]
    return out


@dataclass
class ShapeEvent:
    """One shape on screen from ``start`` to ``end`` seconds, moving linearly from ``p0`` to ``p1``."""

    shape: str
    color: str
    start: float
    end: float
    p0: tuple[float, float]
    p1: tuple[float, float]
    radius: float


@dataclass
class Clip:
    id: str
    kind: str
    seconds: float
    fps: float
    background: int
    events: list[ShapeEvent]
    subtitles: list[tuple[float, float, str]] = field(default_factory=list)
    qa: list[tuple[str, str, str]] = field(default_factory=list)  # (question type, question, answer)
    scenes: list[tuple[float, int]] = field(default_factory=list)  # (start, backdrop grey level); none: one backdrop


# -- drawing ---------------------------------------------------------------------------------------

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """A boolean (SIZE, SIZE) mask of a shape centred at (cx, cy) with 'radius' r, in pixels.

    The four silhouettes differ in where they cover the frame (a disc, a hollow disc, a wide and a
    tall bar), so a small encoder trained for minutes can tell them apart.
    """
    dx, dy = _XX - cx, _YY - cy
    d2 = dx * dx + dy * dy
    if shape == "circle":
        return d2 <= r * r
    if shape == "ring":
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "bar":
        return (np.abs(dx) <= r) & (np.abs(dy) <= 0.32 * r)
    if shape == "column":
        return (np.abs(dy) <= r) & (np.abs(dx) <= 0.32 * r)
    raise ValueError(f"unknown shape {shape!r}")


def background(clip: Clip, seed: int) -> np.ndarray:
    """The clip's backdrop: its grey level with a fixed light texture (fixed, so that it compresses well)."""
    rng = np.random.default_rng(seed)
    texture = rng.normal(0.0, 6.0, size=(SIZE // 8, SIZE // 8, 1)).repeat(8, 0).repeat(8, 1)
    return np.clip(clip.background + texture, 0, 255).astype(np.float32).repeat(3, axis=2)


def render_frame(clip: Clip, t: float, backdrop: np.ndarray, masks: dict | None = None) -> np.ndarray:
    """The picture at time t: the backdrop plus every shape on screen at t (``masks``: a cache for the masks
    of shapes that do not move, which long videos reuse for many frames)."""
    frame = backdrop.copy()
    for ev in clip.events:
        if ev.start <= t < ev.end:
            a = (t - ev.start) / max(ev.end - ev.start, 1e-6)
            cx = ev.p0[0] + a * (ev.p1[0] - ev.p0[0])
            cy = ev.p0[1] + a * (ev.p1[1] - ev.p0[1])
            if masks is not None and ev.p0 == ev.p1:
                key = (ev.shape, cx, cy, ev.radius)
                if key not in masks:
                    if len(masks) > 64:
                        masks.clear()
                    masks[key] = shape_mask(ev.shape, cx, cy, ev.radius)
                mask = masks[key]
            else:
                mask = shape_mask(ev.shape, cx, cy, ev.radius)
            frame[mask] = COLORS[ev.color]
    return np.clip(frame, 0, 255).astype(np.uint8)


def scene_backdrops(clip: Clip, seed: int) -> list[tuple[float, np.ndarray]]:
    """(start, backdrop) of each scene; a clip without scenes has its one backdrop from 0 s."""
    if not clip.scenes:
        return [(0.0, background(clip, seed))]
    out = []
    for k, (start, level) in enumerate(clip.scenes):
        scene = Clip(clip.id, clip.kind, clip.seconds, clip.fps, level, [])
        out.append((start, background(scene, seed + 7919 * (k + 1))))
    return out


def write_clip(clip: Clip, path: str | os.PathLike, *, seed: int = 0) -> Path:
    """Render every frame and pipe it to ffmpeg (H.264, yuv420p); the file appears atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _encode_clip(clip, tmp, seed)
    return path


def _encode_clip(clip: Clip, tmp: Path, seed: int) -> None:
    backdrops = scene_backdrops(clip, seed)
    n = int(round(clip.seconds * clip.fps))
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{SIZE}x{SIZE}", "-r", f"{clip.fps:g}", "-i", "-", "-c:v", "libx264", "-preset", "ultrafast",
           "-crf", "20", "-pix_fmt", "yuv420p", "-g", str(max(1, int(clip.fps * 10))), "-f", "mp4", str(tmp)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    masks: dict = {}
    events = sorted(clip.events, key=lambda e: e.start)
    starts = np.array([e.start for e in events])
    longest = max((e.end - e.start for e in events), default=0.0)
    for i in range(n):
        t = i / clip.fps
        backdrop = [b for start, b in backdrops if start <= t + 1e-9][-1]
        view = clip
        if len(events) > 8:  # long videos: only the shapes that started shortly before t are looked at
            lo, hi = np.searchsorted(starts, t - longest, side="left"), np.searchsorted(starts, t, side="right")
            view = Clip(clip.id, clip.kind, clip.seconds, clip.fps, clip.background,
                        [e for e in events[lo:hi] if e.start <= t < e.end])
        proc.stdin.write(render_frame(view, t, backdrop, masks).tobytes())
    proc.stdin.close()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {tmp}: {err.strip()}")


def write_srt(lines: Iterable[tuple[float, float, str]], path: str | os.PathLike) -> Path:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    path = Path(path)
    path.write_text("".join(f"{i + 1}\n{stamp(s)} --> {stamp(e)}\n{text}\n\n" for i, (s, e, text) in enumerate(lines)))
    return path


# -- clip designs ----------------------------------------------------------------------------------

WANDER = 24  # shapes move within this many pixels of the centre: big and central, so one small encoder sees them whole


def _position(rng: np.random.Generator, r: float) -> tuple[float, float]:
    c = SIZE / 2
    return float(rng.uniform(c - WANDER, c + WANDER)), float(rng.uniform(c - WANDER, c + WANDER))


def _event(rng: np.random.Generator, shape: str, color: str, start: float, end: float) -> ShapeEvent:
    r = float(rng.uniform(48, 68))
    return ShapeEvent(shape, color, start, end, _position(rng, r), _position(rng, r), r)


def _ask(rng: np.random.Generator, qtype: str) -> str:
    options = QUESTIONS[qtype]
    return options[int(rng.integers(len(options)))]


def _subtitle(rng: np.random.Generator, seconds: float) -> tuple[list[tuple[float, float, str]], str]:
    word = CODE_WORDS[int(rng.integers(len(CODE_WORDS)))]
    start = float(rng.integers(0, max(1, int(seconds) - 1)))
    return [(start, start + 1.5, f"The code word is {word}.")], word


def single_clip(rng: np.random.Generator, clip_id: str) -> Clip:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    seconds = 4.0
    subs, word = _subtitle(rng, seconds)
    clip = Clip(clip_id, "single", seconds, NATIVE_FPS, int(rng.integers(15, 70)),
                [_event(rng, shape, color, 0.0, seconds)], subs)
    clip.qa = [("color", _ask(rng, "color"), color), ("shape", _ask(rng, "shape"), shape),
               ("subtitle", _ask(rng, "subtitle"), word)]
    return clip


def sequence_clip(rng: np.random.Generator, clip_id: str) -> Clip:
    k = int(rng.integers(1, 4))
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:k]]
    events = [_event(rng, SHAPES[int(rng.integers(len(SHAPES)))], c, 3.0 * i, 3.0 * i + 2.0)
              for i, c in enumerate(colors)]
    seconds = 3.0 * k
    subs, word = _subtitle(rng, seconds)
    clip = Clip(clip_id, "sequence", seconds, NATIVE_FPS, int(rng.integers(15, 70)), events, subs)
    clip.qa = [("count", _ask(rng, "count"), NUMBERS[k]), ("first", _ask(rng, "first"), colors[0]),
               ("last", _ask(rng, "last"), colors[-1]), ("subtitle", _ask(rng, "subtitle"), word)]
    return clip


def needle_clip(rng: np.random.Generator, clip_id: str, seconds: int) -> Clip:
    """``seconds`` frames at 1 frame/s; exactly one of them (not the first or last) shows a shape."""
    at = int(rng.integers(1, seconds - 1))
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    event = _event(rng, SHAPES[int(rng.integers(len(SHAPES)))], color, float(at), float(at) + 1.0)
    clip = Clip(clip_id, "needle", float(seconds), 1.0, int(rng.integers(15, 70)), [event])
    clip.qa = [("needle", _ask(rng, "needle"), color)]
    return clip


def window_clip(rng: np.random.Generator, clip_id: str, *, seconds: tuple[int, int] = (12, 24),
                window: tuple[int, int] = (2, 4)) -> Clip:
    """A quiet video of ``seconds`` (whole seconds) in which ONE shape is on screen for a window of
    ``window`` whole seconds, not at the very start or end: the evidence test (when is the answer shown?)."""
    length = int(rng.integers(seconds[0], seconds[1] + 1))
    width = int(rng.integers(window[0], window[1] + 1))
    at = int(rng.integers(1, length - width))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    clip = Clip(clip_id, "window", float(length), NATIVE_FPS, int(rng.integers(15, 70)),
                [_event(rng, shape, color, float(at), float(at + width))])
    clip.qa = [("color", _ask(rng, "color"), color), ("shape", _ask(rng, "shape"), shape)]
    return clip


def scene_clip(rng: np.random.Generator, clip_id: str, *, scenes: tuple[int, int] = (3, 6),
               scene_seconds: tuple[float, float] = (10.0, 20.0)) -> Clip:
    """Scenes one after another, each with its own backdrop and its own shape moving all through it.

    Scene changes fall on any tenth of a second (not only on sampled frames); neighbouring scenes differ
    in colour and backdrop. The chapter test: find where the scenes change.
    """
    k = int(rng.integers(scenes[0], scenes[1] + 1))
    colors = list(COLORS)
    events, cuts, t = [], [], 0.0
    previous = None
    for i in range(k):
        length = round(float(rng.uniform(*scene_seconds)), 1)
        color = colors[int(rng.integers(len(colors)))]
        while color == previous:
            color = colors[int(rng.integers(len(colors)))]
        previous = color
        level = int(rng.integers(15, 110))
        events.append(_event(rng, SHAPES[int(rng.integers(len(SHAPES)))], color, t, t + length))
        cuts.append((t, level))
        t = round(t + length, 1)
    clip = Clip(clip_id, "scenes", t, NATIVE_FPS, cuts[0][1], events, scenes=cuts)
    return clip


def _pair_event(rng: np.random.Generator, shape: str, color: str, start: float, end: float,
                side: int) -> ShapeEvent:
    """A smaller shape on the left (side 0) or right (side 1) half of the frame, for frames with two shapes."""
    r = float(rng.uniform(30, 40))
    cx = SIZE / 2 + (-1 if side == 0 else 1) * float(rng.uniform(52, 60))
    cy = SIZE / 2 + float(rng.uniform(-WANDER, WANDER))
    return ShapeEvent(shape, color, start, end, (cx, cy), (cx, cy), r)


def pick_clip(rng: np.random.Generator, clip_id: str, *, events: tuple[int, int] = (3, 12),
              two_shapes: float = 0.5) -> Clip:
    """Shapes one after another for 1-3 s each (whole seconds); exactly one of them is of the kind the
    question names, and every other one is of another kind. With probability ``two_shapes`` a moment shows
    two shapes side by side (two different kinds), so that the kind asked about has to be picked out
    within the frame too."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    others = [s for s in SHAPES if s != kind]
    colors = list(COLORS)
    n = int(rng.integers(events[0], events[1] + 1))
    needle = int(rng.integers(n))
    out, t, answer = [], 0.0, ""
    for i in range(n):
        length = float(rng.integers(1, 3)) if i == needle else float(rng.integers(1, 4))
        main = kind if i == needle else others[int(rng.integers(len(others)))]
        color = colors[int(rng.integers(len(colors)))]
        if i == needle:
            answer = color
        if rng.random() < two_shapes:
            second = [s for s in others if s != main][int(rng.integers(len(others) - (main != kind)))]
            side = int(rng.integers(2))
            out.append(_pair_event(rng, main, color, t, t + length, side))
            out.append(_pair_event(rng, second, colors[int(rng.integers(len(colors)))], t, t + length, 1 - side))
        else:
            out.append(_event(rng, main, color, t, t + length))
        t += length
    clip = Clip(clip_id, "pick", t, NATIVE_FPS, int(rng.integers(15, 70)), out)
    clip.qa = [("pick", _ask(rng, "pick").format(kind=kind), answer)]
    return clip


def add_check_questions(clips: list[Clip], template: str, answers: tuple[str, str], *, seed: int,
                        share: float = 1.0) -> None:
    """Give a ``share`` of the pick clips a second question: whether they show a thing named by colour and
    kind (``template`` with ``{query}`` = "a purple ring", as ``llamavid search`` checks a moment; ``answers``:
    yes, no). Half are yes (a colour and kind on screen at some point); the no's are, a third each, a kind on
    screen in another colour, a colour on screen on another kind, and anything not shown: the answer needs
    both words. Drawn from a seed of their own, after the fact: the clips, and so their videos, stay as they
    were."""
    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    for clip in clips:
        if clip.kind != "pick" or rng.random() >= share:
            continue
        shown = sorted({(e.color, e.shape) for e in clip.events})
        absent = [(c, k) for c in colors for k in SHAPES if (c, k) not in shown]
        if rng.random() < 0.5 or not absent:
            (color, kind), answer = shown[int(rng.integers(len(shown)))], answers[0]
        else:
            mode = int(rng.integers(3))
            hard = [(c, k) for c, k in absent
                    if (mode == 0 and any(k == s for _, s in shown)) or (mode == 1 and any(c == o for o, _ in shown))]
            pool = hard if mode < 2 and hard else absent
            (color, kind), answer = pool[int(rng.integers(len(pool)))], answers[1]
        query = SEARCH_VISUAL[int(rng.integers(len(SEARCH_VISUAL)))].format(color=color, kind=kind)
        clip.qa.append(("check", template.format(query=query), answer))


def haystack_clip(rng: np.random.Generator, clip_id: str, *, seconds: int, depth: float,
                  needle_seconds: int = 1, distractor_seconds: tuple[int, int] = (2, 5)) -> Clip:
    """A ``seconds``-long video full of distractors all the way through: one big shape at a time, each on
    screen for 2-5 whole seconds, of every colour and every kind but one; and ONE shape of that kind (the
    needle) for ``needle_seconds`` starting at ``depth`` (0-1) of the video (whole seconds, so that
    sampling at 1 frame/s sees it). "What color is the ring?" cannot be answered without the question:
    every frame shows a coloured shape. Shapes stand still (long videos render quickly)."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    others = [s for s in SHAPES if s != kind]
    colors = list(COLORS)
    at = int(round(depth * seconds))
    at = min(max(1, at + int(rng.integers(-max(1, seconds // 100), max(1, seconds // 100) + 1))),
             seconds - needle_seconds - 1)
    color = colors[int(rng.integers(len(colors)))]

    def still(shape: str, c: str, start: float, end: float) -> ShapeEvent:
        r = float(rng.uniform(48, 68))
        p = _position(rng, r)
        return ShapeEvent(shape, c, start, end, p, p, r)

    out: list[ShapeEvent] = []
    for lo, hi in ((0, at), (at + needle_seconds, seconds)):
        t = lo
        while t < hi:
            length = min(int(rng.integers(distractor_seconds[0], distractor_seconds[1] + 1)), hi - t)
            out.append(still(others[int(rng.integers(len(others)))], colors[int(rng.integers(len(colors)))],
                             float(t), float(t + length)))
            t += length
    out.append(still(kind, color, float(at), float(at + needle_seconds)))
    out.sort(key=lambda e: e.start)
    clip = Clip(clip_id, "haystack", float(seconds), NATIVE_FPS, int(rng.integers(15, 70)), out)
    clip.qa = [("pick", _ask(rng, "pick").format(kind=kind), color)]
    return clip


def haystack_clips(split: str, *, minutes: tuple[int, ...] = (5, 15, 30, 60),
                   depths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9), per_cell: int = 5,
                   seed: int = 0) -> list[Clip]:
    """The needle-in-a-haystack set: ``per_cell`` videos for every length x depth (ids name both)."""
    rng = np.random.default_rng(SPLIT_SEEDS[split] + EXTRA_SEEDS["haystack"] + seed)
    out = []
    for m in minutes:
        for d in depths:
            for k in range(per_cell):
                out.append(haystack_clip(rng, f"{split}-haystack-{m:02d}m-d{int(round(d * 100)):02d}-{k}",
                                         seconds=60 * m, depth=d))
    return out


# -- a library to search ---------------------------------------------------------------------------

SEARCH_LINES = ("Remember the code word.", "The code word comes later.", "Watch the shapes.",
                "Memorize the content.", "Now watch this.", "The end is near.")  # subtitle lines without one
SEARCH_VISUAL = ("a {color} {kind}", "the {color} {kind}")
SEARCH_SPOKEN = ("the code word {word}", "code word {word}")
# each colour's two target kinds: every kind is a target in three colours and a distractor in the other three
_TARGET_PAIRS = ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2))


@dataclass(frozen=True)
class SearchQuery:
    """A search over a library and its one right moment: ``video`` (a clip id) from ``start`` to ``end``."""

    id: str
    kind: str  # "visual" or "spoken"
    text: str
    video: str
    start: float
    end: float


def search_library(split: str, index: int = 0, *, videos: int = 50, seconds: tuple[int, int] = (20, 240),
                   seed: int = 0) -> tuple[list[Clip], list[SearchQuery]]:
    """A library of ``videos`` clips of mixed lengths (whole seconds in ``seconds``) to search, and its 20
    queries, each with ONE right moment in the whole library.

    Half of the 24 colour x kind pairs are targets, half distractors; every colour and every kind is among
    both (a purple ring is found among purple bars and red rings). The clips are full of still distractor
    shapes (2-5 s each, sometimes two side by side, sometimes a quiet second) and of subtitle lines without
    a code word; each of the 12 target pairs is on screen once in the library (1-3 s, sometimes beside a
    distractor) and each of the 8 code words is said once (``The code word is tiger.``). Queries name what
    to find: ``a purple ring`` (visual), ``the code word tiger`` (spoken). ``index`` draws another library
    from the same split (libraries of one split share no clip id)."""
    rng = np.random.default_rng(SPLIT_SEEDS[split] + EXTRA_SEEDS["search"] + 1009 * index + seed)
    colors = list(COLORS)
    pairs = [_TARGET_PAIRS[i] for i in rng.permutation(len(_TARGET_PAIRS))]
    kinds = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    targets = [(c, kinds[k]) for c, ks in zip(colors, pairs) for k in ks]
    distractors = [(c, s) for c in colors for s in SHAPES if (c, s) not in targets]
    lengths = [int(rng.integers(seconds[0], seconds[1] + 1)) for _ in range(videos)]
    ids = [f"{split}-lib{index:02d}-{i:03d}" for i in range(videos)]

    # the right moments first: (video, start, length) of each target, never two in one stretch of a video
    taken: dict[int, list[tuple[int, int]]] = {}

    def place(width: int) -> tuple[int, int]:
        while True:
            v = int(rng.integers(videos))
            at = int(rng.integers(1, lengths[v] - width - 1))
            if all(at + width + 3 <= a or b + 3 <= at for a, b in taken.get(v, [])):
                taken.setdefault(v, []).append((at, at + width))
                return v, at

    visual = []
    for color, kind in targets:
        width = int(rng.integers(1, 4))
        v, at = place(width)
        visual.append((color, kind, v, at, width))
    spoken = []
    for word in CODE_WORDS:
        v, at = place(2)
        spoken.append((word, v, at))

    def still(shape: str, color: str, start: float, end: float, side: int | None = None) -> ShapeEvent:
        if side is not None:
            return _pair_event(rng, shape, color, start, end, side)
        r = float(rng.uniform(48, 68))
        p = _position(rng, r)
        return ShapeEvent(shape, color, start, end, p, p, r)

    clips = []
    for v, (clip_id, length) in enumerate(zip(ids, lengths)):
        events: list[ShapeEvent] = []
        busy = sorted((at, at + width) for _, _, tv, at, width in visual if tv == v)  # the screen is the target's
        for color, kind, tv, at, width in visual:
            if tv == v:
                if rng.random() < 0.3:  # beside a distractor
                    side = int(rng.integers(2))
                    dc, ds = distractors[int(rng.integers(len(distractors)))]
                    events += [still(kind, color, at, at + width, side), still(ds, dc, at, at + width, 1 - side)]
                else:
                    events.append(still(kind, color, at, at + width))
        t = 0
        while t < length:
            inside = [(a, b) for a, b in busy if a <= t < b]
            if inside:
                t = inside[0][1]
                continue
            nxt = min([a for a, _ in busy if a > t] + [length])
            span = min(int(rng.integers(2, 6)), nxt - t)
            if rng.random() > 0.1:  # else a quiet stretch
                dc, ds = distractors[int(rng.integers(len(distractors)))]
                if rng.random() < 0.25:
                    side = int(rng.integers(2))
                    ec, es = distractors[int(rng.integers(len(distractors)))]
                    events += [still(ds, dc, t, t + span, side), still(es, ec, t, t + span, 1 - side)]
                else:
                    events.append(still(ds, dc, t, t + span))
            t += span
        events.sort(key=lambda e: e.start)
        subs: list[tuple[float, float, str]] = []
        said = [(at, word) for word, sv, at in spoken if sv == v]
        s = float(rng.integers(1, 8))
        while s < length - 2:
            if not any(abs(s - at) < 4 for at, _ in said):
                subs.append((s, s + 2.0, SEARCH_LINES[int(rng.integers(len(SEARCH_LINES)))]))
            s += float(rng.integers(6, 16))
        subs += [(float(at), float(at) + 2.0, f"The code word is {word}.") for at, word in said]
        subs.sort()
        clips.append(Clip(clip_id, "search", float(length), NATIVE_FPS, int(rng.integers(15, 70)), events, subs))

    queries = []
    for n, (color, kind, v, at, width) in enumerate(visual):
        text = SEARCH_VISUAL[int(rng.integers(len(SEARCH_VISUAL)))].format(color=color, kind=kind)
        queries.append(SearchQuery(f"{split}-lib{index:02d}-v{n:02d}", "visual", text, ids[v], float(at),
                                   float(at + width)))
    for n, (word, v, at) in enumerate(spoken):
        text = SEARCH_SPOKEN[int(rng.integers(len(SEARCH_SPOKEN)))].format(word=word)
        queries.append(SearchQuery(f"{split}-lib{index:02d}-s{n:02d}", "spoken", text, ids[v], float(at),
                                   float(at) + 2.0))
    return clips, queries


CONTENT_CHANGES = ("join", "leave", "replace")


def content_clip(rng: np.random.Generator, clip_id: str, *, parts: tuple[int, int] = (3, 6),
                 part_seconds: tuple[float, float] = (10.0, 20.0), radius: tuple[float, float] = (16.0, 68.0),
                 changes: tuple[str, ...] = ("replace",)) -> Clip:
    """Parts one after another on ONE backdrop: the backdrop never changes, only what is on it.

    Each part starts with a change of the shapes on screen, one of ``changes`` (equally often, where more
    than one is possible): ``replace`` (the default, and the only one when none of the others is
    possible): the shapes on screen give way to a new one; ``join``: a new shape joins the one on screen;
    ``leave``: one of two leaves. A new shape's colour differs from those on screen and those it
    replaces. Shapes are of any size in ``radius`` (a small one covers a few patches), anywhere in the
    frame, each moving as far as a shape of the other designs over its time on screen (up to
    ``2 * WANDER`` pixels along each axis). Changes fall on any tenth of a second. The chapter test for
    content changes: the moments a shape appears or disappears (``content_changes``); ``scenes`` stays empty.
    """
    unknown = set(changes) - set(CONTENT_CHANGES)
    if unknown:
        raise ValueError(f"unknown content changes {sorted(unknown)}; choose from {', '.join(CONTENT_CHANGES)}")
    k = int(rng.integers(parts[0], parts[1] + 1))
    starts = [0.0]
    for _ in range(k):
        starts.append(round(starts[-1] + round(float(rng.uniform(*part_seconds)), 1), 1))
    colors = list(COLORS)
    events: list[ShapeEvent] = []
    shown: list[ShapeEvent] = []  # on screen; each one's end is set when it leaves

    def arrive(t: float, taken: set[str]) -> None:
        color = colors[int(rng.integers(len(colors)))]
        while color in taken:
            color = colors[int(rng.integers(len(colors)))]
        r = float(rng.uniform(*radius))
        lo, hi = r + 4, SIZE - r - 4
        p0 = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        dx, dy = rng.uniform(-2 * WANDER, 2 * WANDER, size=2)
        p1 = (float(np.clip(p0[0] + dx, lo, hi)), float(np.clip(p0[1] + dy, lo, hi)))
        event = ShapeEvent(SHAPES[int(rng.integers(len(SHAPES)))], color, t, starts[-1], p0, p1, r)
        events.append(event)
        shown.append(event)

    arrive(0.0, set())
    for t in starts[1:-1]:
        possible = [c for c in changes if c == "replace" or (c == "join") == (len(shown) == 1)] or ["replace"]
        change = possible[int(rng.integers(len(possible)))] if len(possible) > 1 else possible[0]
        taken = {e.color for e in shown}
        if change == "leave":
            gone = shown.pop(int(rng.integers(len(shown))))
            gone.end = t
        elif change == "replace":
            for gone in shown:
                gone.end = t
            shown.clear()
        if change != "leave":
            arrive(t, taken)
    return Clip(clip_id, "content", starts[-1], NATIVE_FPS, int(rng.integers(15, 110)), events)


def content_changes(clip: Clip | dict) -> list[float]:
    """The moments a shape appears or disappears, inside the clip (for a content clip: where its parts
    start)."""
    events = clip["events"] if isinstance(clip, dict) else [asdict(e) for e in clip.events]
    seconds = clip["seconds"] if isinstance(clip, dict) else clip.seconds
    moments = {round(float(e[key]), 1) for e in events for key in ("start", "end")}
    return sorted(m for m in moments if 0.0 < m < round(float(seconds), 1))


# -- datasets --------------------------------------------------------------------------------------

SPLIT_SEEDS = {"train": 1000, "test": 2000}
WORD_POOL_SEED = 800  # added to the split's seed for make_clips(word_pool=...)


def make_clips(split: str, *, n_single: int, n_sequence: int, n_needle: int = 0,
               needle_seconds: int | tuple[int, int] = 3600,
               seed: int = 0, word_pool: float = 0.0) -> list[Clip]:
    """The clip designs of one split (cheap: nothing is rendered). Splits draw from different seeds.

    ``word_pool``: the share of clips whose subtitle says a code word of TRAIN_CODE_WORDS instead (drawn
    from a seed of its own, after the fact: the videos, and so their cached features, stay the same)."""
    rng = np.random.default_rng(SPLIT_SEEDS[split] + seed)
    clips = [single_clip(rng, f"{split}-single-{i:04d}") for i in range(n_single)]
    clips += [sequence_clip(rng, f"{split}-sequence-{i:04d}") for i in range(n_sequence)]
    for i in range(n_needle):
        if isinstance(needle_seconds, (tuple, list)):
            length = int(rng.integers(needle_seconds[0], needle_seconds[1] + 1))
        else:
            length = int(needle_seconds)
        clips.append(needle_clip(rng, f"{split}-needle-{i:04d}", length))
    if word_pool > 0:
        pool_rng = np.random.default_rng(SPLIT_SEEDS[split] + WORD_POOL_SEED + seed)
        for clip in clips:
            if clip.subtitles and pool_rng.random() < word_pool:
                word = TRAIN_CODE_WORDS[int(pool_rng.integers(len(TRAIN_CODE_WORDS)))]
                start, end, _ = clip.subtitles[0]
                clip.subtitles = [(start, end, f"The code word is {word}.")]
                clip.qa = [(t, q, word if t == "subtitle" else a) for t, q, a in clip.qa]
    return clips


# added to the split's seed: new designs never shift the old ones
# each design's own seed offset (two designs may share one: their clips differ all the same, and the figures
# measured on "pick" and "content" were measured with these)
EXTRA_SEEDS = {"window": 300, "scenes": 400, "pick": 500, "content": 500, "haystack": 600, "search": 700,
               "check": 900}


def make_extra_clips(split: str, kind: str, n: int, *, seed: int = 0, **design) -> list[Clip]:
    """``n`` clips of a design added after the original set (``window``, ``scenes``, ``pick`` or
    ``content``), drawn from their own seed so that the clips of ``make_clips`` stay exactly as they were."""
    make = {"window": window_clip, "scenes": scene_clip, "pick": pick_clip, "content": content_clip}[kind]
    rng = np.random.default_rng(SPLIT_SEEDS[split] + EXTRA_SEEDS[kind] + seed)
    return [make(rng, f"{split}-{kind}-{i:04d}", **design) for i in range(n)]


CHOICE_POOLS = {"color": tuple(COLORS), "shape": SHAPES, "count": NUMBERS[1:], "first": tuple(COLORS),
                "last": tuple(COLORS)}


def choice_items(items: list[dict], *, n_options: int = 4, seed: int = 0) -> list[dict]:
    """Multiple-choice versions of the questions whose answers come from a fixed pool (colour, shape,
    count, first, last): the right answer and distractors from its pool, in a random order.

    Items: {"id", "video", "question", "options", "answer" (the right option's letter), "question_type"}.
    """
    rng = np.random.default_rng(seed)
    out = []
    for item in items:
        pool = CHOICE_POOLS.get(item["question_type"])
        if pool is None:
            continue
        others = [o for o in pool if o != item["answer"]]
        picked = [others[i] for i in rng.permutation(len(others))[: n_options - 1]] + [item["answer"]]
        options = [picked[i] for i in rng.permutation(len(picked))]
        question = item["conversations"][0]["value"].replace("<image>", "").strip()
        out.append({"id": item["id"], "video": item["video"], "question": question, "options": options,
                    "answer": "ABCDEFGH"[options.index(item["answer"])], "question_type": item["question_type"]})
    return out


def write_split(clips: list[Clip], folder: str | os.PathLike, *, on_progress: Callable[[int, int], None] | None = None,
                subtitles: bool = True) -> Path:
    """Render the clips into ``folder`` (videos + sibling .srt) and write ``qa.json``, a LLaVA-style list.

    Each question is one item: {"id", "video", "conversations", "question_type", "answer", "long"}.
    Subtitle and needle questions are marked ``long`` (they use the long-video prompt). A rerun skips
    videos already written, so an interrupted generation continues.
    """
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    items = []
    for n, clip in enumerate(clips):
        video = folder / "videos" / f"{clip.id}.mp4"
        if not video.exists():
            write_clip(clip, video, seed=hash_seed(clip.id))
        if subtitles and clip.subtitles:
            write_srt(clip.subtitles, video.with_suffix(".srt"))
        for q, (qtype, question, answer) in enumerate(clip.qa):
            if qtype == "subtitle" and not subtitles:
                continue
            extra = {}
            if qtype in ("pick", "check"):  # where the asked kind (and a check's colour) is, frame by frame
                kind = next(k for k in SHAPES if f" {k}" in question)  # (training can ground the question)
                extra["grounding"] = {"kind": kind, "events": [asdict(e) for e in clip.events]}
                if qtype == "check":
                    extra["grounding"]["color"] = next(c for c in COLORS if f" {c} " in question)
            items.append({
                "id": f"{clip.id}-q{q}", "video": f"videos/{video.name}",
                "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
                "question_type": qtype, "answer": answer,
                "long": qtype in ("subtitle", "needle") or (qtype == "pick" and clip.kind == "haystack"), **extra,
            })
        if on_progress:
            on_progress(n + 1, len(clips))
    (folder / "clips.json").write_text(json.dumps([asdict(c) for c in clips]) + "\n")
    write_text_atomic(folder / "qa.json", json.dumps(items, indent=1) + "\n")
    return folder / "qa.json"


def hash_seed(text: str) -> int:
    """A stable per-clip noise seed (Python's hash() changes between runs)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def vocabulary() -> list[str]:
    """Every word the set uses: for building the demo model's tokenizers."""
    words: set[str] = set()
    for q in question_texts():
        words.update(q.lower().replace("?", " ").replace(".", " ").split())
    words.update(COLORS)
    words.update(SHAPES)
    words.update(NUMBERS)
    words.update(CODE_WORDS)
    words.update("the code word is below a movie memorize content and answer my question after watching "
                 "this now end".split())
    return sorted(words)


def main(argv: list[str] | None = None) -> None:
    """python -m llamavid.data.synthetic OUT [--split test] [--single N] [--sequence N]
    [--needle N --needle-seconds S]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m llamavid.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="test", choices=sorted(SPLIT_SEEDS))
    parser.add_argument("--single", type=int, default=10)
    parser.add_argument("--sequence", type=int, default=10)
    parser.add_argument("--needle", type=int, default=0)
    parser.add_argument("--needle-seconds", type=int, default=3600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clips = make_clips(args.split, n_single=args.single, n_sequence=args.sequence, n_needle=args.needle,
                       needle_seconds=args.needle_seconds, seed=args.seed)
    print(write_split(clips, args.out))


if __name__ == "__main__":
    main()
