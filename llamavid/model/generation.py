"""Token generation: greedy or nucleus sampling over a LLaMA with a KV cache, streamed token by token.

``generate`` is the one entry point: embedded prompts (``LlamaVid.prompt_embeddings``, or a text-only
``LlamaVid.text_prompt`` embedded) -> ``Answer``s. How many tokens it may produce and how the KV cache is
kept are the caller's plan (llamavid.pipeline.planning decides both); nothing is decided here.

Our own loop rather than transformers' ``generate()``: it takes embeddings with visual tokens spliced in,
never picks up a checkpoint's ``generation_config.json`` behind the user's back, prefills very long prompts
(64K-token movies) in chunks computing logits for the last position only, and reports every token as it
comes.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..core.options import SamplingOptions  # re-exported: the sampler's settings live with the other options
from .prompt import get_template

if TYPE_CHECKING:
    from .modeling import LlamaVid, Prompt

# Prompt tokens per forward call while prefilling. CPU attention (sdpa's flash kernel) never materializes the
# scores; what grows with the chunk is the (chunk x prompt) mask and one layer's activations on the chunk.
PREFILL_CHUNK = 4096


def pick_tokens(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids: argmax at temperature 0, else top-p sampling at that temperature."""
    logits = logits.float()
    if opts.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / opts.temperature, dim=-1)
    if opts.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= opts.top_p, 0.0)  # always keeps the top token
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def make_generator(opts: SamplingOptions, device: torch.device) -> torch.Generator | None:
    if opts.seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(opts.seed))
    return gen


def logits_size(llm) -> int:
    """Entries in the LLM's logits: the token ids generation can produce (a logit bias may name)."""
    return int(llm.config.vocab_size)


def cache_argument(llm) -> str:
    """The forward() keyword for the KV cache: ``cache`` in newer transformers 5.x, else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (before penalties, biases, temperature and any
    constraint), with the likeliest tokens at that step (``top``: (token, log-probability), best first)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


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
    cancelled: bool = False  # generation was stopped by the caller (``generate``'s ``cancelled``)
    logprobs: list[TokenLogprob] | None = None  # per generated token, when sampling.logprobs is set


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first of the ``stops`` it contains, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


@torch.inference_mode()
def generate(model: "LlamaVid", embeds: Sequence[torch.Tensor], prompts: Sequence["Prompt"], *,
             sampling: SamplingOptions, max_new: int, cache_mode: str = "full",
             on_text: Callable[[int, str], None] | None = None, cache=None, t0: float | None = None,
             cancelled: Callable[[int], bool] | None = None) -> list[Answer]:
    """Answers to embedded prompts (one (L, H) tensor per prompt), generated together in one batch.

    ``max_new``: new tokens allowed (the plan's answer room); ``cache_mode``: how the KV cache is kept (the
    plan's, ``llamavid.model.kvcache``); ``cache``: an empty full ``DynamicCache`` to fill instead, which
    keeps the prompt's keys and values afterwards for scoring (evidence); one prompt only, as a batch is
    left-padded. ``on_text(row, piece)`` receives each answer's text as it is generated. ``t0``: when the
    work for these answers started (their ``seconds`` count from it; default: now). ``cancelled(row)``:
    asked before the first token and after every token of a row; True stops that row at once (its answer
    is what was generated so far, marked ``cancelled``), the other rows go on.

    ``sampling``'s generation controls (stop strings, penalties, logit bias, log-probabilities, a JSON
    schema; ``SamplingOptions``) apply to every row; at their defaults nothing differs from plain sampling.
    """
    if cache is not None and (len(embeds) != 1 or cache_mode != "full"):
        raise ValueError("a kept cache is a full one, for one prompt at a time")
    t0 = time.perf_counter() if t0 is None else t0
    opts = dataclasses.replace(sampling, max_new_tokens=max_new)
    batch, mask = _left_pad(embeds)
    tokenizer = model.text_tokenizer
    decoders = [StreamDecoder(tokenizer) for _ in embeds]
    stops = opts.stop
    stopped = [False] * len(embeds)
    halted = [False] * len(embeds)

    def on_token(row: int, tok: int) -> bool:
        piece = decoders[row].push(tok)
        if piece and on_text is not None:
            on_text(row, piece)
        if stops and piece and cut_at_stop(decoders[row].text, stops)[1]:
            stopped[row] = True
            return True
        return halt(row)

    def halt(row: int) -> bool:
        if cancelled is not None and cancelled(row):
            halted[row] = True
        return halted[row]

    constraint = None
    if opts.json_schema is not None:
        from .constrain import Constraint, schema_grammar

        vocab = logits_size(model.llm)
        constraint = Constraint(schema_grammar(opts.json_schema, tokenizer, vocab), tokenizer, vocab, len(embeds))
    traces: list[list[TokenLogprob]] | None = [[] for _ in embeds] if opts.logprobs is not None else None
    outs = _decode(model.llm, batch, mask if len(embeds) > 1 else None, stop_ids=[tokenizer.eos_id],
                   opts=opts, on_token=on_token, cache_mode=cache_mode, cache=cache,
                   halt=halt if cancelled is not None else None, constraint=constraint, traces=traces)
    if on_text is not None:
        for row, decoder in enumerate(decoders):
            rest = decoder.finish()
            if rest:
                on_text(row, rest)
    stop_text = get_template(prompts[0].template).stop_string
    seconds = time.perf_counter() - t0
    answers = []
    for row, (p, ids) in enumerate(zip(prompts, outs)):
        text = tokenizer.decode(ids)
        if stops:
            text, stopped[row] = cut_at_stop(text, stops)
        text = text.strip()
        if stop_text and stop_text.strip() and text.endswith(stop_text):
            text = text[: -len(stop_text)].strip()
        answers.append(Answer(text=text, prompt_tokens=p.tokens, new_tokens=len(ids), frames=p.n_frames,
                              seconds=seconds, question=p.question,
                              truncated=len(ids) >= max_new and not stopped[row] and not halted[row],
                              cancelled=halted[row], logprobs=None if traces is None else traces[row]))
    return answers


def _left_pad(embeds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(e.shape[0] for e in embeds)
    batch = embeds[0].new_zeros(len(embeds), longest, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), longest, dtype=torch.long, device=embeds[0].device)
    for i, e in enumerate(embeds):
        batch[i, longest - e.shape[0]:] = e
        mask[i, longest - e.shape[0]:] = 1
    return batch, mask


def _decode(
    llm,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    stop_ids: Sequence[int],
    opts: SamplingOptions,
    on_token: Callable[[int, int], bool | None] | None = None,
    prefill_chunk: int = PREFILL_CHUNK,
    cache_mode: str = "full",
    cache=None,
    halt: Callable[[int], bool] | None = None,
    constraint=None,
    traces: list[list[TokenLogprob]] | None = None,
) -> list[list[int]]:
    """Generate continuations of left-padded prompts.

    inputs_embeds (B, L, H); attention_mask (B, L) with zeros on the left padding (None: no padding).
    Returns the new token ids per row, without the stop token. ``on_token(row, id)`` is called for
    every kept token as soon as it is chosen; when it returns True the row ends there. ``halt(row)``: asked
    before the first token (True: the row generates nothing). ``cache_mode``: how the KV cache is kept
    (``llamavid.model.kvcache``); ``cache``: an empty cache to fill instead (the caller keeps the prompt's keys
    and values, e.g. to score the answer afterwards). ``constraint``: which tokens each row may pick
    (``llamavid.model.constrain.Constraint``); ``traces``: filled with each kept token's log-probability when
    ``opts.logprobs`` is set. ``opts``'s penalties and logit bias change the logits before the pick.
    """
    from .kvcache import make_cache

    b, length, _ = inputs_embeds.shape
    device = inputs_embeds.device
    results: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=device)
    if halt is not None:
        for row in range(b):
            if halt(row):
                done[row] = True
        if bool(done.all()):
            return results
    if attention_mask is None:
        attention_mask = torch.ones(b, length, dtype=torch.long, device=device)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = make_cache(llm, cache_mode) if cache is None else cache  # filled in place by every forward call
    cache_kw = cache_argument(llm)
    generator = make_generator(opts, device)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), device=device)

    logits = None
    for start in range(0, length, prefill_chunk):
        end = min(length, start + prefill_chunk)
        out = llm(
            inputs_embeds=inputs_embeds[:, start:end],
            attention_mask=attention_mask[:, :end],
            position_ids=positions[:, start:end],
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1]

    shape = _Shaping(opts, b, logits.shape[-1], device) if not opts.plain else None
    next_pos = positions[:, -1] + 1
    embed = llm.get_input_embeddings()
    for _ in range(opts.max_new_tokens):
        if traces is not None:
            scores = logits.float().log_softmax(dim=-1)
        if shape is not None or constraint is not None:
            logits = logits.float()
            if shape is not None:
                logits = shape(logits)
            if constraint is not None:
                live = (~done).nonzero().flatten().tolist()
                logits = logits.masked_fill(~constraint.allowed(live, device), float("-inf"))
        tokens = pick_tokens(logits, opts, generator)
        is_stop = torch.isin(tokens, stops)
        for row in (~done & ~is_stop).nonzero().flatten().tolist():
            tok = int(tokens[row])
            results[row].append(tok)
            if traces is not None:
                traces[row].append(_trace(scores[row], tok, opts.logprobs or 0))
            if shape is not None:
                shape.count(row, tok)
            ended = constraint is not None and constraint.advance(row, tok)
            if on_token is not None and on_token(row, tok):
                ended = True
            if ended:
                done[row] = True
        done |= is_stop
        if bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, (~done).long()[:, None]], dim=1)
        out = llm(
            inputs_embeds=embed(tokens[:, None]),
            attention_mask=attention_mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return results


class _Shaping:
    """OpenAI's logit changes: ``logit_bias``, then ``presence_penalty`` (once a token has appeared) and
    ``frequency_penalty`` (per time it has appeared) over the tokens generated so far."""

    def __init__(self, opts: SamplingOptions, rows: int, vocab: int, device: torch.device):
        self.presence, self.frequency = opts.presence_penalty, opts.frequency_penalty
        self.counts = torch.zeros(rows, vocab, dtype=torch.float32, device=device)
        self.bias = None
        if opts.logit_bias:
            self.bias = torch.zeros(vocab, dtype=torch.float32, device=device)
            ids = torch.tensor([t for t, _ in opts.logit_bias], device=device)
            self.bias[ids] = torch.tensor([v for _, v in opts.logit_bias], device=device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            logits = logits + self.bias
        if self.presence:
            logits = logits - self.presence * (self.counts > 0).float()
        if self.frequency:
            logits = logits - self.frequency * self.counts
        return logits

    def count(self, row: int, token: int) -> None:
        self.counts[row, token] += 1


def _trace(scores: torch.Tensor, token: int, top: int) -> TokenLogprob:
    best = scores.topk(top) if top else None
    pairs = tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ()
    return TokenLogprob(token, float(scores[token]), pairs)


class StreamDecoder:
    """Turns token ids into text pieces as they arrive, holding back incomplete UTF-8 characters."""

    def __init__(self, tokenizer):
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

    def finish(self) -> str:
        """What is left once generation has ended (a character the last tokens never completed)."""
        text = self.tokenizer.decode(self.ids)
        if not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text):], text
        return piece
