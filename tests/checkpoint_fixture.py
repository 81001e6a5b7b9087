"""Build a tiny random LLaMA-VID checkpoint in the PUBLISHED layout, offline, for tests.

What it writes, as the release has it:
    config.json                         model_type "llava", LlamaVidAtt keys, LLaMA fields
    generation_config.json
    pytorch_model-0000k-of-0000n.bin    torch-saved state dicts with the published key names
    pytorch_model.bin.index.json        {"metadata": {...}, "weight_map": {key: shard}}
    tokenizer.model                     a sentencepiece model trained here (LLaMA ids: unk 0, bos 1, eos 2)
    tokenizer_config.json, special_tokens_map.json
    qformer_tokenizer/vocab.txt         a small BERT WordPiece vocabulary ([DEC] is added by the loader)
and, elsewhere, a LAVIS-layout ``eva_vit_g.pth`` (``cls_token``, ``blocks.{i}.attn.q_bias``...).

Sizes are tiny but keep the real structure: vision width 176 (2 heads of 88), 224 px -> 257 tokens; QFormer
width 128 (2 heads of 64), cross-attention every 2nd layer; LLaMA width 64.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

VISION_WIDTH = 176
VISION_BLOCKS_IN_FILE = 3
VISION_MLP = 240
QF_HIDDEN = 128
QF_LAYERS = 2
QF_INTER = 256
NUM_QUERY = 32
LLM_HIDDEN = 64
LLM_LAYERS = 2
LLM_HEADS = 4
LLM_INTER = 128
SP_VOCAB = 420

BERT_WORDS = (
    "what who where when why how is are was the a an of in on to and color colour shape video movie "
    "does do happen happens first last many count dog cat red green blue yellow circle square triangle "
    "murphy say says said moving appear appears this that it there describe summarize scene people man woman"
).split()

SP_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: What color is the shape? ASSISTANT: red",
    "Below is a movie. Memorize the content and answer my question after watching this movie.",
    "Now the movie end. Who is Murphy? What happens in the video?",
    "The red circle moves left. A green square appears first. How many shapes are there? three",
    "Describe the video in detail. Summarize the scene. The dog runs; the cat sleeps.",
] * 4


@dataclass
class TinyCheckpoint:
    """Paths and raw tensors of a built fixture (the raw tensors feed independent re-computations)."""

    path: Path
    vision_path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]
    vision_state_dict: dict[str, torch.Tensor]
    extra: dict = field(default_factory=dict)


def _randn(gen: torch.Generator, *shape: int, std: float = 0.02) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


def _linear(sd: dict, prefix: str, out_f: int, in_f: int, gen: torch.Generator, std: float = 0.02,
            bias: bool = True) -> None:
    sd[prefix + ".weight"] = _randn(gen, out_f, in_f, std=std)
    if bias:
        sd[prefix + ".bias"] = _randn(gen, out_f, std=std)


def _layer_norm(sd: dict, prefix: str, width: int, gen: torch.Generator) -> None:
    sd[prefix + ".weight"] = 1.0 + _randn(gen, width, std=0.1)
    sd[prefix + ".bias"] = _randn(gen, width, std=0.1)


def make_eva_state_dict(gen: torch.Generator, *, width: int = VISION_WIDTH, blocks: int = VISION_BLOCKS_IN_FILE,
                        mlp: int = VISION_MLP, grid: int = 16, patch: int = 14) -> dict[str, torch.Tensor]:
    """A random EVA ViT in LAVIS key names (like eva_vit_g.pth, which holds one block more than is used)."""
    sd: dict[str, torch.Tensor] = {
        "cls_token": _randn(gen, 1, 1, width, std=0.5),
        "pos_embed": _randn(gen, 1, 1 + grid * grid, width, std=0.5),
        "patch_embed.proj.weight": _randn(gen, width, 3, patch, patch, std=0.05),
        "patch_embed.proj.bias": _randn(gen, width, std=0.05),
    }
    for i in range(blocks):
        b = f"blocks.{i}"
        _layer_norm(sd, b + ".norm1", width, gen)
        sd[b + ".attn.qkv.weight"] = _randn(gen, 3 * width, width, std=0.08)
        sd[b + ".attn.q_bias"] = _randn(gen, width, std=0.1)
        sd[b + ".attn.v_bias"] = _randn(gen, width, std=0.1)
        _linear(sd, b + ".attn.proj", width, width, gen, std=0.05)
        _layer_norm(sd, b + ".norm2", width, gen)
        _linear(sd, b + ".mlp.fc1", mlp, width, gen, std=0.05)
        _linear(sd, b + ".mlp.fc2", width, mlp, gen, std=0.05)
    return sd


def make_qformer_state_dict(gen: torch.Generator, vocab: int, *,
                            encoder_width: int = VISION_WIDTH) -> dict[str, torch.Tensor]:
    """QFormer tensors under the checkpoint's names (model.vlm_att_encoder.bert.*, vlm_att_query, vlm_att_ln)."""
    sd: dict[str, torch.Tensor] = {}
    p = "model.vlm_att_encoder.bert."
    sd[p + "embeddings.word_embeddings.weight"] = _randn(gen, vocab, QF_HIDDEN, std=0.5)
    sd[p + "embeddings.position_embeddings.weight"] = _randn(gen, 512, QF_HIDDEN, std=0.5)
    _layer_norm(sd, p + "embeddings.LayerNorm", QF_HIDDEN, gen)
    for i in range(QF_LAYERS):
        layer = f"{p}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            _linear(sd, layer + f"attention.self.{name}", QF_HIDDEN, QF_HIDDEN, gen, std=0.1)
        _linear(sd, layer + "attention.output.dense", QF_HIDDEN, QF_HIDDEN, gen, std=0.1)
        _layer_norm(sd, layer + "attention.output.LayerNorm", QF_HIDDEN, gen)
        if i % 2 == 0:  # cross-attention every 2nd layer, as InstructBLIP
            _linear(sd, layer + "crossattention.self.query", QF_HIDDEN, QF_HIDDEN, gen, std=0.1)
            _linear(sd, layer + "crossattention.self.key", QF_HIDDEN, encoder_width, gen, std=0.1)
            _linear(sd, layer + "crossattention.self.value", QF_HIDDEN, encoder_width, gen, std=0.1)
            _linear(sd, layer + "crossattention.output.dense", QF_HIDDEN, QF_HIDDEN, gen, std=0.1)
            _layer_norm(sd, layer + "crossattention.output.LayerNorm", QF_HIDDEN, gen)
        _linear(sd, layer + "intermediate.dense", QF_INTER, QF_HIDDEN, gen, std=0.1)
        _linear(sd, layer + "output.dense", QF_HIDDEN, QF_INTER, gen, std=0.1)
        _layer_norm(sd, layer + "output.LayerNorm", QF_HIDDEN, gen)
        _linear(sd, layer + "intermediate_query.dense", QF_INTER, QF_HIDDEN, gen, std=0.1)
        _linear(sd, layer + "output_query.dense", QF_HIDDEN, QF_INTER, gen, std=0.1)
        _layer_norm(sd, layer + "output_query.LayerNorm", QF_HIDDEN, gen)
    sd[p + "embeddings.position_ids"] = torch.arange(512)[None]  # saved by old transformers; ignored
    sd["model.vlm_att_query"] = _randn(gen, 1, NUM_QUERY, QF_HIDDEN, std=0.5)
    _layer_norm(sd, "model.vlm_att_ln", encoder_width, gen)
    return sd


def make_llm_state_dict(gen: torch.Generator, vocab: int, *, hidden: int = LLM_HIDDEN) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": _randn(gen, vocab, hidden, std=0.5)}
    for i in range(LLM_LAYERS):
        layer = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _linear(sd, layer + f"self_attn.{name}", hidden, hidden, gen, std=0.1, bias=False)
        _linear(sd, layer + "mlp.gate_proj", LLM_INTER, hidden, gen, std=0.1, bias=False)
        _linear(sd, layer + "mlp.up_proj", LLM_INTER, hidden, gen, std=0.1, bias=False)
        _linear(sd, layer + "mlp.down_proj", hidden, LLM_INTER, gen, std=0.1, bias=False)
        sd[layer + "input_layernorm.weight"] = 1.0 + _randn(gen, hidden, std=0.1)
        sd[layer + "post_attention_layernorm.weight"] = 1.0 + _randn(gen, hidden, std=0.1)
        sd[layer + "self_attn.rotary_emb.inv_freq"] = torch.rand(hidden // LLM_HEADS // 2)  # old-checkpoint buffer
    sd["model.norm.weight"] = 1.0 + _randn(gen, hidden, std=0.1)
    sd["lm_head.weight"] = _randn(gen, vocab, hidden, std=0.5)
    return sd


def make_projector_state_dict(gen: torch.Generator, *, vision: int = VISION_WIDTH, hidden: int = LLM_HIDDEN,
                              projector: str = "mlp2x_gelu") -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    _linear(sd, "model.vlm_att_projector", vision, QF_HIDDEN, gen, std=0.1)
    _linear(sd, "model.vlm_att_key_projector", vision, vision, gen, std=0.1)
    _linear(sd, "model.vlm_att_val_projector", hidden, vision, gen, std=0.1)
    if projector == "linear":
        _linear(sd, "model.mm_projector", hidden, vision, gen, std=0.1)
    else:
        _linear(sd, "model.mm_projector.0", hidden, vision, gen, std=0.1)
        _linear(sd, "model.mm_projector.2", hidden, hidden, gen, std=0.1)
    return sd


def train_sentencepiece(path: Path, vocab_size: int = SP_VOCAB) -> None:
    """A LLaMA-style sentencepiece BPE model (byte fallback, dummy prefix, unk/bos/eos = 0/1/2)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        num_threads=1, minloglevel=2, hard_vocab_limit=False,
    )
    path.write_bytes(buf.getvalue())


def write_bert_vocab(folder: Path) -> int:
    """A small uncased WordPiece vocabulary; returns its size (the loader adds [DEC] after it)."""
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = list(".,?!'\";:-")
    pieces = ["##s", "##ing", "##ed", "##ly", "##e", "##y", "##r", "##er", "mur", "##phy"]
    letters = list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = list(dict.fromkeys(specials + punct + BERT_WORDS + pieces + letters))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }), encoding="utf-8")
    return len(vocab)


def published_config(**overrides) -> dict:
    """config.json with the keys of the released short-video model, at tiny sizes."""
    cfg = {
        "_name_or_path": "./work_dirs/llama-vid/llama-vid-7b-full-224-video-fps-1",
        "architectures": ["LlavaLlamaAttForCausalLM"],
        "bert_type": "qformer_pretrain",
        "bos_token_id": 1,
        "compress_type": "mean",
        "eos_token_id": 2,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": LLM_HIDDEN,
        "image_aspect_ratio": "pad",
        "image_grid_pinpoints": None,
        "image_processor": "./llamavid/processor/clip-patch14-224",
        "initializer_range": 0.02,
        "intermediate_size": LLM_INTER,
        "max_position_embeddings": 4096,
        "max_token": 2048,
        "mm_hidden_size": VISION_WIDTH,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "./model_zoo/LAVIS/eva_vit_g.pth",
        "model_type": "llava",
        "num_attention_heads": LLM_HEADS,
        "num_hidden_layers": LLM_LAYERS,
        "num_key_value_heads": LLM_HEADS,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.31.0",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": SP_VOCAB,
    }
    cfg.update(overrides)
    return cfg


def write_shards(folder: Path, sd: dict[str, torch.Tensor], n_shards: int) -> None:
    """``pytorch_model-0000k-of-0000n.bin`` shards plus ``pytorch_model.bin.index.json``, as transformers 4.31 saved."""
    keys = list(sd)
    per = -(-len(keys) // n_shards)
    weight_map = {}
    total = 0
    for k in range(n_shards):
        name = f"pytorch_model-{k + 1:05d}-of-{n_shards:05d}.bin"
        part = {key: sd[key].contiguous() for key in keys[k * per : (k + 1) * per]}
        torch.save(part, folder / name)
        weight_map.update({key: name for key in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def build_tiny_checkpoint(root: Path, *, seed: int = 0, compress_type: str | None = "mean", n_shards: int = 2,
                          projector: str = "mlp2x_gelu", embed_vision: bool = False, qformer_tokenizer: bool = True,
                          **config_overrides) -> TinyCheckpoint:
    """Write the fixture under ``root``: ``root/ckpt`` (the checkpoint) and ``root/model_zoo/LAVIS/eva_vit_g.pth``."""
    gen = torch.Generator().manual_seed(seed)
    ckpt = root / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(ckpt / "tokenizer.model")
    import sentencepiece as spm

    sp_size = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model")).get_piece_size()
    bert_dir = ckpt / "qformer_tokenizer" if qformer_tokenizer else root / "bert_tokenizer"
    bert_vocab = write_bert_vocab(bert_dir)

    sd: dict[str, torch.Tensor] = {}
    sd.update(make_llm_state_dict(gen, sp_size))
    sd.update(make_qformer_state_dict(gen, bert_vocab + 1))
    sd.update(make_projector_state_dict(gen, projector=projector))
    vision_sd = make_eva_state_dict(gen)
    if embed_vision:  # full checkpoints also hold a bf16 copy of the vision encoder
        for k, v in vision_sd.items():
            sd["model.vision_tower.vision_tower." + k] = v.to(torch.bfloat16)
    write_shards(ckpt, sd, n_shards)

    config = published_config(compress_type=compress_type, mm_projector_type=projector, vocab_size=sp_size,
                              **config_overrides)
    (ckpt / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (ckpt / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "temperature": 0.9, "top_p": 0.6,
         "transformers_version": "4.31.0"}), encoding="utf-8")
    (ckpt / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False, "legacy": False,
        "model_max_length": 2048, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
    }), encoding="utf-8")
    (ckpt / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}), encoding="utf-8")

    vision_path = root / "model_zoo" / "LAVIS" / "eva_vit_g.pth"
    vision_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vision_sd, vision_path)
    return TinyCheckpoint(path=ckpt, vision_path=vision_path, config=config, state_dict=sd,
                          vision_state_dict=vision_sd, extra={"bert_dir": bert_dir, "bert_vocab": bert_vocab})
