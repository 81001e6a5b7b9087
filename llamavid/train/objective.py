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
(``grounding_loss``). Each piece is tokenized the way inference tokenizes it (split at ``</s>``, each chunk
with its sentencepiece dummy prefix), so what is learned is what is asked later.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from ..model.modeling import LlamaVid
from ..model.prompt import get_template, image_message, movie_message, tokenize_prompt
from ..model.qformer import encode_questions

IGNORE = -100


def conversation_inputs(model: LlamaVid, item: dict, *, long_video: bool, max_tokens: int,
                        aux: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample -> (input embeddings (L, H), labels (L,)), truncated to max_tokens. ``aux``: where a
    grounded sample's ``grounding_loss`` is appended (weighted)."""
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
        pieces += [prompt, target.to(prompt.dtype)]
        labels += [torch.full((prompt.shape[0],), IGNORE, device=device), torch.tensor(target_ids, device=device)]
    embeds = torch.cat(pieces)[:max_tokens]
    return embeds, torch.cat(labels)[:max_tokens]


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
    """Mean next-token cross-entropy over all target tokens of a (right-padded) batch."""
    aux: list[torch.Tensor] = []
    rows = [conversation_inputs(model, item, max_tokens=max_tokens, aux=aux,
                                long_video=item["sample"].long_video or bool(long_video)) for item in items]
    longest = max(e.shape[0] for e, _ in rows)
    h = rows[0][0].shape[-1]
    embeds = rows[0][0].new_zeros(len(rows), longest, h)
    labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long, device=embeds.device)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
    for i, (e, lab) in enumerate(rows):
        embeds[i, : e.shape[0]] = e
        labels[i, : lab.shape[0]] = lab
        mask[i, : e.shape[0]] = 1
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, L, V)
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                       ignore_index=IGNORE)
    if aux:  # the grounding of the samples that have it, averaged over the batch
        loss = loss + torch.stack(aux).sum() / len(items)
    return loss


class TrainingModule(nn.Module):
    """What the optimizer and (for several processes) DDP/DeepSpeed see: forward(batch) -> loss."""

    def __init__(self, model: LlamaVid, *, max_tokens: int, long_video: bool | None = None):
        super().__init__()
        self.model = model
        self.max_tokens = max_tokens
        self.long_video = long_video

    def forward(self, items: list[dict]) -> torch.Tensor:
        return batch_loss(self.model, items, max_tokens=self.max_tokens, long_video=self.long_video)
