"""The training objective: next-token loss on the assistant's replies only.

A conversation is laid out exactly as it is at inference, piece by piece:

    [BOS] system USER: <image>\\n q1 ASSISTANT:   -> ignored (-100)
    reply1 </s>                                   -> targets
    USER: <image>\\n q2 ASSISTANT:                 -> ignored
    reply2 </s>                                   -> targets

Every human turn gets its own visual tokens, computed with that turn's question (as the published
imgsp_v1 training did). A sample may ask for some frames in detail (``"detail": {"frames": k, "grid": g}``):
k of its frames, picked by the sample's id, also get g x g content tokens after their own two, as
look-closer gives its key frames (``LlamaVid.prompt_embeddings(detail=...)``). A sample may also say where
what its question asks about is (``"grounding": {"kind", "events", "weight"}``, and ``"color"`` for check
questions; synthetic pick, check and haystack clips): then the text-guided attention is taught to look at it
(``grounding_loss``). A sample may also say when its answer is on screen (``"evidence": {"windows", "weight"}``,
seconds): then the LLM's attention from the positions that predict the reply to each frame, what
``ask --evidence`` ranks by, is taught to land on those frames (``evidence_loss``). Each piece is tokenized
the way inference tokenizes it (split at ``</s>``, each chunk with its sentencepiece dummy prefix), so what
is learned is what is asked later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..model.likelihood import eager_attention
from ..model.modeling import LlamaVid, Prompt
from ..model.prompt import get_template, image_message, movie_message, tokenize_prompt
from ..model.qformer import encode_questions

IGNORE = -100


def conversation_inputs(model: LlamaVid, item: dict, *, long_video: bool, max_tokens: int,
                        aux: list | None = None, evidence: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample -> (input embeddings (L, H), labels (L,)), truncated to max_tokens. ``aux``: where a
    grounded sample's ``grounding_loss`` is appended (weighted). ``evidence``: where a sample that says when
    its answer is on screen appends, per turn, what ``evidence_loss`` needs (``EvidenceTurn``)."""
    sample = item["sample"]
    feats = item["features"]
    template = get_template(model.config.conv_mode)
    tok = model.text_tokenizer
    embed = model.llm.get_input_embeddings()
    device = model.device
    pieces: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    if feats is not None:
        feats = feats.to(device, model.dtype)
    offset = 0  # where this turn's prompt starts in the sample's sequence
    for turn, (question, reply) in enumerate(sample.turns):
        if feats is None:
            message = question
        elif long_video:
            message = movie_message(item["frame_subtitles"] or [""] * feats.shape[0], question)
        else:
            message = image_message(question)
        text = template.render([(message, None)])
        if turn:
            text = (text[len(template.system + template.sep):] if template.style == "two"
                    else text[len(template.system):])
        ids = tokenize_prompt(text, tok)
        if turn:
            ids = ids[1:]  # BOS only at the very start
        blocks = []
        if feats is not None:
            q_ids, q_mask = encode_questions(model.qformer_tokenizer, [question], device=device)
            grounded = aux is not None and turn == 0 and sample.extra.get("grounding") and item.get("timestamps")
            if grounded:
                tokens, logits = model.frame_tokens(feats, q_ids, q_mask, long_video=long_video, return_logits=True)
                tokens, logits = tokens[0], logits[0]
                spec = sample.extra["grounding"]
                aux.append(float(spec.get("weight", 1.0)) * grounding_loss(logits, item["timestamps"], spec))
            else:
                tokens = model.frame_tokens(feats, q_ids, q_mask, long_video=long_video)[0]  # (T, k, H)
            blocks = model.visual_blocks(tokens, long_video=long_video,
                                         detail=_detail(model, feats, sample, long_video))
        prompt = model.embed_prompt(ids, blocks)
        target_ids = tok.encode(reply) + [tok.eos_id]
        target = embed(torch.tensor(target_ids, device=device))
        if (evidence is not None and blocks and sample.extra.get("evidence") and item.get("timestamps")
                and not sample.extra.get("detail")):  # (frames in detail: not one length a frame)
            at = Prompt(question, text, tuple(ids), feats.shape[0], long_video, prompt.shape[0],
                        model.config.conv_mode)  # this turn's prompt, as inference builds it
            turn_evidence = evidence_turn(model.frame_spans(at), offset, prompt.shape[0], len(target_ids),
                                          item["timestamps"], sample.extra["evidence"])
            if turn_evidence is not None and turn_evidence.answer[-1] + 1 < max_tokens:
                evidence.append(turn_evidence)
        pieces += [prompt, target.to(prompt.dtype)]
        labels += [torch.full((prompt.shape[0],), IGNORE, device=device), torch.tensor(target_ids, device=device)]
        offset += prompt.shape[0] + len(target_ids)
    embeds = torch.cat(pieces)[:max_tokens]
    return embeds, torch.cat(labels)[:max_tokens]


@dataclass(frozen=True)
class EvidenceTurn:
    """One reply's share of ``evidence_loss``: its frames' positions in the sample's sequence, the positions
    that predict the reply's tokens and its end token (the prompt's last and the reply's own, as
    ``PromptScorer.attention`` reads them), which frames show the answer, and the loss's weight."""

    frames: list[tuple[int, int]]  # [start, end) of each frame's tokens
    answer: list[int]
    on_screen: list[bool]
    weight: float


def evidence_turn(spans: list[tuple[int, int]], offset: int, prompt_length: int, n_reply: int, times,
                  spec: dict) -> EvidenceTurn | None:
    """Where one turn's frames (``spans``: ``LlamaVid.frame_spans`` of its prompt, without the subtitle text)
    and reply are in the sample's sequence, and which frames fall in ``spec["windows"]`` (seconds, [start,
    end)). None when no frame, or every frame, shows the answer (nothing to learn where to look)."""
    frames = [(offset + a, offset + b) for a, b in spans]
    on = [any(a <= t < b for a, b in spec["windows"]) for t in times[: len(frames)]]
    if len(frames) != len(times) or not any(on) or all(on):
        return None
    end = offset + prompt_length  # the reply's first position
    return EvidenceTurn(frames, list(range(end - 1, end - 1 + n_reply)), on, float(spec.get("weight", 1.0)))


def evidence_loss(attentions, row: int, turn: EvidenceTurn) -> torch.Tensor:
    """Teach the answer's attention to frames (``ask --evidence``) where the answer is: the attention weights
    from the positions that predict the reply, averaged over layers, heads and those positions, summed per
    frame and shared among the frames; -log of the share that lands on frames showing the answer.
    ``attentions``: one (B, heads, L, L) tensor per layer."""
    answer = torch.as_tensor(turn.answer, device=attentions[0].device)
    weights = torch.stack([a[row][:, answer].float() for a in attentions]).mean(dim=(0, 1, 2))  # (L,)
    per_frame = torch.stack([weights[a:b].sum() for a, b in turn.frames])
    share = per_frame / per_frame.sum().clamp_min(1e-12)
    on = torch.as_tensor(turn.on_screen, device=share.device)
    return -share[on].sum().clamp_min(1e-9).log()


def grounding_targets(times, spec: dict, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, where the attention should go: (target (n, grid*grid) distributions, whether the asked kind
    (of the asked colour, when ``spec`` names one) is on screen (n,)). Over its patches where it is on screen,
    else over the patches no shape covers (the frame holds nothing the question asks about)."""
    from ..data import synthetic as syn

    size = syn.SIZE
    cell = size // grid
    kind, color = spec["kind"], spec.get("color")  # a check question names the colour too
    targets, present = [], []
    for t in times:
        asked = np.zeros((size, size), dtype=bool)
        shapes = np.zeros((size, size), dtype=bool)
        for e in spec["events"]:
            if e["start"] <= t < e["end"]:
                a = (t - e["start"]) / max(e["end"] - e["start"], 1e-6)
                cx = e["p0"][0] + a * (e["p1"][0] - e["p0"][0])
                cy = e["p0"][1] + a * (e["p1"][1] - e["p0"][1])
                mask = syn.shape_mask(e["shape"], cx, cy, e["radius"])
                shapes |= mask
                if e["shape"] == kind and color in (None, e["color"]):
                    asked |= mask
        cover = lambda m: m.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).reshape(-1)  # noqa: E731
        on = cover(asked) > 0.4
        want = on if on.any() else cover(shapes) < 0.05
        if not want.any():
            want = np.ones(grid * grid, dtype=bool)
        targets.append(want / want.sum())
        present.append(bool(on.any()))
    return torch.as_tensor(np.stack(targets), dtype=torch.float32), torch.as_tensor(present)


def grounding_loss(logits: torch.Tensor, times, spec: dict) -> torch.Tensor:
    """Teach the question's text-guided attention where the thing it asks about is: (1) in each frame, the
    attention (averaged over the 32 queries) against the target of ``grounding_targets`` (the asked kind's
    patches, or the empty background when the frame does not show it); (2) across the frames, the frames
    that show it score higher (the log-sum-exp of their scores, look-closer's pass 1) than the others: a
    softmax over the frames against them. ``logits``: (n, 32, P)."""
    grid = int(round(logits.shape[-1] ** 0.5))
    target, present = grounding_targets(times, spec, grid)
    return attention_loss(logits, target.to(logits.device), present.to(logits.device))


def attention_loss(logits: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``grounding_loss`` given its targets: ``logits`` (n, 32, P) the attention's scores, ``target`` (n, P) where
    each frame's attention should go, ``present`` (n,) which frames show what is asked about."""
    attention = logits.float().softmax(-1).mean(1).clamp_min(1e-9)  # (n, P)
    within = -(target * attention.log()).sum(-1).mean()
    if not bool(present.any()) or bool(present.all()):
        return within
    across = -(logits.float().logsumexp(-1).mean(-1).log_softmax(0)[present]).mean()
    return within + across


def detail_frames(sample_id: str, n_frames: int, count: int) -> list[int]:
    """The frames of a sample given in detail: ``count`` of them, the same every epoch (drawn from its id)."""
    seed = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_frames, size=min(count, n_frames), replace=False))


def _detail(model: LlamaVid, feats: torch.Tensor, sample, long_video: bool) -> dict[int, torch.Tensor] | None:
    spec = sample.extra.get("detail")
    if not spec:
        return None
    positions = detail_frames(sample.id, feats.shape[0], int(spec["frames"]))
    patches = model._vision_inputs(feats[positions], long_video)[1]
    return dict(zip(positions, model.tokens.detail(patches, int(spec["grid"])).unbind(0)))


def batch_loss(model: LlamaVid, items: list[dict], *, max_tokens: int, long_video: bool | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over all target tokens of a (right-padded) batch, plus the grounding and
    evidence losses of the samples that have them (each summed and averaged over the batch). Samples with
    evidence go through the LLM apart, with eager attention (its weights are needed); the others as usual."""
    aux: list[torch.Tensor] = []
    turns: list[list[EvidenceTurn]] = [[] for _ in items]
    rows = [conversation_inputs(model, item, max_tokens=max_tokens, aux=aux, evidence=turns[i],
                                long_video=item["sample"].long_video or bool(long_video))
            for i, item in enumerate(items)]
    seen = [i for i in range(len(rows)) if turns[i]]
    if not seen:
        logits, labels, _ = _forward(model, rows)
        loss = _cross_entropy(logits, labels, "mean")
    else:
        plain = [i for i in range(len(rows)) if not turns[i]]
        total, count = None, 0
        for group in (plain, seen):
            if not group:
                continue
            logits, labels, attentions = _forward(model, [rows[i] for i in group], attend=group is seen)
            summed = _cross_entropy(logits, labels, "sum")
            total = summed if total is None else total + summed
            count += int((labels[:, 1:] != IGNORE).sum())
            for row, i in enumerate(group if attentions is not None else ()):
                aux += [turn.weight * evidence_loss(attentions, row, turn) for turn in turns[i]]
        loss = total / max(count, 1)
    if aux:  # the grounding and evidence of the samples that have them, averaged over the batch
        loss = loss + torch.stack(aux).sum() / len(items)
    return loss


def _forward(model: LlamaVid, rows: list[tuple[torch.Tensor, torch.Tensor]], *, attend: bool = False):
    """Right-pad the rows and run the LLM -> (logits (B, L, V), labels (B, L), attention weights per layer or
    None). ``attend``: with eager attention, which returns its weights (sdpa does not)."""
    longest = max(e.shape[0] for e, _ in rows)
    h = rows[0][0].shape[-1]
    embeds = rows[0][0].new_zeros(len(rows), longest, h)
    labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long, device=embeds.device)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
    for i, (e, lab) in enumerate(rows):
        embeds[i, : e.shape[0]] = e
        labels[i, : lab.shape[0]] = lab
        mask[i, : e.shape[0]] = 1
    if not attend:
        return model.llm(inputs_embeds=embeds, attention_mask=mask).logits, labels, None  # (B, L, V)
    with eager_attention(model.llm):
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, output_attentions=True)
    if not out.attentions:
        raise RuntimeError("the LLM returned no attention weights")
    return out.logits, labels, out.attentions


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                       ignore_index=IGNORE, reduction=reduction)


class TrainingModule(nn.Module):
    """What the optimizer and (for several processes) DDP/DeepSpeed see: forward(batch) -> loss."""

    def __init__(self, model: LlamaVid, *, max_tokens: int, long_video: bool | None = None):
        super().__init__()
        self.model = model
        self.max_tokens = max_tokens
        self.long_video = long_video

    def forward(self, items: list[dict]) -> torch.Tensor:
        return batch_loss(self.model, items, max_tokens=self.max_tokens, long_video=self.long_video)
