"""Teach the text-guided attention to find what a phrase names ("a purple ring"): the demo recipe's step after
stage 3.

The context token is the patches weighted by how well each matches the question (``TokenGenerator``), and
``llamavid search`` and look-closer's pass 1 rank frames by that match (``LlamaVid.context_relevance``). A
demo model trained only through the LLM learns to find the *kind* a question names but not its colour:
frames of a red ring score as high as the purple ring asked about (docs/RESULTS.md, "Search"). Here the
QFormer and the attention's two projectors learn it directly, on many still frames drawn like the search
library's (one large shape, or two smaller ones side by side, every colour and kind), with the frozen
encoder's features:

- within a frame, the attention should sit on the patches of the shape the phrase names (colour and kind),
  or on the empty background when the frame does not show it;
- across frames, a frame that shows it should score higher (log-sum-exp of its patches' scores) than frames
  that show the same kind in another colour, the same colour on another kind, or anything else.

Both are ``objective.attention_loss``, the loss the stages use for grounded questions, with a pairwise
ranking term (``ranking_loss``). A third term (``keep_loss``) holds the attention scores of every question the
model was trained on where they were, against a frozen copy of the model as it came: the LLM reads the
context tokens those scores make, and look-closer ranks frames by them (without it, its pass 1 lost the
needle while the short-clip answers held: docs/RESULTS.md, "Phrases"). Nothing here trains
the LLM, and the encoder stays frozen.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import synthetic as syn
from ..features.search_index import IndexSettings
from ..model.checkpoint import VISION_TOWER_NAME
from ..model.qformer import encode_questions
from .objective import attention_loss

PHRASES = ("a {color} {kind}", "the {color} {kind}")  # the search library's visual queries' forms
# how often a step's pictures are whole frames (0) or a search index's summaries of 1, 2 or 3 runs
SUMMARY_PARTS = (0.25, 0.25, 0.25, 0.25)
KEEP_WEIGHT = 10.0  # keep_loss's weight: the trained questions' attention scores held where they were
KEEP_FRAMES = 16  # frames a step holds them on


@dataclass
class PhraseFrames:
    """Still frames, the frozen encoder's features of them, and what each shows where."""

    features: torch.Tensor  # (n, 1 + P, C) float32, rounded through float16 as a .vidtok stores them
    shapes: list[list[tuple[str, str, np.ndarray]]]  # per frame: (colour, kind, (P,) bool patches it covers)
    background: np.ndarray  # (n, P) bool: patches no shape covers

    def index(self) -> dict[tuple[str, str], list[int]]:
        """(colour, kind) -> the frames that show it."""
        out: dict[tuple[str, str], list[int]] = {}
        for i, shapes in enumerate(self.shapes):
            for color, kind, _ in shapes:
                out.setdefault((color, kind), []).append(i)
        return out


def draw_frames(rng: np.random.Generator, n: int, *, two_shapes: float = 0.5, empty: float = 0.05
                ) -> tuple[np.ndarray, list[list[tuple[str, str, np.ndarray]]], np.ndarray]:
    """n frames like the search library's: nothing (``empty``), two smaller shapes side by side (``two_shapes``;
    any two colour-kind pairs, the same kind in two colours included), or one large shape."""
    grid = syn.SIZE // 14
    cover = lambda m: m.reshape(grid, 14, grid, 14).mean(axis=(1, 3)).reshape(-1)  # noqa: E731
    colors = list(syn.COLORS)
    frames = np.empty((n, syn.SIZE, syn.SIZE, 3), dtype=np.uint8)
    shapes, background = [], np.zeros((n, grid * grid), dtype=bool)
    for i in range(n):
        clip = syn.Clip("g", "still", 1.0, 1.0, int(rng.integers(15, 70)), [])
        u = rng.random()
        if u < empty:
            pass
        elif u < empty + two_shapes:
            first = (colors[int(rng.integers(len(colors)))], syn.SHAPES[int(rng.integers(len(syn.SHAPES)))])
            while True:
                second = (colors[int(rng.integers(len(colors)))], syn.SHAPES[int(rng.integers(len(syn.SHAPES)))])
                if second != first:
                    break
            side = int(rng.integers(2))
            clip.events += [syn._pair_event(rng, first[1], first[0], 0.0, 1.0, side),
                            syn._pair_event(rng, second[1], second[0], 0.0, 1.0, 1 - side)]
        else:
            r = float(rng.uniform(48, 68))
            p = syn._position(rng, r)
            color, kind = colors[int(rng.integers(len(colors)))], syn.SHAPES[int(rng.integers(len(syn.SHAPES)))]
            clip.events.append(syn.ShapeEvent(kind, color, 0.0, 1.0, p, p, r))
        frames[i] = syn.render_frame(clip, 0.5, syn.background(clip, int(rng.integers(1 << 30))))
        masks = [syn.shape_mask(e.shape, e.p0[0], e.p0[1], e.radius) for e in clip.events]
        shapes.append([(e.color, e.shape, cover(m) > 0.4) for e, m in zip(clip.events, masks)])
        anything = np.zeros((syn.SIZE, syn.SIZE), dtype=bool)
        for m in masks:
            anything |= m
        background[i] = cover(anything) < 0.05
    return frames, shapes, background


def phrase_frames(model, rng: np.random.Generator, n: int, *, batch: int = 64) -> PhraseFrames:
    """Draw n frames and encode them with the model's frozen encoder."""
    frames, shapes, background = draw_frames(rng, n)
    feats = torch.cat([model.encode_frames(frames[i: i + batch]).float().cpu()
                       for i in range(0, n, batch)]).half().float()
    return PhraseFrames(feats, shapes, background)


def phrase_targets(data: PhraseFrames, frames: list[int], color: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the attention should go in each frame for "a {color} {kind}": (targets (n, P), shown (n,))."""
    targets, shown = [], []
    for i in frames:
        want = _named(data, i, color, kind)
        on = bool(want.any())
        if not on:
            want = data.background[i] if data.background[i].any() else np.ones_like(want)
        targets.append(want / want.sum())
        shown.append(on)
    return torch.as_tensor(np.stack(targets), dtype=torch.float32), torch.as_tensor(shown)


def _named(data: PhraseFrames, frame: int, color: str, kind: str) -> np.ndarray:
    """(P,) bool: the patches of frame ``frame`` that the named colour and kind cover."""
    want = np.zeros_like(data.background[frame])
    for c, k, patches in data.shapes[frame]:
        if (c, k) == (color, kind):
            want |= patches
    return want


def _cells(mask: np.ndarray, grid: int) -> np.ndarray:
    """(P,) patch mask -> (grid * grid,) share of each cell's patches it covers (as the index pools them)."""
    side = int(round(len(mask) ** 0.5))
    s = side // grid
    return mask.reshape(grid, s, grid, s).mean(axis=(1, 3)).reshape(-1)


def summary_pictures(data: PhraseFrames, frames: list[int], parts: int, color: str, kind: str,
                     rng: np.random.Generator, grid: int, partners: dict[int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each frame as a search index's summary of a stretch of ``parts`` runs (``features.search_index``): the
    frame and ``parts - 1`` others drawn at random, in random order, each pooled to ``grid`` x ``grid`` (float16,
    as stored) after their mean class token; ``partners`` (position in ``frames`` -> frame): that frame is one of
    the others (``pick_batch``'s lures). -> (pictures (n, 1 + parts * grid^2, C), targets (n, parts *
    grid^2): the cells the named shape covers, weighted by how much, else the empty cells; shown (n,))."""
    from ..model.tokens import pool_content

    pictures, targets, shown = [], [], []
    partners = partners or {}
    for n, i in enumerate(frames):
        members = [i] + [int(x) for x in rng.integers(len(data.features), size=parts - 1)]
        if parts > 1 and n in partners:
            members[1] = partners[n]
        members = [members[k] for k in rng.permutation(parts)]
        feats = data.features[members]  # (parts, 1 + P, C)
        pooled = pool_content(feats[:, 1:], f"grid:{grid}").flatten(0, 1)  # (parts * grid^2, C)
        pictures.append(torch.cat([feats[:, 0].mean(0, keepdim=True), pooled]).half().float())
        want = np.concatenate([_cells(_named(data, m, color, kind).astype(np.float32), grid) for m in members])
        on = bool((want > 0).any())
        if not on:
            empty = np.concatenate([_cells((~data.background[m]).astype(np.float32), grid) for m in members]) < 0.05
            want = empty.astype(np.float32) if empty.any() else np.ones_like(want)
        targets.append(want / want.sum())
        shown.append(on)
    return (torch.stack(pictures), torch.as_tensor(np.stack(targets), dtype=torch.float32),
            torch.as_tensor(shown))


def pick_batch(rng: np.random.Generator, index: dict[tuple[str, str], list[int]], n_frames: int,
               size: int, *, lures: float = 0.0) -> tuple[str, str, list[int], dict[int, int]]:
    """A phrase's colour and kind and a batch of frames for it: a quarter show it, a quarter the same kind in
    another colour, a quarter the same colour on another kind, a quarter anything.

    ``lures``: this share of the batch, taken from the last quarter, are *lures*: pictures that hold both
    halves of the phrase apart, never together (a red bar beside a blue ring for "a red ring"). Half of them
    are such frames; the other half pair a frame of the same kind in another colour with a frame of the same
    colour on another kind, which a search index's summary puts side by side (``partners``: position in
    ``chosen`` -> the frame to put beside it; whole frames ignore it). A stretch that shows the colour in one
    run and the kind in another is the search's commonest wrong answer (docs/RESULTS.md, "The best run of a
    stretch", where lures are measured: two seeds of three found more, the third learned no colour).
    -> (colour, kind, chosen, partners)."""
    pairs = sorted(index)
    color, kind = pairs[int(rng.integers(len(pairs)))]
    same_kind = [i for (c, k), ids in index.items() if k == kind and c != color for i in ids]
    same_color = [i for (c, k), ids in index.items() if c == color and k != kind for i in ids]
    q = size // 4
    chosen = [int(x) for pool in (index[(color, kind)], same_kind, same_color)
              for x in rng.choice(pool, size=min(q, len(pool)), replace=False)]
    partners: dict[int, int] = {}
    n_lures = min(int(round(size * lures)), size - len(chosen))
    if n_lures > 0 and same_kind and same_color:
        right = set(index[(color, kind)])
        both = sorted((set(same_kind) & set(same_color)) - right)
        apart = [i for i in same_kind if i not in right]
        others = [i for i in same_color if i not in right]
        for n in range(n_lures):
            if n % 2 == 0 and both:
                chosen.append(int(both[int(rng.integers(len(both)))]))
            elif apart and others:
                partners[len(chosen)] = int(others[int(rng.integers(len(others)))])
                chosen.append(int(apart[int(rng.integers(len(apart)))]))
    chosen += [int(x) for x in rng.choice(n_frames, size=size - len(chosen), replace=False)]
    return color, kind, chosen, partners


def phrase_logits(model, phrase: str, feats: torch.Tensor, long_video: bool = False) -> torch.Tensor:
    """The phrase's text-guided attention scores over each frame's patches: (n, 32, P), as
    ``LlamaVid.context_relevance`` computes them."""
    ids, mask = encode_questions(model.qformer_tokenizer, [phrase], device=feats.device)
    image, patches = model._vision_inputs(feats, long_video)
    query_out = model.qformer(ids.expand(len(feats), -1), mask.expand(len(feats), -1), image)
    return model.tokens.context_logits(query_out, patches)


def keep_loss(model, teacher, text: str, feats: torch.Tensor, long_video: bool) -> torch.Tensor:
    """How far a question's text-guided attention scores (n, 32, P) have moved from the model's own before this
    stage (mean squared error over their variance). The scores decide both the context token the LLM reads
    (their softmax over the patches) and how look-closer's pass 1 ranks frames (their log-sum-exp), so the
    attention may learn phrases only where the questions' scores stay as they were."""
    with torch.no_grad():
        before = phrase_logits(teacher, text, feats, long_video).float()
    now = phrase_logits(model, text, feats, long_video).float()
    return ((now - before) ** 2).mean() / before.var().clamp_min(1e-9)


def ranking_loss(logits: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """Every picture that shows what the phrase names above every picture that does not, pair by pair (a
    logistic surrogate of the AUC): a search ranks one right moment among hundreds of stretches, so the
    ranking itself is taught, not only the share of the batch's softmax the right pictures get."""
    score = logits.float().logsumexp(-1).mean(-1)  # (n,) what search and look-closer rank by
    pos, neg = score[shown], score[~shown]
    if len(pos) == 0 or len(neg) == 0:
        return score.new_zeros(())
    return torch.nn.functional.softplus(neg[None, :] - pos[:, None]).mean()


def trained_parameters(model) -> list[torch.nn.Parameter]:
    """What decides the attention: the QFormer and the context attention's query and key projectors."""
    return (list(model.qformer.parameters()) + list(model.tokens.query_projector.parameters())
            + list(model.tokens.key_projector.parameters()))


def train_phrases(model, *, steps: int, frames: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                  summary_grid: int = IndexSettings().grid, keep: float = KEEP_WEIGHT, lures: float = 0.0,
                  on_log: Callable[[dict], None] | None = None) -> list[float]:
    """Train the model's text-guided attention on phrases over ``frames`` drawn still frames (in place): on
    whole frames, and on the summaries a search index keeps of a stretch (``summary_grid``: the index's grid).
    ``keep``: the weight of ``keep_loss``, which holds the attention scores of the questions the model already
    answers where they were. ``lures``: the share of each batch that holds the phrase's colour and kind apart
    (``pick_batch``)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = phrase_frames(model, rng, frames)
    index = data.index()
    teacher = copy.deepcopy(model).eval()  # the model as it came: where its questions' attention scores were
    questions = syn.question_texts(named_kinds=True)
    params = trained_parameters(model)
    was = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        color, kind, chosen, partners = pick_batch(rng, index, len(data.features), batch, lures=lures)
        phrase = PHRASES[int(rng.integers(len(PHRASES)))].format(color=color, kind=kind)
        parts = int(rng.choice(len(SUMMARY_PARTS), p=SUMMARY_PARTS))
        if parts == 0:  # whole frames (look-closer's pass 1, the context token)
            feats = data.features[chosen]
            target, shown = phrase_targets(data, chosen, color, kind)
        else:  # a stretch's summary in a search index
            feats, target, shown = summary_pictures(data, chosen, parts, color, kind, rng, summary_grid, partners)
        logits = phrase_logits(model, phrase, feats.to(model.device, model.dtype))
        shown = shown.to(logits.device)
        loss = attention_loss(logits, target.to(logits.device), shown) + ranking_loss(logits, shown)
        if keep > 0:  # a question the model was trained on, on some of the frames, in short or long-video mode
            kept = data.features[chosen[:KEEP_FRAMES]].to(model.device, model.dtype)
            loss = loss + keep * keep_loss(model, teacher, questions[int(rng.integers(len(questions)))], kept,
                                           long_video=bool(step % 2))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_log and (step % 100 == 0 or step == steps - 1):
            on_log({"step": step, "loss": float(np.mean(losses[-100:])), "seconds": time.perf_counter() - t0})
    model.eval()
    for p, flag in was.items():
        p.requires_grad_(flag)
    return losses


@torch.inference_mode()
def phrase_auc(model, data: PhraseFrames, *, parts: int = 0, grid: int = IndexSettings().grid,
               seed: int = 0) -> dict[str, float]:
    """On held-out frames (``parts`` 0) or summaries of ``parts`` runs (each frame with others drawn at random,
    ``summary_pictures``): for every colour-kind phrase, how often a picture that shows it outscores (the
    log-sum-exp of the attention's scores, what search ranks by) one showing the same kind in another colour,
    one showing the same colour on another kind, and any picture that does not show it (AUC, averaged over
    the phrases)."""
    index = data.index()
    out: dict[str, list[float]] = {"same_kind_other_color": [], "same_color_other_kind": [], "any_other": []}
    every = list(range(len(data.features)))
    for (color, kind), right in sorted(index.items()):
        phrase = PHRASES[0].format(color=color, kind=kind)
        if parts == 0:
            feats, shown = data.features, phrase_targets(data, every, color, kind)[1]
        else:
            feats, _, shown = summary_pictures(data, every, parts, color, kind, np.random.default_rng(seed), grid)
        scores = torch.cat([phrase_logits(model, phrase, feats[a: a + 256].to(model.device, model.dtype)).float()
                            .logsumexp(-1).mean(-1).cpu() for a in range(0, len(feats), 256)]).numpy()
        pos = np.nonzero(shown.numpy())[0]
        for name, wrong in (("same_kind_other_color", lambda c, k: k == kind and c != color),
                            ("same_color_other_kind", lambda c, k: c == color and k != kind),
                            ("any_other", lambda c, k: (c, k) != (color, kind))):
            others = sorted({i for (c, k), ids in index.items() if wrong(c, k) for i in ids} - set(pos.tolist())
                            if name != "any_other" else set(every) - set(pos.tolist()))
            if len(pos) and others:
                a, b = scores[pos][:, None], scores[others][None, :]
                out[name].append(float((a > b).mean() + 0.5 * (a == b).mean()))
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def phrase_stage(start: str | Path, dest: Path, *, steps: int, frames: int, seed: int, batch: int = 32,
                 lr: float = 1e-3, lures: float = 0.0, on_log: Callable[[dict], None] | None = None) -> Path:
    """The checkpoint at ``start`` with its attention trained on phrases, written to ``dest`` in the same layout
    (skipped when ``dest`` already holds one)."""
    from ..model.export import save_checkpoint
    from ..model.loading import load_model

    if (dest / "config.json").is_file():
        return dest
    start = Path(start)
    model = load_model(str(start), dtype="float32", device="cpu")
    train_phrases(model, steps=steps, frames=frames, batch=batch, lr=lr, seed=seed, lures=lures, on_log=on_log)
    # the encoder travels as it came: a file beside the weights (a fresh init) or inside them (an exported model)
    save_checkpoint(model, dest, fmt="safetensors", embed_vision=not (start / VISION_TOWER_NAME).is_file())
    for name in (VISION_TOWER_NAME, "generation_config.json"):
        if (start / name).is_file():
            shutil.copyfile(start / name, dest / name)
    return dest
