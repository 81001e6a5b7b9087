"""Independent re-computations of the published formulas, straight from raw checkpoint tensors.

Nothing here imports llamavid: these functions are what the model's outputs are checked against.
"""

from __future__ import annotations

import math
import unicodedata

import torch
import torch.nn.functional as F


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def eva_features(sd: dict, pixels: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """EVA ViT (BLIP-2 variant) forward, plain: conv patches, CLS, position, `depth` pre-norm blocks, no final norm."""
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                 stride=sd["patch_embed.proj.weight"].shape[-1])
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1).transpose(1, 2)
    grid = int(math.isqrt(x.shape[1]))
    pos = sd["pos_embed"]
    src = int(math.isqrt(pos.shape[1] - 1))
    if src != grid:
        p = pos[:, 1:].reshape(1, src, src, c).permute(0, 3, 1, 2)
        p = (F.interpolate(p, size=(grid, grid), mode="bicubic", align_corners=False)
             .permute(0, 2, 3, 1).reshape(1, grid * grid, c))
        pos = torch.cat([pos[:, :1], p], dim=1)
    x = torch.cat([sd["cls_token"].expand(b, 1, c), x], dim=1) + pos
    hd = c // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros_like(sd[p + "attn.q_bias"]), sd[p + "attn.v_bias"]])
        qkv = h @ sd[p + "attn.qkv.weight"].T + bias
        q, k, v = qkv.split(c, dim=-1)
        q, k, v = (t.reshape(b, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, -1, c)
        x = x + o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        h = gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return x


def transformers_qformer(sd: dict, vocab: int, hidden: int, layers: int, heads: int, inter: int, enc_width: int):
    """transformers' InstructBlipQFormerModel given the checkpoint's QFormer tensors (renamed to its names)."""
    from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

    cfg = InstructBlipQFormerConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, encoder_hidden_size=enc_width, cross_attention_frequency=2,
        max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu",
        attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
    )
    model = InstructBlipQFormerModel(cfg).eval()
    prefix = "model.vlm_att_encoder.bert."
    mapped = {}
    for key, value in sd.items():
        if not key.startswith(prefix) or key.endswith("position_ids"):
            continue
        name = key[len(prefix):]
        name = name.replace("embeddings.LayerNorm", "embeddings.layernorm")
        name = name.replace(".attention.self.", ".attention.attention.").replace(".crossattention.self.",
                                                                                 ".crossattention.attention.")
        mapped[name] = value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert not [k for k in missing if "position_ids" not in k], missing
    return model


def qformer_queries(hf_qformer, sd: dict, input_ids, attention_mask, image: torch.Tensor) -> torch.Tensor:
    """Query outputs (B, 32, D): ln_vision on the image tokens, queries + text through transformers' QFormer."""
    img = F.layer_norm(image, (image.shape[-1],), sd["model.vlm_att_ln.weight"], sd["model.vlm_att_ln.bias"], eps=1e-5)
    queries = sd["model.vlm_att_query"].expand(image.shape[0], -1, -1)
    mask = torch.cat([torch.ones(image.shape[0], queries.shape[1], dtype=attention_mask.dtype), attention_mask], dim=1)
    out = hf_qformer(input_ids=input_ids, attention_mask=mask, query_embeds=queries, encoder_hidden_states=img,
                     encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long))
    return out.last_hidden_state[:, : queries.shape[1]]


def frame_tokens(sd: dict, queries: torch.Tensor, patches: torch.Tensor, compress: str | None,
                 projector: str) -> torch.Tensor:
    """The published two-token formulas, per frame, from raw tensors. queries (B, 32, D), patches (B, P, C)."""
    lin = lambda x, name: x @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731
    text_q = lin(queries, "model.vlm_att_projector")
    keys = lin(patches, "model.vlm_att_key_projector")
    c = patches.shape[-1]
    out = []
    for f in range(patches.shape[0]):
        scores = text_q[f] @ keys[f].T / math.sqrt(c)  # (32, P)
        att = torch.exp(scores - scores.max(-1, keepdim=True).values)
        att = att / att.sum(-1, keepdim=True)
        ctx = (att @ patches[f]).mean(0)  # (C,)
        ctx_token = lin(ctx, "model.vlm_att_val_projector")[None]
        x = patches[f]
        if compress is None:
            pooled = x
        elif compress.startswith("grid:"):
            n = int(compress.split(":")[1])
            side = math.isqrt(x.shape[0])
            s = side // n
            g = x.reshape(side, side, c)
            pooled = torch.stack([g[i * s:(i + 1) * s, j * s:(j + 1) * s].reshape(-1, c).mean(0)
                                  for i in range(side // s) for j in range(side // s)])
        else:
            pooled = x.mean(0, keepdim=True)
        if projector == "linear":
            content = lin(pooled, "model.mm_projector")
        else:
            content = lin(gelu(lin(pooled, "model.mm_projector.0")), "model.mm_projector.2")
        out.append(torch.cat([ctx_token, content]))
    return torch.stack(out)


# --- a plain WordPiece (BERT uncased) encoder ---------------------------------------------------------------

def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def wordpiece_ids(text: str, vocab: list[str]) -> list[int]:
    """[CLS] + greedy longest-match-first WordPiece of the lower-cased, accent-stripped, punctuation-split text +
    [SEP]."""
    index = {w: i for i, w in enumerate(vocab)}
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    words = []
    for token in text.split():
        cur = ""
        for ch in token:
            if _is_punct(ch):
                if cur:
                    words.append(cur)
                words.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            words.append(cur)
    ids = [index["[CLS]"]]
    for word in words:
        pieces, start, bad = [], 0, False
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in index:
                    found = sub
                    break
                end -= 1
            if found is None:
                bad = True
                break
            pieces.append(index[found])
            start = end
        ids.extend([index["[UNK]"]] if bad else pieces)
    ids.append(index["[SEP]"])
    return ids
