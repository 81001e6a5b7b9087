"""``LlamaVid``: the assembled model, ``load_model``, and the path from features to an answer.

    pixels --encode_images--> features (T, 257, 1408) --video_tokens(question)--> tokens (T, 1 + n, H)
    tokens + prompt ids --splice at <image>--> embeddings --generate--> answer

Features are the seam: they do not depend on the question or on the LLM, so a ``.vidtok`` file made
once serves every question and every model that shares the vision encoder (all released ones do).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import checkpoint as ckpt_io
from .config import LlamaVidConfig
from .decoding import SamplingOptions, generate
from .errors import CheckpointError, ContextOverflowError, InputError
from .prompt import IMAGE_SLOT, TextTokenizer, get_template, image_message, movie_message, tokenize_prompt
from .qformer import QFormer, build_qformer, encode_questions, load_qformer_tokenizer, load_strict
from .tokens import TokenGenerator
from .vision import PUBLIC_WEIGHTS_URL, EvaVisionTransformer, VisionEncoder, VisionWeights, read_lavis_weights


class FeatureSource(Protocol):
    """Anything that hands out frame features by range: a ``.vidtok`` reader, or see ``_read_features``."""

    def __len__(self) -> int: ...

    def features(self, start: int = 0, stop: int | None = None, *, dtype: torch.dtype = torch.float32) -> torch.Tensor: ...


Features = torch.Tensor | np.ndarray | FeatureSource


@dataclass
class Answer:
    """One generated answer and what it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int
    frames: int
    seconds: float
    question: str = ""


# ---------------------------------------------------------------------------------------------------------
# Devices and dtypes

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": the first CUDA GPU when there is one, else Apple's MPS, else the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def select_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """``None``/"auto": bf16 on GPUs that support it, else fp16; fp16 on MPS; float32 on the CPU.

    "stored" keeps every tensor in the dtype it is stored in, memory-mapped and uncopied: cheap for
    inspecting a checkpoint (``llamavid info``), not meant for running one with mixed dtypes.
    """
    if str(dtype) == "stored":
        return None
    if dtype is None or str(dtype) == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            out = _DTYPES[str(dtype).lower().replace("torch.", "")]
        except KeyError:
            raise InputError(f"dtype {dtype}: unknown (use float32, bfloat16 or float16)") from None
    if device.type == "cpu" and out == torch.float16:
        raise InputError("dtype float16: not supported on the CPU (use float32 or bfloat16)")
    return out


# ---------------------------------------------------------------------------------------------------------
# Vision weights: resolved at load time, read lazily


def resolve_vision_weights(
    explicit: str | os.PathLike | None, cfg: LlamaVidConfig, ckpt: Path, embedded: Mapping[str, torch.Tensor]
) -> VisionWeights:
    """Explicit path, else an ``eva_vit_g.pth`` found where the config or the cache says, else the copy
    embedded in the checkpoint, else the public URL (downloaded into the user cache on first use)."""
    size = cfg.image_size
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{explicit}: vision-tower weights file not found")
        weights = VisionWeights(str(path), lambda: read_lavis_weights(path), size)
        weights.validate()  # fail now, not at the first frame, when the file is wrong
        return weights
    for path in ckpt_io.vision_tower_candidates(cfg.mm_vision_tower, ckpt):
        if path.is_file():
            weights = VisionWeights(str(path), lambda p=path: read_lavis_weights(p), size)
            weights.validate()
            return weights
    if embedded:
        weights = VisionWeights(f"{ckpt} (embedded vision tower)", lambda: embedded, size)
        weights.validate()
        return weights
    dest = ckpt_io.user_cache_dir() / ckpt_io.VISION_TOWER_NAME
    return VisionWeights(
        str(dest), lambda: read_lavis_weights(ckpt_io.download_vision_tower(PUBLIC_WEIGHTS_URL, dest)), size
    )


# ---------------------------------------------------------------------------------------------------------
# The model


class LlamaVid(nn.Module):
    """LLaMA-VID: EVA vision encoder, instruction-aware QFormer, two-token generator, LLaMA."""

    def __init__(
        self,
        config: LlamaVidConfig,
        *,
        qformer: QFormer,
        tokens: TokenGenerator,
        llm: nn.Module,
        text_tokenizer: TextTokenizer,
        qformer_tokenizer: Any,
        vision_encoder: VisionEncoder | None = None,
        name: str = "",
    ):
        super().__init__()
        self.config = config
        self.qformer = qformer
        self.tokens = tokens
        self.llm = llm
        self.text_tokenizer = text_tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.vision_encoder = vision_encoder  # not a submodule: frozen, built lazily, saved separately
        self.name = name

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.tokens.key_projector.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tokens.key_projector.weight.dtype

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def tokens_per_frame(self) -> int:
        return self.config.tokens_per_frame

    @property
    def vision(self) -> EvaVisionTransformer:
        """The vision encoder network, built on first use (answering from features never needs it)."""
        encoder = self._require_vision()
        module = encoder.module
        if module.config.width != self.config.mm_hidden_size:
            raise CheckpointError(
                f"{encoder.weights.description}: encoder width {module.config.width} does not match "
                f"the model's mm_hidden_size {self.config.mm_hidden_size}"
            )
        return module

    def _require_vision(self) -> VisionEncoder:
        if self.vision_encoder is None:
            raise CheckpointError(f"{self.name}: this model has no vision encoder; pass vision_tower=PATH to eva_vit_g.pth")
        return self.vision_encoder

    @property
    def vision_weights(self) -> VisionWeights:
        return self._require_vision().weights

    def vision_identity(self) -> dict[str, Any]:
        return self._require_vision().identity()

    # -- frames -> features ------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
        """Normalized pixels (T, 3, S, S) -> vision features (T, 1 + grid^2, width), e.g. (T, 257, 1408).

        Runs in batches of ``batch_size`` frames; the result stays on the model's device and dtype.
        """
        self.vision  # noqa: B018 - builds and checks the encoder
        return self.vision_encoder.encode_pixels(pixel_values, batch_size=batch_size)

    def encode_frames(self, frames: np.ndarray | Sequence, *, is_image: bool = False, batch_size: int = 16) -> torch.Tensor:
        """RGB uint8 frames (T, H, W, 3) -> features; still images are padded to square first, as published."""
        self.vision  # noqa: B018
        return self.vision_encoder.encode_frames(frames, is_image=is_image, batch_size=batch_size)

    # -- features + question -> tokens -------------------------------------------------------------------------
    def frame_tokens(self, feats: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     *, long_video: bool = False) -> torch.Tensor:
        """Features of n frames (n, N, C) and Q tokenized questions (Q, L) -> tokens (Q, n, 1 + k, H).

        In short-video mode the QFormer cross-attends to all N = 257 tokens and the context attention
        uses the 256 patches (CLS dropped, as the published ``mm_vision_select_feature == "patch"``).
        The published long-video path drops CLS before the model, so there the QFormer sees 256 too.
        """
        q, n = input_ids.shape[0], feats.shape[0]
        if long_video and feats.shape[1] % 2 == 1:
            feats = feats[:, 1:]
        patches = feats[:, 1:] if self.config.mm_vision_select_feature == "patch" and feats.shape[1] % 2 == 1 else feats
        image = feats[None].expand(q, -1, -1, -1).flatten(0, 1)  # (Q*n, N, C), question-major
        patches = patches[None].expand(q, -1, -1, -1).flatten(0, 1)
        ids = input_ids[:, None].expand(-1, n, -1).flatten(0, 1)  # (Q*n, L)
        mask = attention_mask[:, None].expand(-1, n, -1).flatten(0, 1)
        query_out = self.qformer(ids, mask, image)  # (Q*n, 32, Dq)
        out = self.tokens(query_out, patches)  # (Q*n, 1 + k, H)
        return out.view(q, n, *out.shape[1:])

    @torch.inference_mode()
    def video_tokens(self, features: Features, question: str, *, long_video: bool | None = None,
                     chunk_frames: int = 64, frame_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Features (T, N, C) and a question -> LLM-space tokens per frame (T, 1 + n_content, H)."""
        return self.video_tokens_batch(features, [question], long_video=long_video, chunk_frames=chunk_frames,
                                       frame_indices=frame_indices)[0]

    @torch.inference_mode()
    def video_tokens_batch(self, features: Features, questions: Sequence[str], *, long_video: bool | None = None,
                           chunk_frames: int = 64, frame_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Several questions on one video -> (Q, T, 1 + n, H), computed in chunks of frames.

        Memory is bounded by ``chunk_frames`` frames (times the number of questions), never by T: a
        10,800-frame movie never builds an all-frames QFormer batch or attention matrix.
        """
        if not questions:
            raise InputError("no questions given")
        long_video = self.config.long_video if long_video is None else long_video
        total = len(frame_indices) if frame_indices is not None else _num_frames(features)
        if total == 0:
            raise InputError("the video has no frames")
        ids, mask = encode_questions(self.qformer_tokenizer, questions, device=self.device)
        step = max(1, chunk_frames // len(questions))
        out = None
        for start in range(0, total, step):
            stop = min(total, start + step)
            feats = _read_features(features, start, stop, frame_indices).to(self.device, self.dtype, non_blocking=True)
            toks = self.frame_tokens(feats, ids, mask, long_video=long_video)
            if out is None:
                out = torch.empty(len(questions), total, *toks.shape[2:], device=self.device, dtype=toks.dtype)
            out[:, start:stop] = toks
        return out

    # -- prompt -> answer ---------------------------------------------------------------------------------------
    def build_prompt(self, question: str, *, n_frames: int, long_video: bool | None = None,
                     frame_subtitles: Sequence[str] | None = None, history: Sequence[tuple[str, str]] = (),
                     template: str | None = None) -> str:
        """The prompt text for a question (and earlier text-only turns) about a video of n_frames frames."""
        long_video = self.config.long_video if long_video is None else long_video
        if long_video:
            subs = list(frame_subtitles) if frame_subtitles is not None else [""] * n_frames
            if len(subs) != n_frames:
                raise ValueError(f"{len(subs)} subtitle entries for {n_frames} frames")
            message = movie_message(subs, question)
        else:
            message = image_message(question)
        turns: list[tuple[str, str | None]] = [(q, a) for q, a in history] + [(message, None)]
        return get_template(template or self.config.conv_mode).render(turns)

    def prompt_ids(self, prompt: str) -> list[int]:
        return tokenize_prompt(prompt, self.text_tokenizer)

    def embed_prompt(self, ids: Sequence[int], blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Prompt ids with IMAGE_SLOTs and one block of visual tokens per slot -> embeddings (L, H)."""
        ids_np = np.asarray(ids, dtype=np.int64)
        slot = ids_np == IMAGE_SLOT
        if int(slot.sum()) != len(blocks):
            raise ValueError(f"prompt has {int(slot.sum())} <image> slots but {len(blocks)} visual blocks were given")
        embed = self.llm.get_input_embeddings()
        text = embed(torch.as_tensor(ids_np[~slot], device=self.device))
        if not blocks:
            return text
        visual = torch.cat([b.to(text.dtype) for b in blocks])
        lengths = np.ones(len(ids_np), dtype=np.int64)
        lengths[slot] = [b.shape[0] for b in blocks]
        starts = np.empty(len(ids_np), dtype=np.int64)
        starts[~slot] = np.arange(int((~slot).sum()))
        starts[slot] = text.shape[0] + np.concatenate([[0], np.cumsum(lengths[slot])[:-1]])
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        index = torch.as_tensor(np.repeat(starts, lengths) + offsets, device=self.device)
        return torch.cat([text, visual])[index]

    def visual_blocks(self, tokens: torch.Tensor, *, long_video: bool) -> list[torch.Tensor]:
        """(T, k, H) -> one block for the whole video (short mode) or one block per frame (movie mode)."""
        if long_video:
            return list(tokens.unbind(0))
        return [tokens.flatten(0, 1)]

    def prompt_length(self, question: str, *, n_frames: int, long_video: bool | None = None,
                      frame_subtitles: Sequence[str] | None = None, history: Sequence[tuple[str, str]] = (),
                      template: str | None = None) -> int:
        """Tokens the prompt for this question will take, visual tokens included, without computing them."""
        ids = self.prompt_ids(self.build_prompt(question, n_frames=n_frames, long_video=long_video,
                                                frame_subtitles=frame_subtitles, history=history, template=template))
        return len(ids) - ids.count(IMAGE_SLOT) + n_frames * self.tokens_per_frame

    def check_context(self, prompt_tokens: int, max_new_tokens: int, *, n_frames: int) -> int:
        """Refuse a prompt the context cannot hold; return how many new tokens fit."""
        room = self.context_length - prompt_tokens
        if room < 1:
            raise ContextOverflowError(
                f"the prompt needs {prompt_tokens} tokens ({n_frames} frames x {self.tokens_per_frame} tokens + text) "
                f"but the model's context holds {self.context_length}; sample fewer frames (--fps or --max-frames)"
            )
        return min(max_new_tokens, room)

    @torch.inference_mode()
    def answer(self, features: Features, question: str, *, frame_subtitles: Sequence[str] | None = None,
               history: Sequence[tuple[str, str]] = (), long_video: bool | None = None, template: str | None = None,
               sampling: SamplingOptions | None = None, stream: Callable[[str], None] | None = None,
               frame_indices: Sequence[int] | None = None, chunk_frames: int = 64) -> Answer:
        """Answer one question about a video given its features (and optional per-frame subtitle text).

        ``stream`` receives the answer's text piece by piece as it is generated.
        """
        on_text = None if stream is None else (lambda _row, text: stream(text))
        return self.answer_batch(features, [question], frame_subtitles=frame_subtitles, history=history,
                                 long_video=long_video, template=template, sampling=sampling, on_text=on_text,
                                 frame_indices=frame_indices, chunk_frames=chunk_frames)[0]

    @torch.inference_mode()
    def answer_batch(self, features: Features, questions: Sequence[str], *, frame_subtitles: Sequence[str] | None = None,
                     history: Sequence[tuple[str, str]] = (), long_video: bool | None = None, template: str | None = None,
                     sampling: SamplingOptions | None = None, on_text: Callable[[int, str], None] | None = None,
                     frame_indices: Sequence[int] | None = None, chunk_frames: int = 64) -> list[Answer]:
        """Answer several questions about one video in one batch through the QFormer and the LLM."""
        t0 = time.perf_counter()
        sampling = sampling or SamplingOptions()
        long_video = self.config.long_video if long_video is None else long_video
        n_frames = len(frame_indices) if frame_indices is not None else _num_frames(features)
        prompt_ids = [self.prompt_ids(self.build_prompt(q, n_frames=n_frames, long_video=long_video,
                                                        frame_subtitles=frame_subtitles, history=history,
                                                        template=template)) for q in questions]
        lengths = [len(ids) - ids.count(IMAGE_SLOT) + n_frames * self.tokens_per_frame for ids in prompt_ids]
        max_new = self.check_context(max(lengths), sampling.max_new_tokens, n_frames=n_frames)  # before any work
        tokens = self.video_tokens_batch(features, questions, long_video=long_video, chunk_frames=chunk_frames,
                                         frame_indices=frame_indices)  # (Q, T, k, H)
        embeds = [self.embed_prompt(ids, self.visual_blocks(tokens[qi], long_video=long_video))
                  for qi, ids in enumerate(prompt_ids)]
        del tokens
        opts = SamplingOptions(max_new_tokens=max_new, temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=sampling.seed)
        batch, mask = _left_pad(embeds)
        decoders = [StreamDecoder(self.text_tokenizer) for _ in questions]

        def on_token(row: int, tok: int) -> None:
            piece = decoders[row].push(tok)
            if piece and on_text is not None:
                on_text(row, piece)

        outs = generate(self.llm, batch, mask if len(embeds) > 1 else None, stop_ids=[self.text_tokenizer.eos_id],
                        opts=opts, on_token=on_token)
        seconds = time.perf_counter() - t0
        stop_text = get_template(template or self.config.conv_mode).stop_string
        answers = []
        for qi, ids in enumerate(outs):
            text = self.text_tokenizer.decode(ids).strip()
            if stop_text and stop_text.strip() and text.endswith(stop_text):
                text = text[: -len(stop_text)].strip()
            answers.append(Answer(text=text, prompt_tokens=lengths[qi], new_tokens=len(ids), frames=n_frames,
                                  seconds=seconds, question=questions[qi]))
        return answers


    # -- text only (merging segment summaries) ----------------------------------------------------------------
    def text_prompt(self, text: str, *, history: Sequence[tuple[str, str]] = (), template: str | None = None) -> str:
        return get_template(template or self.config.conv_mode).render([*history, (text, None)])

    def text_prompt_length(self, text: str, **kw: Any) -> int:
        return len(self.prompt_ids(self.text_prompt(text, **kw)))

    @torch.inference_mode()
    def answer_text(self, text: str, *, history: Sequence[tuple[str, str]] = (), template: str | None = None,
                    sampling: SamplingOptions | None = None, stream: Callable[[str], None] | None = None) -> Answer:
        """A reply to a text-only user turn (no visual tokens)."""
        t0 = time.perf_counter()
        sampling = sampling or SamplingOptions()
        ids = self.prompt_ids(self.text_prompt(text, history=history, template=template))
        max_new = self.check_context(len(ids), sampling.max_new_tokens, n_frames=0)
        decoder = StreamDecoder(self.text_tokenizer)

        def on_token(_row: int, tok: int) -> None:
            piece = decoder.push(tok)
            if piece and stream is not None:
                stream(piece)

        opts = SamplingOptions(max_new_tokens=max_new, temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=sampling.seed)
        out = generate(self.llm, self.embed_prompt(ids, [])[None], None, stop_ids=[self.text_tokenizer.eos_id],
                       opts=opts, on_token=on_token)[0]
        return Answer(text=self.text_tokenizer.decode(out).strip(), prompt_tokens=len(ids), new_tokens=len(out),
                      frames=0, seconds=time.perf_counter() - t0, question=text)


class StreamDecoder:
    """Turns token ids into text pieces as they arrive, holding back incomplete UTF-8 characters."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text):], text
        return piece


def _left_pad(embeds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(e.shape[0] for e in embeds)
    batch = embeds[0].new_zeros(len(embeds), longest, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), longest, dtype=torch.long, device=embeds[0].device)
    for i, e in enumerate(embeds):
        batch[i, longest - e.shape[0]:] = e
        mask[i, longest - e.shape[0]:] = 1
    return batch, mask


def _num_frames(features: Features) -> int:
    return int(features.shape[0]) if isinstance(features, (torch.Tensor, np.ndarray)) else len(features)


def _read_features(features: Features, start: int, stop: int, indices: Sequence[int] | None) -> torch.Tensor:
    """Frames [start, stop) of the selection (all frames, or ``indices``) as a CPU/GPU tensor."""
    if indices is not None:
        picked = [int(i) for i in indices[start:stop]]
        if isinstance(features, torch.Tensor):
            return features[picked]
        if isinstance(features, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(features[picked]))
        return features.frames(picked)  # type: ignore[union-attr]
    if isinstance(features, torch.Tensor):
        chunk = features[start:stop]
    elif isinstance(features, np.ndarray):
        chunk = torch.from_numpy(np.ascontiguousarray(features[start:stop]))
    else:
        chunk = features.features(start, stop)
    if chunk.device.type == "cpu" and torch.cuda.is_available():
        chunk = chunk.pin_memory()
    return chunk


# ---------------------------------------------------------------------------------------------------------
# Loading


def build_llm(cfg: LlamaVidConfig, sd: dict[str, torch.Tensor], *, source: str, device: torch.device,
              dtype: torch.dtype, attn_implementation: str = "sdpa") -> nn.Module:
    """A transformers LlamaForCausalLM built on the meta device and given the checkpoint's tensors."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    lc = LlamaConfig(**cfg.llm)
    lc._attn_implementation = attn_implementation
    with torch.device("meta"):
        llm = LlamaForCausalLM(lc)
    if getattr(lc, "tie_word_embeddings", False) and "lm_head.weight" not in sd and "model.embed_tokens.weight" in sd:
        sd = dict(sd, **{"lm_head.weight": sd["model.embed_tokens.weight"]})
    load_strict(llm, sd, source=source, what="LLM", device=device, dtype=dtype,
                display=lambda k: ckpt_io.to_checkpoint_key("llm." + k))
    llm.model.rotary_emb = LlamaRotaryEmbedding(config=lc).to(device)  # its buffers are not in checkpoints
    if getattr(lc, "tie_word_embeddings", False):
        llm.lm_head.weight = llm.model.embed_tokens.weight
    llm.generation_config.temperature = None
    llm.generation_config.top_p = None
    return llm.eval()


def quantize_llm(llm: nn.Module, bits: int, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    """Swap the decoder layers' Linear modules for bitsandbytes 8-bit (LLM.int8) or 4-bit (NF4) ones.

    The weights are quantized when the module moves to ``device`` (CUDA, or the CPU with bitsandbytes
    >= 0.45); embeddings, norms and the output head stay in ``compute_dtype``.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise InputError(f"{bits}-bit loading needs bitsandbytes: pip install 'llamavid[quant]'") from None
    for parent in list(llm.model.layers.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            weight = child.weight.data.to("cpu")
            has_bias = child.bias is not None
            if bits == 8:
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=has_bias,
                                          has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=has_bias,
                                        compute_dtype=compute_dtype, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
            if has_bias:
                new.bias = nn.Parameter(child.bias.data.to("cpu", compute_dtype), requires_grad=False)
            setattr(parent, child_name, new.to(device))
    return llm.to(device)


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
) -> LlamaVid:
    """Load a LLaMA-VID checkpoint (a local directory or a Hugging Face id) exactly as published.

    vision_tower: path to ``eva_vit_g.pth``; default: the config's path, the user cache, the copy embedded
    in full checkpoints, else the public URL on first use. qformer_tokenizer: a folder or id of the
    bert-base-uncased tokenizer; default: ``<checkpoint>/qformer_tokenizer``, else ``bert-base-uncased``.
    device/dtype: default the first GPU in bf16 (fp16 where bf16 is missing), else the CPU in float32.
    """
    if load_in_8bit and load_in_4bit:
        raise InputError("choose one of 8-bit and 4-bit loading")
    from .builtin import resolve_builtin

    ckpt = resolve_builtin(name_or_path) or ckpt_io.resolve_checkpoint(name_or_path)
    cfg = LlamaVidConfig.from_json(ckpt / "config.json")
    dev = select_device(device)
    dt = select_dtype(dtype, dev)
    load_dev = torch.device("cpu") if (load_in_8bit or load_in_4bit) else dev

    groups = ckpt_io.route_checkpoint(ckpt)
    source = str(ckpt)
    qformer = build_qformer(groups["qformer"], source=source, device=dev, dtype=dt,
                            display=lambda k: ckpt_io.to_checkpoint_key("qformer." + k))
    if qformer.config.num_query != cfg.num_query:
        raise CheckpointError(f"{source}: config num_query {cfg.num_query} but model.vlm_att_query holds {qformer.config.num_query} queries")
    with torch.device("meta"):
        tokens = TokenGenerator(qformer.config.hidden, cfg.mm_hidden_size, cfg.llm_hidden_size,
                                cfg.mm_projector_type, cfg.compress_type, cfg.token_types)
    load_strict(tokens, groups["tokens"], source=source, what="token-generator", device=dev, dtype=dt,
                display=lambda k: ckpt_io.to_checkpoint_key("tokens." + k))
    if qformer.config.encoder_width != cfg.mm_hidden_size:
        raise CheckpointError(f"{source}: QFormer cross-attends to width {qformer.config.encoder_width} but mm_hidden_size is {cfg.mm_hidden_size}")
    llm = build_llm(cfg, groups["llm"], source=source, device=load_dev, dtype=dt,
                    attn_implementation=attn_implementation)
    if load_in_8bit or load_in_4bit:
        llm = quantize_llm(llm, 8 if load_in_8bit else 4, dev, dt)
    text_tokenizer = TextTokenizer.from_dir(ckpt, eos_id=_config_eos(cfg))
    vocab_rows = llm.get_input_embeddings().weight.shape[0]
    if text_tokenizer.vocab_size > vocab_rows:
        raise CheckpointError(f"{source}: the tokenizer has {text_tokenizer.vocab_size} tokens but the LLM embeds only {vocab_rows}")
    bert_tok = load_qformer_tokenizer(qformer_tokenizer, checkpoint_dir=ckpt)
    if len(bert_tok) != qformer.config.vocab_size:
        raise CheckpointError(
            f"{bert_tok.name_or_path}: the QFormer tokenizer has {len(bert_tok)} tokens but the QFormer embeds "
            f"{qformer.config.vocab_size} (expected bert-base-uncased plus [DEC]); pass the right --qformer-tokenizer"
        )
    vision_weights = resolve_vision_weights(vision_tower, cfg, ckpt, groups["vision"])
    encoder = VisionEncoder(vision_weights, device=dev, dtype=dt, pad_images=cfg.image_aspect_ratio == "pad")
    model = LlamaVid(cfg, qformer=qformer, tokens=tokens, llm=llm, text_tokenizer=text_tokenizer,
                     qformer_tokenizer=bert_tok, vision_encoder=encoder, name=os.fspath(name_or_path))
    return model.eval()


def load_vision_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    vision_tower: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    image_size: int | None = None,
) -> VisionEncoder:
    """Only the vision encoder: from a weights file (``vision_tower``), or the one a model uses, found as
    ``load_model`` finds it but without loading the LLM (only shards holding vision keys are opened)."""
    dev = select_device(device)
    dt = select_dtype(dtype, dev)
    if name_or_path is None:
        if vision_tower is None:
            raise InputError("give a model or a vision-tower file")
        path = Path(vision_tower).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{vision_tower}: vision-tower weights file not found")
        weights = VisionWeights(str(path), lambda: read_lavis_weights(path), image_size or 224)
        weights.validate()
        return VisionEncoder(weights, device=dev, dtype=dt)
    from .builtin import resolve_builtin

    ckpt = resolve_builtin(name_or_path) or ckpt_io.resolve_checkpoint(name_or_path)
    cfg = LlamaVidConfig.from_json(ckpt / "config.json")
    if image_size is not None:
        cfg.image_size = image_size
    embedded = ckpt_io.read_prefixed_tensors(ckpt, "model.vision_tower.vision_tower.") if vision_tower is None else {}
    weights = resolve_vision_weights(vision_tower, cfg, ckpt, embedded)
    return VisionEncoder(weights, device=dev, dtype=dt, pad_images=cfg.image_aspect_ratio == "pad")


def _config_eos(cfg: LlamaVidConfig) -> int | None:
    eos = cfg.llm.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos
