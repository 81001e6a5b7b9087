"""Loading a checkpoint as published: ``load_model`` (the whole model) and ``load_vision_encoder`` (only
the vision encoder, for ``llamavid encode``).

The modules are built by ``build_modules`` on the meta device and take the checkpoint's tensors as they
are (``assign``), so loading never holds two copies of the weights; the model is then constructed once,
with everything it holds (modules, tokenizers, vision encoder, how the weights were loaded). Every component is
loaded strictly, with one-line errors naming the checkpoint keys that are missing, extra or mis-shaped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ..core.callbacks import NO_CALLBACKS, Callbacks
from ..core.errors import CheckpointError, InputError, Opt
from . import checkpoint as ckpt_io
from .config import LlamaVidConfig
from .devices import choose_dtype, select_device
from .memory import RUNTIME_OVERHEAD, SYSTEM, Probes, require_memory, tensor_bytes
from .modeling import LlamaVid, WeightsInfo, build_modules, finish_llm
from .prompt import TextTokenizer
from .qformer import QFormerConfig, load_qformer_tokenizer, load_strict
from .quantize import quantize_llm
from .vision import PUBLIC_WEIGHTS_URL, VisionEncoder, VisionWeights, read_lavis_weights


def resolve_checkpoint_dir(name_or_path: str | os.PathLike) -> Path:
    """A built-in name (the shipped demo), a local directory, or a Hugging Face id -> a local directory."""
    from .builtin import resolve_builtin

    return resolve_builtin(name_or_path) or ckpt_io.resolve_checkpoint(name_or_path)


def resolve_vision_weights(
    explicit: str | os.PathLike | None, cfg: LlamaVidConfig, ckpt: Path, embedded: Mapping[str, torch.Tensor]
) -> VisionWeights:
    """Explicit path, else an ``eva_vit_g.pth`` where the config says or beside the checkpoint, else the copy
    embedded in the checkpoint, else the public file in the user cache (downloaded there on first use).

    The cache comes after the embedded copy: a checkpoint that carries its own (e.g. the small ``demo``
    encoder) must not pick up the real EVA ViT-g another model left in the cache."""
    size = cfg.image_size
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CheckpointError("vision-tower weights file not found", where=explicit)
        return _checked(VisionWeights(str(path), lambda: read_lavis_weights(path), size))
    for path in ckpt_io.vision_tower_candidates(cfg.mm_vision_tower, ckpt):
        if path.is_file():
            weights = VisionWeights(str(path), lambda p=path: read_lavis_weights(p), size)
            if embedded and not _same_width(weights.state_dict(), embedded):
                continue  # another model's encoder (say the real EVA ViT-g where a small checkpoint's config points)
            return _checked(weights)
    if embedded:
        return _checked(VisionWeights(f"{ckpt} (embedded vision tower)", lambda: embedded, size))
    dest = ckpt_io.user_cache_dir() / ckpt_io.VISION_TOWER_NAME
    if dest.is_file():
        return _checked(VisionWeights(str(dest), lambda: read_lavis_weights(dest), size))
    return VisionWeights(
        str(dest), lambda: read_lavis_weights(ckpt_io.download_vision_tower(PUBLIC_WEIGHTS_URL, dest)), size
    )


def _same_width(found: Mapping[str, torch.Tensor], embedded: Mapping[str, torch.Tensor]) -> bool:
    """Whether a vision-tower file is the same encoder shape as the checkpoint's embedded copy."""
    key = "patch_embed.proj.weight"
    return key not in found or key not in embedded or tuple(found[key].shape) == tuple(embedded[key].shape)


def _checked(weights: VisionWeights) -> VisionWeights:
    weights.validate()  # fail now, not at the first frame, when the file is wrong
    return weights


def load_model(
    name_or_path: str | os.PathLike,
    *,
    vision_tower: str | os.PathLike | None = None,
    qformer_tokenizer: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    attn_implementation: str = "sdpa",
    callbacks: Callbacks = NO_CALLBACKS,
    probes: Probes = SYSTEM,
) -> LlamaVid:
    """Load a LLaMA-VID checkpoint (a local directory, a Hugging Face id or a built-in name) exactly as published.

    vision_tower: path to ``eva_vit_g.pth``; default: the config's path, the user cache, the copy embedded
    in full checkpoints, else the public URL on first use. qformer_tokenizer: a folder or id of the
    bert-base-uncased tokenizer; default: ``<checkpoint>/qformer_tokenizer``, else ``bert-base-uncased``.
    device/dtype: see ``llamavid.model.devices`` (no dtype on the CPU: bfloat16 where the CPU computes it natively
    or where float32 would not fit; the choice is reported through ``callbacks.say``). Weights that would
    not fit the memory available (``probes``) are refused before loading starts (``MemoryLimitError``).
    How the KV cache is kept is an option of each question (``AskOptions.kv_cache``), not of the model.
    """
    if load_in_8bit and load_in_4bit:
        raise InputError("choose one of 8-bit and 4-bit loading")
    ckpt = resolve_checkpoint_dir(name_or_path)
    cfg = LlamaVidConfig.from_json(ckpt / "config.json")
    dev = select_device(device)
    quantized = load_in_8bit or load_in_4bit
    llm_dev = torch.device("cpu") if quantized else dev

    groups = ckpt_io.route_checkpoint(ckpt)
    source = str(ckpt)
    bits = 8 if load_in_8bit else 4 if load_in_4bit else None
    choice = choose_dtype(dtype, dev, weight_bytes=lambda d: model_weight_bytes(groups, d, bits), probes=probes)
    dt = choice.dtype
    if choice.note:
        callbacks.say(choice.note)
    available = probes.available(dev)
    if dt is not None:
        check_weights_fit(source, groups, dt, bits, available)
    qcfg = QFormerConfig.from_state_dict(groups["qformer"], source=source)
    if qcfg.num_query != cfg.num_query:
        raise CheckpointError(f"config num_query {cfg.num_query} but model.vlm_att_query holds "
                              f"{qcfg.num_query} queries", where=source)
    qformer, tokens, llm = build_modules(cfg, qcfg, device="meta", attn_implementation=attn_implementation)
    for what, module, group, dest in (("QFormer", qformer, "qformer", dev), ("token-generator", tokens, "tokens", dev)):
        load_strict(module, groups[group], source=source, what=what, device=dest, dtype=dt,
                    display=lambda k, g=group: ckpt_io.to_checkpoint_key(f"{g}.{k}"))
    if qcfg.encoder_width != cfg.mm_hidden_size:
        raise CheckpointError(f"QFormer cross-attends to width {qcfg.encoder_width} but mm_hidden_size is "
                              f"{cfg.mm_hidden_size}", where=source)
    llm_sd = groups["llm"]
    if cfg.llm.get("tie_word_embeddings") and "lm_head.weight" not in llm_sd and "model.embed_tokens.weight" in llm_sd:
        llm_sd = dict(llm_sd, **{"lm_head.weight": llm_sd["model.embed_tokens.weight"]})
    load_strict(llm, llm_sd, source=source, what="LLM", device=llm_dev, dtype=dt,
                display=lambda k: ckpt_io.to_checkpoint_key("llm." + k))
    llm = finish_llm(llm, llm_dev)
    if quantized:
        llm = quantize_llm(llm, 8 if load_in_8bit else 4, dev, dt)

    text_tokenizer = TextTokenizer.from_dir(ckpt, eos_id=_config_eos(cfg))
    vocab_rows = llm.get_input_embeddings().weight.shape[0]
    if text_tokenizer.vocab_size > vocab_rows:
        raise CheckpointError(f"the tokenizer has {text_tokenizer.vocab_size} tokens but the LLM embeds only "
                              f"{vocab_rows}", where=source)
    bert_tok = load_qformer_tokenizer(qformer_tokenizer, checkpoint_dir=ckpt)
    if len(bert_tok) != qcfg.vocab_size:
        raise CheckpointError(
            f"{bert_tok.name_or_path}: the QFormer tokenizer has {len(bert_tok)} tokens but the QFormer embeds "
            f"{qcfg.vocab_size} (expected bert-base-uncased plus [DEC]); pass the right ", Opt("qformer_tokenizer"))
    vision_weights = resolve_vision_weights(vision_tower, cfg, ckpt, groups["vision"])
    vision = VisionEncoder(vision_weights, device=dev, dtype=dt, pad_images=cfg.image_aspect_ratio == "pad")
    # mapped weights still count as "available" (page cache): subtract them here
    left = None if available is None else max(0, available - model_weight_bytes(groups, dt, bits) - RUNTIME_OVERHEAD)
    model = LlamaVid(cfg, qformer=qformer, tokens=tokens, llm=llm, text_tokenizer=text_tokenizer,
                     qformer_tokenizer=bert_tok, vision_encoder=vision, name=os.fspath(name_or_path),
                     weights=WeightsInfo(bits=bits, memory_left=left))
    return model.eval()


_QUANTIZED_LINEAR = ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "self_attn.o_proj.",
                     "mlp.gate_proj.", "mlp.up_proj.", "mlp.down_proj.")
QUANTIZED_BYTES_PER_WEIGHT = {8: 1.0 + 4 / 4096, 4: 0.5 + 4 / 64}  # bitsandbytes int8 row scales; NF4 blocks of 64


def model_weight_bytes(groups: Mapping[str, Mapping[str, torch.Tensor]], dtype: torch.dtype | None,
                       bits: int | None = None) -> int:
    """Bytes the loaded model's weights take (QFormer, token generator, LLM; not the lazily built vision
    encoder) in ``dtype``, with the decoder layers' Linear weights at ``bits`` when quantized."""
    total = 0
    for name in ("qformer", "tokens", "llm"):
        for key, t in groups[name].items():
            if bits and name == "llm" and key.startswith("model.layers.") and key.endswith(".weight") \
                    and any(part in key for part in _QUANTIZED_LINEAR):
                total += int(t.numel() * QUANTIZED_BYTES_PER_WEIGHT[bits])
            else:
                total += tensor_bytes([t], dtype)
    return total


def check_weights_fit(source: str, groups: Mapping[str, Mapping[str, torch.Tensor]], dtype: torch.dtype,
                      bits: int | None, available: int | None) -> None:
    """Refuse weights that would not fit ``available`` bytes, naming the settings that would."""
    name = str(dtype).replace("torch.", "")
    need = model_weight_bytes(groups, dtype, bits) + RUNTIME_OVERHEAD
    alternatives = []
    if dtype == torch.float32:
        alternatives.append(((Opt("dtype", "bfloat16"),),
                             model_weight_bytes(groups, torch.bfloat16, bits) + RUNTIME_OVERHEAD))
    if bits != 4:
        half = torch.bfloat16 if dtype == torch.float32 else dtype
        alternatives.append(((Opt("quantize", "4bit"),)
                             + ((" ", Opt("dtype", "bfloat16")) if dtype == torch.float32 else ()),
                             model_weight_bytes(groups, half, 4) + RUNTIME_OVERHEAD))
    what = f"the weights in {name}" + (f" with {bits}-bit layers" if bits else "") + " (and room to run)"
    require_memory(source, what, need, available, alternatives)


def load_vision_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    vision_tower: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    image_size: int | None = None,
    callbacks: Callbacks = NO_CALLBACKS,
    probes: Probes = SYSTEM,
) -> VisionEncoder:
    """Only the vision encoder: from a weights file (``vision_tower``), or the one a model uses, found as
    ``load_model`` finds it but without loading the LLM (only shards holding vision keys are opened).
    The dtype rule and the memory check are ``load_model``'s."""
    dev = select_device(device)
    if name_or_path is None:
        if vision_tower is None:
            raise InputError("give a model or a vision-tower file")
        path = Path(vision_tower).expanduser()
        if not path.is_file():
            raise CheckpointError("vision-tower weights file not found", where=vision_tower)
        weights = _checked(VisionWeights(str(path), lambda: read_lavis_weights(path), image_size or 224))
        pad = True
    else:
        ckpt = resolve_checkpoint_dir(name_or_path)
        cfg = LlamaVidConfig.from_json(ckpt / "config.json")
        if image_size is not None:
            cfg.image_size = image_size
        embedded = (ckpt_io.read_prefixed_tensors(ckpt, "model.vision_tower.vision_tower.") if vision_tower is None
                    else {})
        weights = resolve_vision_weights(vision_tower, cfg, ckpt, embedded)
        pad = cfg.image_aspect_ratio == "pad"
    choice = choose_dtype(dtype, dev, weight_bytes=weights.weight_bytes, probes=probes, what="vision weights")
    if choice.note:
        callbacks.say(choice.note)
    if choice.dtype is not None:
        alternatives = [((Opt("dtype", "bfloat16"),), weights.weight_bytes(torch.bfloat16) + RUNTIME_OVERHEAD)] \
            if choice.dtype == torch.float32 else []
        require_memory(weights.description,
                       f"the vision encoder's weights in {str(choice.dtype).replace('torch.', '')} "
                       "(and room to run)", weights.weight_bytes(choice.dtype) + RUNTIME_OVERHEAD,
                       probes.available(dev), alternatives)
    return VisionEncoder(weights, device=dev, dtype=choice.dtype, pad_images=pad)


def _config_eos(cfg: LlamaVidConfig) -> int | None:
    eos = cfg.llm.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos
