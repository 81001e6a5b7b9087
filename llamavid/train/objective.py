"""The training objective: next-token loss on the assistant's replies only.

A conversation is laid out exactly as it is at inference, piece by piece:

    [BOS] system USER: <image>\\n q1 ASSISTANT:   -> ignored (-100)
    reply1 </s>                                   -> targets
    USER: <image>\\n q2 ASSISTANT:                 -> ignored
    reply2 </s>                                   -> targets

Every human turn gets its own visual tokens, computed with that turn's question (as the published
imgsp_v1 training did). A sample may ask for some frames in detail (``"detail": {"frames": k, "grid": g}``):
k of its frames, picked by the sample's id, also get g x g content tokens after their own two, as
look-closer gives its key frames (``LlamaVid.prompt_embeddings(detail=...)``). Each piece is tokenized
the way inference tokenizes it (split at ``</s>``, each chunk with its sentencepiece dummy prefix), so
what is learned is what is asked later.
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


def conversation_inputs(model: LlamaVid, item: dict, *, long_video: bool,
                        max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample -> (input embeddings (L, H), labels (L,)), truncated to max_tokens."""
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
    rows = [conversation_inputs(model, item, max_tokens=max_tokens,
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
    return nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                       ignore_index=IGNORE)


class TrainingModule(nn.Module):
    """What the optimizer and (for several processes) DDP/DeepSpeed see: forward(batch) -> loss."""

    def __init__(self, model: LlamaVid, *, max_tokens: int, long_video: bool | None = None):
        super().__init__()
        self.model = model
        self.max_tokens = max_tokens
        self.long_video = long_video

    def forward(self, items: list[dict]) -> torch.Tensor:
        return batch_loss(self.model, items, max_tokens=self.max_tokens, long_video=self.long_video)
