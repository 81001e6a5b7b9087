"""The instruction-aware QFormer (InstructBLIP's text decoder) and its BERT tokenizer.

The user's question and 32 learned queries go through a post-norm BERT encoder together; the queries
also cross-attend to the frame's vision tokens every other layer. The 32 query outputs, projected into
the vision width, later pick the frame's patches that matter for the question (the context token).

Parameter names are the checkpoint's BERT names (``bert.encoder.layer.{i}.attention.self.query``...)
with ``query_tokens`` for ``model.vlm_att_query`` and ``ln_vision`` for ``model.vlm_att_ln``. Sizes are
read from the tensors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import CheckpointError, Opt

HEAD_WIDTH = 64
BERT_EPS = 1e-12
MAX_TEXT_TOKENS = 256
DEFAULT_TOKENIZER_ID = "bert-base-uncased"

_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")


@dataclass(frozen=True)
class QFormerConfig:
    """Sizes of the QFormer, read from its weights."""

    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    encoder_width: int = 1408
    vocab_size: int = 30523
    max_positions: int = 512
    num_query: int = 32
    cross_attention_layers: tuple[int, ...] = (0, 2, 4, 6, 8, 10)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> "QFormerConfig":
        need = ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight", "query_tokens")
        missing = [k for k in need if k not in sd]
        if missing:
            raise CheckpointError(f"QFormer weights missing ({', '.join(missing)}; checkpoint keys "
                                  "model.vlm_att_encoder.bert.*, model.vlm_att_query)", where=source)
        vocab, hidden = sd["bert.embeddings.word_embeddings.weight"].shape
        if hidden % HEAD_WIDTH:
            raise CheckpointError(f"QFormer width {hidden} is not a multiple of the head width {HEAD_WIDTH}",
                                  where=source)
        layers = sorted({int(m.group(1)) for k in sd if (m := _LAYER.match(k))})
        if not layers or layers != list(range(len(layers))):
            raise CheckpointError(f"QFormer layers are missing or not numbered 0..n-1 ({layers[:8]})", where=source)
        cross = tuple(i for i in layers if f"bert.encoder.layer.{i}.crossattention.self.key.weight" in sd)
        if not cross:
            raise CheckpointError("no QFormer layer has cross-attention weights", where=source)
        query = sd["query_tokens"]
        return cls(
            hidden=int(hidden),
            layers=len(layers),
            heads=int(hidden) // HEAD_WIDTH,
            intermediate=int(sd["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            encoder_width=int(sd[f"bert.encoder.layer.{cross[0]}.crossattention.self.key.weight"].shape[1]),
            vocab_size=int(vocab),
            max_positions=int(sd["bert.embeddings.position_embeddings.weight"].shape[0]),
            num_query=int(query.shape[-2]),
            cross_attention_layers=cross,
        )


class BertSelfAttention(nn.Module):
    """Scaled dot-product attention with BERT's names; keys/values may come from another width."""

    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        split = lambda t: t.view(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, n, c)


class BertResidual(nn.Module):
    """Dense, then post-norm residual: LayerNorm(dense(h) + x). BERT calls it *Output."""

    def __init__(self, in_width: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=BERT_EPS)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + x)


class BertAttentionBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, kv_width)
        self.output = BertResidual(hidden, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT


class QFormerLayer(nn.Module):
    """Self-attention over [queries; text]; cross-attention and a separate FFN for the query positions."""

    def __init__(self, cfg: QFormerConfig, cross: bool):
        super().__init__()
        self.attention = BertAttentionBlock(cfg.hidden, cfg.heads, cfg.hidden)
        self.crossattention = BertAttentionBlock(cfg.hidden, cfg.heads, cfg.encoder_width) if cross else None
        self.intermediate = BertIntermediate(cfg.hidden, cfg.intermediate)
        self.output = BertResidual(cfg.intermediate, cfg.hidden)
        self.intermediate_query = BertIntermediate(cfg.hidden, cfg.intermediate)
        self.output_query = BertResidual(cfg.intermediate, cfg.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, n_query: int) -> torch.Tensor:
        x = self.attention(x, x, mask)
        q, text = x[:, :n_query], x[:, n_query:]
        if self.crossattention is not None:
            q = self.crossattention(q, image)  # all image tokens are valid: no mask
        q = self.output_query(self.intermediate_query(q), q)
        if text.shape[1] == 0:
            return q
        return torch.cat([q, self.output(self.intermediate(text), text)], dim=1)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=BERT_EPS)

    def forward(self, input_ids: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        text = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(torch.cat([queries, text.to(queries.dtype)], dim=1))


class BertEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, i in cfg.cross_attention_layers) for i in range(cfg.layers))


class Bert(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)


class QFormer(nn.Module):
    """Question + frame -> 32 query vectors (B, num_query, hidden)."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.config = cfg
        self.bert = Bert(cfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query, cfg.hidden))
        self.ln_vision = nn.LayerNorm(cfg.encoder_width)  # eps 1e-5, InstructBLIP's ln_vision
        self.gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """input_ids/attention_mask (B, L); image (B, N, encoder_width) raw vision tokens -> (B, num_query, hidden)."""
        b, nq = image.shape[0], self.config.num_query
        image = self.ln_vision(image)
        queries = self.query_tokens.expand(b, -1, -1)
        x = self.bert.embeddings(input_ids, queries)
        keep = torch.cat([attention_mask.new_ones(b, nq), attention_mask], dim=1).bool()
        mask = keep[:, None, None, :]  # (B, 1, 1, nq + L): bidirectional, padding hidden
        for layer in self.bert.encoder.layer:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, image, nq, use_reentrant=False)
            else:
                x = layer(x, mask, image, nq)
        return x[:, :nq]


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], *, source: str, what: str, device, dtype,
                display: Callable[[str], str] = lambda k: k) -> None:
    """load_state_dict(strict) with our own one-line message naming missing, unexpected and mis-shaped keys.

    ``display`` turns our parameter names into the names users know (the checkpoint's keys). Modules are
    built on the meta device and take the tensors as they are (assign), so loading never holds two copies.
    """
    own = module.state_dict(keep_vars=True)
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    wrong = [f"{display(k)} {list(sd[k].shape)} (expected {list(own[k].shape)})"
             for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append("missing keys " + _few([display(k) for k in missing]))
    if unexpected:
        problems.append("unexpected keys " + _few([display(k) for k in unexpected]))
    if wrong:
        problems.append("wrong shapes " + _few(wrong))
    if problems:
        raise CheckpointError(f"{source}: {what} weights do not match: " + "; ".join(problems))
    from .checkpoint import convert_tensors

    module.load_state_dict(convert_tensors(sd, device, dtype), strict=True, assign=True)


def _few(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def load_qformer_tokenizer(name_or_path: str | os.PathLike | None, *, checkpoint_dir: str | os.PathLike | None = None):
    """The QFormer's BERT tokenizer: bert-base-uncased plus ``[DEC]`` as bos, truncating from the LEFT.

    Looked up in this order: the explicit argument (a folder or a hub id), a ``qformer_tokenizer/`` folder
    inside the checkpoint directory, then the ``bert-base-uncased`` hub id (Hugging Face cache; offline
    when HF_HUB_OFFLINE=1). ``BertTokenizer(vocab_file=...)`` silently ignores the file in transformers 5,
    so only ``from_pretrained`` is used.
    """
    from transformers import BertTokenizer

    candidates: list[str] = []
    if name_or_path is not None:
        candidates.append(os.fspath(name_or_path))
    elif checkpoint_dir is not None and (Path(checkpoint_dir) / "qformer_tokenizer").is_dir():
        candidates.append(str(Path(checkpoint_dir) / "qformer_tokenizer"))
    else:
        candidates.append(DEFAULT_TOKENIZER_ID)
    source = candidates[0]
    if (os.path.isdir(source) and not (Path(source) / "vocab.txt").is_file()
            and not (Path(source) / "tokenizer.json").is_file()):
        raise CheckpointError("not a BERT tokenizer folder (no vocab.txt or tokenizer.json)", where=source)
    hint = ("give ", Opt("qformer_tokenizer", "PATH"), " (a folder with bert-base-uncased's vocab.txt) "
            "or put it in <checkpoint>/qformer_tokenizer/")
    try:
        tok = BertTokenizer.from_pretrained(source, truncation_side="left")
    except OSError as exc:
        raise CheckpointError(f"cannot load the QFormer's BERT tokenizer ({' '.join(str(exc).split())[:160]}); ", *hint,
                              where=source) from None
    if len(tok.get_vocab()) <= len(tok.all_special_tokens) + 1:
        # transformers 5 quietly builds a specials-only tokenizer when no vocabulary file is found
        raise CheckpointError("cannot load the QFormer's BERT tokenizer (no vocabulary found; offline or not cached); ",
                              *hint, where=source)
    if tok.bos_token != "[DEC]":
        tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.truncation_side = "left"
    return tok


def encode_questions(tokenizer, questions: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask of the QFormer's text input: [CLS] ... [SEP], left-truncated to 256, padded to the longest."""
    enc = tokenizer(list(questions), padding="longest", truncation=True, max_length=MAX_TEXT_TOKENS,
                    return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask
