"""A freshly initialised LLaMA-VID, written as a published-layout checkpoint to train from.

The published recipe starts from Vicuna, InstructBLIP's QFormer and EVA-CLIP; a model trained from
scratch (the demo) starts here instead: random weights with the same structure, the given tokenizers,
and a vision encoder file in the LAVIS layout. Training then reads it with the public loader like any
other checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.config import LlamaVidConfig
from ..model.export import save_checkpoint
from ..model.modeling import LlamaVid
from ..model.prompt import TextTokenizer
from ..model.qformer import QFormerConfig, load_qformer_tokenizer
from ..model.vision import VisionEncoder, VisionWeights, read_lavis_weights


@dataclass
class ModelSizes:
    llm_hidden: int = 256
    llm_layers: int = 4
    llm_heads: int = 4
    llm_intermediate: int = 688
    max_positions: int = 8192
    qformer_hidden: int = 128  # heads of 64, as BERT
    qformer_layers: int = 2
    qformer_intermediate: int = 256
    num_query: int = 32
    compress_type: str | None = "mean"
    projector: str = "mlp2x_gelu"
    token_types: str = "both"
    conv_mode: str = "vicuna_v1"
    long_video: bool = False
    tie_word_embeddings: bool = True


def init_checkpoint(destination: str | os.PathLike, *, sizes: ModelSizes, vision_tower: str | os.PathLike,
                    text_tokenizer: str | os.PathLike, qformer_tokenizer: str | os.PathLike, seed: int = 0) -> Path:
    """Write a randomly initialised model (sizes as given) to ``destination`` in the published layout."""
    torch.manual_seed(seed)
    dest = Path(destination)
    vision_path = Path(vision_tower)
    weights = VisionWeights(str(vision_path), lambda: read_lavis_weights(vision_path), 224)
    vcfg = weights.config()
    tok = TextTokenizer(text_tokenizer)
    bert = load_qformer_tokenizer(qformer_tokenizer)
    raw = {
        "architectures": ["LlavaLlamaAttForCausalLM"], "model_type": "llava",
        "hidden_size": sizes.llm_hidden, "intermediate_size": sizes.llm_intermediate,
        "num_hidden_layers": sizes.llm_layers, "num_attention_heads": sizes.llm_heads,
        "num_key_value_heads": sizes.llm_heads, "hidden_act": "silu", "max_position_embeddings": sizes.max_positions,
        "rms_norm_eps": 1e-5, "vocab_size": tok.vocab_size, "rope_theta": 10000.0, "rope_scaling": None,
        "tie_word_embeddings": sizes.tie_word_embeddings, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
        "pad_token_id": 0, "initializer_range": 0.02,
        "mm_vision_tower": "eva_vit_g.pth", "image_processor": "./llamavid/processor/clip-patch14-224",
        "mm_hidden_size": vcfg.width, "mm_projector_type": sizes.projector, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2, "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "bert_type": "qformer_pretrain", "num_query": sizes.num_query, "compress_type": sizes.compress_type,
        "image_aspect_ratio": "pad", "max_token": sizes.max_positions,
        "conv_mode": sizes.conv_mode, "long_video": sizes.long_video, "token_types": sizes.token_types,
    }
    cfg = LlamaVidConfig.from_dict(raw, source=str(dest / "config.json"))
    qcfg = QFormerConfig(hidden=sizes.qformer_hidden, layers=sizes.qformer_layers, heads=sizes.qformer_hidden // 64,
                         intermediate=sizes.qformer_intermediate, encoder_width=vcfg.width, vocab_size=len(bert),
                         max_positions=512, num_query=sizes.num_query,
                         cross_attention_layers=tuple(range(0, sizes.qformer_layers, 2)))
    model = LlamaVid.from_config(cfg, qcfg, text_tokenizer=tok, qformer_tokenizer=bert,
                                 vision_encoder=VisionEncoder(weights), name=str(dest), device="cpu")
    save_checkpoint(model, dest, fmt="safetensors")
    shutil.copyfile(vision_path, dest / "eva_vit_g.pth")
    (dest / "generation_config.json").write_text(json.dumps({"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id})
                                                 + "\n")
    return dest
