"""``LlamaVid``: the assembled model and the path from features to an answer.

    pixels --encode_images--> features (T, 257, 1408) --video_tokens(question)--> tokens (T, 1 + n, H)
    question --prompt()--> Prompt (text, ids with one slot per <image>, length)
    tokens + Prompt --splice at the slots--> embeddings --generate--> Answer

Features are the seam: they do not depend on the question or on the LLM, so a ``.vidtok`` file made
once serves every question and every model that shares the vision encoder (all released ones do).

The modules are built from the configs in one place, ``LlamaVid.from_config``; the only other door is
``LlamaVid.from_pretrained`` (``llamavid.load_model``), which builds them on the meta device through
``from_config`` and assigns a checkpoint's tensors (see loading.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..core.callbacks import NO_CALLBACKS
from .config import LlamaVidConfig
from .generation import PREFILL_CHUNK, SamplingOptions, StreamDecoder, generate
from ..core.errors import CheckpointError, InputError
from .memory import SYSTEM
from ..pipeline.planning import answer_room
from .prompt import IMAGE_PLACEHOLDER, IMAGE_SLOT, TextTokenizer, get_template, image_message, movie_message, tokenize_prompt
from .qformer import QFormer, QFormerConfig, encode_questions
from .tokens import TokenGenerator
from .vision import EvaVisionTransformer, VisionEncoder, VisionWeights


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
    truncated: bool = False  # generation stopped at the token limit, not at the end of the answer
    evidence: list | None = None  # EvidenceRange, best first, when asked for (llamavid.tasks.evidence)
    choices: list | None = None  # ChoiceScore per option, in the order given, when the answer was chosen


@dataclass(frozen=True)
class Prompt:
    """A question's prompt, built once: what the QFormer reads, the prompt text, its ids (``IMAGE_SLOT``
    where visual tokens go) and its length in LLM tokens with the visual tokens counted."""

    question: str
    text: str
    ids: tuple[int, ...]
    n_frames: int
    long_video: bool
    tokens: int
    template: str


def init_weights_(module: nn.Module, std: float = 0.02) -> None:
    """BERT/LLaMA-style init: normal(0, std) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def new_llm(config: LlamaVidConfig, *, device: torch.device | str, attn_implementation: str = "sdpa") -> nn.Module:
    """A transformers ``LlamaForCausalLM`` of the config's shape, on ``device`` ("meta": no memory, no init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lc = LlamaConfig(**config.llm)
    lc._attn_implementation = attn_implementation
    with torch.device(device):
        llm = LlamaForCausalLM(lc)
    llm.generation_config.temperature = None  # our sampler decides; never a checkpoint's hidden defaults
    llm.generation_config.top_p = None
    return llm


def finish_llm(llm: nn.Module, device: torch.device) -> nn.Module:
    """After weights were assigned: rotary buffers (never in checkpoints) on ``device``, tied output head."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llm.model.rotary_emb = LlamaRotaryEmbedding(config=llm.config).to(device)
    if getattr(llm.config, "tie_word_embeddings", False):
        llm.lm_head.weight = llm.model.embed_tokens.weight
    return llm.eval()


class LlamaVid(nn.Module):
    """LLaMA-VID: EVA vision encoder, instruction-aware QFormer, two-token generator, LLaMA."""

    def __init__(
        self,
        config: LlamaVidConfig,
        *,
        qformer: QFormer,
        tokens: TokenGenerator,
        llm: nn.Module,
        text_tokenizer: TextTokenizer | None = None,
        qformer_tokenizer: Any = None,
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
        # Set by load_model: the KV-cache mode, how to look at the machine, where notes go, and the memory
        # left after the weights were loaded (None: unknown).
        self.kv_cache = "auto"
        self.probes = SYSTEM
        self.callbacks = NO_CALLBACKS
        self.memory_left: int | None = None
        self.weight_bits: int | None = None  # 8 or 4 when the LLM's layers were quantized (--quantize)

    @classmethod
    def from_config(
        cls,
        config: LlamaVidConfig,
        qformer_config: QFormerConfig,
        *,
        text_tokenizer: TextTokenizer | None = None,
        qformer_tokenizer: Any = None,
        vision_encoder: VisionEncoder | None = None,
        name: str = "",
        device: torch.device | str = "cpu",
        attn_implementation: str = "sdpa",
    ) -> "LlamaVid":
        """Every module of the model, built from its configs: the one place the model is assembled.

        On the meta device nothing is allocated (``from_pretrained`` then assigns a checkpoint's tensors);
        on a real device the weights are freshly initialised (QFormer and token generator BERT-style, the
        LLM by transformers), in a fixed order so that a seed gives the same model every time.
        """
        meta = torch.device(device).type == "meta"
        with torch.device(device):
            qformer = QFormer(qformer_config)
            if not meta:
                init_weights_(qformer)
                nn.init.normal_(qformer.query_tokens, std=0.02)
            tokens = TokenGenerator(qformer_config.hidden, config.mm_hidden_size, config.llm_hidden_size,
                                    config.mm_projector_type, config.compress_type, config.token_types)
            if not meta:
                init_weights_(tokens)
        llm = new_llm(config, device=device, attn_implementation=attn_implementation)
        if not meta:
            llm = finish_llm(llm, torch.device(device))
        return cls(config, qformer=qformer, tokens=tokens, llm=llm, text_tokenizer=text_tokenizer,
                   qformer_tokenizer=qformer_tokenizer, vision_encoder=vision_encoder, name=name)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> "LlamaVid":
        """Load a checkpoint exactly as published (a directory, a Hugging Face id or a built-in name);
        keyword arguments as ``llamavid.load_model``."""
        from .loading import load_model

        return load_model(name_or_path, **kwargs)

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
        10,800-frame movie never builds an all-frames QFormer batch or attention matrix. Features are
        read straight into the model's dtype.
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
            feats = _read_features(features, start, stop, frame_indices, self.dtype)
            feats = feats.to(self.device, self.dtype, non_blocking=True)
            toks = self.frame_tokens(feats, ids, mask, long_video=long_video)
            if out is None:
                out = torch.empty(len(questions), total, *toks.shape[2:], device=self.device, dtype=toks.dtype)
            out[:, start:stop] = toks
        return out

    # -- question -> prompt --------------------------------------------------------------------------------------
    def build_prompt(self, question: str, *, n_frames: int, long_video: bool | None = None,
                     frame_subtitles: Sequence[str] | None = None, history: Sequence[tuple[str, str]] = (),
                     template: str | None = None) -> str:
        """The prompt text for a question (and earlier text-only turns) about a video of n_frames frames."""
        long_video = self.config.long_video if long_video is None else long_video
        _refuse_placeholder(question, history, frame_subtitles)
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

    def prompt(self, question: str, *, n_frames: int, long_video: bool | None = None,
               frame_subtitles: Sequence[str] | None = None, history: Sequence[tuple[str, str]] = (),
               template: str | None = None) -> Prompt:
        """The ``Prompt`` of a question: text built and tokenized once, length known before any compute."""
        long_video = self.config.long_video if long_video is None else long_video
        template = template or self.config.conv_mode
        text = self.build_prompt(question, n_frames=n_frames, long_video=long_video, frame_subtitles=frame_subtitles,
                                 history=history, template=template)
        ids = self.prompt_ids(text)
        length = len(ids) - ids.count(IMAGE_SLOT) + n_frames * self.tokens_per_frame
        return Prompt(question, text, tuple(ids), n_frames, long_video, length, template)

    def prompt_length(self, question: str, **kwargs: Any) -> int:
        """Tokens the prompt for this question will take, visual tokens included, without computing them."""
        return self.prompt(question, **kwargs).tokens

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

    @torch.inference_mode()
    def prompt_embeddings(self, features: Features, prompts: Sequence[Prompt], *,
                          frame_indices: Sequence[int] | None = None, chunk_frames: int = 64) -> list[torch.Tensor]:
        """Each prompt embedded with its question's visual tokens spliced in -> one (L, H) tensor per prompt.

        All prompts must be for the same frames and prompt style (the QFormer runs once for all of them).
        """
        if not prompts:
            raise InputError("no questions given")
        n_frames = len(frame_indices) if frame_indices is not None else _num_frames(features)
        long_video = prompts[0].long_video
        if any(p.n_frames != n_frames or p.long_video != long_video for p in prompts):
            raise ValueError("every prompt of a batch must be built for the same frames and prompt style")
        tokens = self.video_tokens_batch(features, [p.question for p in prompts], long_video=long_video,
                                         chunk_frames=chunk_frames, frame_indices=frame_indices)  # (Q, T, k, H)
        return [self.embed_prompt(p.ids, self.visual_blocks(tokens[qi], long_video=long_video))
                for qi, p in enumerate(prompts)]

    def frame_spans(self, prompt: Prompt, frame_subtitles: Sequence[str] | None = None) -> list[tuple[int, int]]:
        """Where each frame sits in the embedded prompt: [start, end) positions of its visual tokens.

        With the long-video prompt a frame's subtitle text follows its tokens; given ``frame_subtitles``
        (as the prompt was built with), that text is counted as part of the frame.
        """
        ids = np.asarray(prompt.ids, dtype=np.int64)
        slots = np.nonzero(ids == IMAGE_SLOT)[0]
        per = self.tokens_per_frame
        pos = slots + np.arange(len(slots)) * (per * (prompt.n_frames if not prompt.long_video else 1) - 1)
        if not prompt.long_video:
            if len(slots) != 1:
                raise ValueError(f"a short-video prompt has one <image> slot, not {len(slots)}")
            start = int(pos[0])
            return [(start + i * per, start + (i + 1) * per) for i in range(prompt.n_frames)]
        if len(slots) != prompt.n_frames:
            raise ValueError(f"a long-video prompt has one <image> slot per frame: {len(slots)} for {prompt.n_frames}")
        spans = []
        for i, start in enumerate(pos.tolist()):
            end = start + per
            if frame_subtitles is not None and frame_subtitles[i]:
                text = len(self.text_tokenizer.encode(frame_subtitles[i]))
                if i + 1 < len(slots):
                    text = min(text, int(slots[i + 1] - slots[i] - 1))  # exactly the text between the slots
                end += text
            spans.append((int(start), int(end)))
        return spans

    # -- prompt -> answer ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def answer_prompts(self, features: Features, prompts: Sequence[Prompt], *, sampling: SamplingOptions | None = None,
                       on_text: Callable[[int, str], None] | None = None, frame_indices: Sequence[int] | None = None,
                       chunk_frames: int = 64) -> list[Answer]:
        """Answer prepared prompts about one video in one batch through the QFormer and the LLM.

        All prompts must be for the same frames (``frame_indices`` of ``features``, or all of them) and
        the same prompt style. ``on_text(row, piece)`` receives each answer's text as it is generated.
        """
        t0 = time.perf_counter()
        if not prompts:
            raise InputError("no questions given")
        sampling = sampling or SamplingOptions()
        n_frames = len(frame_indices) if frame_indices is not None else _num_frames(features)
        long_video = prompts[0].long_video
        if any(p.n_frames != n_frames or p.long_video != long_video for p in prompts):
            raise ValueError("every prompt of a batch must be built for the same frames and prompt style")
        max_new = answer_room(self.context_length, max(p.tokens for p in prompts), sampling.max_new_tokens,
                              n_frames=n_frames, tokens_per_frame=self.tokens_per_frame)  # before any work
        cache_mode = self.kv_cache_mode(max(p.tokens for p in prompts), len(prompts), new_tokens=max_new,
                                        text_tokens=max(p.tokens - p.n_frames * self.tokens_per_frame for p in prompts))
        embeds = self.prompt_embeddings(features, prompts, frame_indices=frame_indices, chunk_frames=chunk_frames)
        return self.generate_answers(embeds, prompts, sampling=sampling, on_text=on_text, max_new=max_new, t0=t0,
                                     cache_mode=cache_mode)

    @torch.inference_mode()
    def generate_answers(self, embeds: Sequence[torch.Tensor], prompts: Sequence[Prompt], *,
                         sampling: SamplingOptions | None = None, on_text: Callable[[int, str], None] | None = None,
                         max_new: int | None = None, t0: float | None = None, cache=None,
                         cache_mode: str | None = None) -> list[Answer]:
        """Generate the answers of prompts already embedded (``prompt_embeddings``), in one batch.

        The KV cache is kept as ``cache_mode`` says, a mode the caller already checked against the memory
        (None: checked here, as ``self.kv_cache`` asks, ``kv_cache_mode``). ``cache``: an empty full
        ``DynamicCache`` to fill instead, which keeps the prompt's keys and values afterwards for scoring
        (evidence, choices); one prompt only, as a batch is left-padded; its ``cache_mode`` is "full"."""
        if cache is not None and len(embeds) != 1:
            raise ValueError("a cache can be kept for one prompt at a time")
        if cache is not None and cache_mode not in (None, "full"):
            raise ValueError(f"a kept cache is a full one, not {cache_mode}")
        t0 = time.perf_counter() if t0 is None else t0
        sampling = sampling or SamplingOptions()
        if max_new is None:
            max_new = answer_room(self.context_length, max(p.tokens for p in prompts), sampling.max_new_tokens,
                                  n_frames=prompts[0].n_frames, tokens_per_frame=self.tokens_per_frame)
        if cache_mode is None:  # not checked by the caller; a kept cache is a full one: check that it fits too
            cache_mode = self.kv_cache_mode(max(p.tokens for p in prompts), len(prompts), new_tokens=max_new,
                                            text_tokens=max(p.tokens - p.n_frames * self.tokens_per_frame
                                                            for p in prompts),
                                            requested="full" if cache is not None else None)
        texts = self._generate(embeds, sampling, max_new, on_text, prompts[0].template, cache_mode, cache=cache)
        seconds = time.perf_counter() - t0
        return [Answer(text=text, prompt_tokens=p.tokens, new_tokens=n, frames=p.n_frames, seconds=seconds,
                       question=p.question, truncated=n >= max_new) for p, (text, n) in zip(prompts, texts)]

    def kv_cache_mode(self, tokens: int, batch: int = 1, *, new_tokens: int = 0, text_tokens: int | None = None,
                      requested: str | None = None) -> str:
        """The KV-cache mode for ``batch`` prompts of up to ``tokens`` tokens plus ``new_tokens`` answer tokens, as
        ``self.kv_cache`` asks (or ``requested``: "full" where a cache is kept for scoring) through
        ``llamavid.model.kvcache.plan_cache``; a note goes to ``self.callbacks`` when auto picks a quantized cache.
        A prompt that fits no mode is refused with a ``--max-frames`` that fits (``text_tokens``: the prompt's
        tokens that are not frames)."""
        from ..core.errors import MemoryLimitError
        from .kvcache import CacheShape, plan_cache

        known = [x for x in (self.memory_left, self.probes.available(self.device)) if x is not None]
        host = self.probes.available(torch.device("cpu")) if self.device.type == "cuda" else None
        try:
            mode, note = plan_cache(CacheShape.of(self.llm.config, self.dtype), requested or self.kv_cache,
                                    tokens=tokens + new_tokens,
                                    batch=batch,
                                    chunk=PREFILL_CHUNK, device=self.device, available=min(known) if known else None,
                                    host_available=host)
        except MemoryLimitError as exc:
            fit = getattr(exc, "fit_tokens", 0)
            if text_tokens is None:
                raise
            frames = max(0, (fit - new_tokens - text_tokens) // self.tokens_per_frame)
            advice = f"use --max-frames {frames}" if frames else "no frame fits beside the text"
            if requested is not None:
                advice += ", or ask without --evidence / --choice (they keep a full-precision cache)"
            elif self.kv_cache in ("full", "int8"):
                advice += ", or --kv-cache auto"
            if not self.weight_bits:
                advice += ", or --quantize 8bit / 4bit to leave more memory to the cache"
            raise MemoryLimitError(f"{exc}; {advice}") from None
        if note:
            self.callbacks.say(note)
        return mode

    def _generate(self, embeds: Sequence[torch.Tensor], sampling: SamplingOptions, max_new: int,
                  on_text: Callable[[int, str], None] | None, template: str,
                  cache_mode: str = "full", cache=None) -> list[tuple[str, int]]:
        """Left-padded batch generation -> (answer text without the stop string, new tokens) per row."""
        opts = SamplingOptions(max_new_tokens=max_new, temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=sampling.seed)
        batch, mask = _left_pad(embeds)
        decoders = [StreamDecoder(self.text_tokenizer) for _ in embeds]

        def on_token(row: int, tok: int) -> None:
            piece = decoders[row].push(tok)
            if piece and on_text is not None:
                on_text(row, piece)

        outs = generate(self.llm, batch, mask if len(embeds) > 1 else None, stop_ids=[self.text_tokenizer.eos_id],
                        opts=opts, on_token=on_token, cache_mode=cache_mode, cache=cache)
        if on_text is not None:
            for row, decoder in enumerate(decoders):
                rest = decoder.finish()
                if rest:
                    on_text(row, rest)
        stop_text = get_template(template).stop_string
        results = []
        for ids in outs:
            text = self.text_tokenizer.decode(ids).strip()
            if stop_text and stop_text.strip() and text.endswith(stop_text):
                text = text[: -len(stop_text)].strip()
            results.append((text, len(ids)))
        return results

    @torch.inference_mode()
    def answer_batch(self, features: Features, questions: Sequence[str], *, frame_subtitles: Sequence[str] | None = None,
                     history: Sequence[tuple[str, str]] = (), long_video: bool | None = None, template: str | None = None,
                     sampling: SamplingOptions | None = None, on_text: Callable[[int, str], None] | None = None,
                     frame_indices: Sequence[int] | None = None, chunk_frames: int = 64) -> list[Answer]:
        """Answer several questions about one video in one batch (prompts built here; see ``answer_prompts``)."""
        n_frames = len(frame_indices) if frame_indices is not None else _num_frames(features)
        prompts = [self.prompt(q, n_frames=n_frames, long_video=long_video, frame_subtitles=frame_subtitles,
                               history=history, template=template) for q in questions]
        return self.answer_prompts(features, prompts, sampling=sampling, on_text=on_text, frame_indices=frame_indices,
                                   chunk_frames=chunk_frames)

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
        max_new = answer_room(self.context_length, len(ids), sampling.max_new_tokens, n_frames=0,
                              tokens_per_frame=self.tokens_per_frame)
        on_text = None if stream is None else (lambda _row, piece: stream(piece))
        cache_mode = self.kv_cache_mode(len(ids), 1, new_tokens=max_new)
        [(reply, n)] = self._generate([self.embed_prompt(ids, [])], sampling, max_new, on_text,
                                      template or self.config.conv_mode, cache_mode)
        return Answer(text=reply, prompt_tokens=len(ids), new_tokens=n, frames=0, seconds=time.perf_counter() - t0,
                      question=text, truncated=n >= max_new)


def _refuse_placeholder(question: str, history: Sequence[tuple[str, str]], frame_subtitles: Sequence[str] | None) -> None:
    """Text may not contain ``<image>``: the prompt marks the places of visual tokens with it."""
    texts = [("the question", question)] + [("an earlier turn", t) for turn in history for t in turn]
    texts += [("a subtitle", t) for t in frame_subtitles or ()]
    for what, text in texts:
        if IMAGE_PLACEHOLDER in text:
            raise InputError(f"{what} contains {IMAGE_PLACEHOLDER}, which marks where the video goes in the prompt; "
                             "leave it out")


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


def _read_features(features: Features, start: int, stop: int, indices: Sequence[int] | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """Frames [start, stop) of the selection (all frames, or ``indices``), read in ``dtype`` where the
    source can (a ``.vidtok`` converts from its stored float16/int8 straight to it)."""
    if indices is not None:
        picked = [int(i) for i in indices[start:stop]]
        if isinstance(features, torch.Tensor):
            return features[picked]
        if isinstance(features, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(features[picked]))
        return features.frames(picked, dtype=dtype)  # type: ignore[union-attr]
    if isinstance(features, torch.Tensor):
        chunk = features[start:stop]
    elif isinstance(features, np.ndarray):
        chunk = torch.from_numpy(np.ascontiguousarray(features[start:stop]))
    else:
        chunk = features.features(start, stop, dtype=dtype)
    if chunk.device.type == "cpu" and torch.cuda.is_available():
        chunk = chunk.pin_memory()
    return chunk
