"""Teacher-forced log-likelihood of given answers: the one place answers are scored rather than generated.

Multiple choice (``--choice``) and evidence (``--evidence``) both ask "how likely is this answer after
this prompt?". Both go through ``PromptScorer``:

* the prompt's **prefix** (everything up to ``cut``) is run through the LLM once and kept in its KV cache;
* any number of **tails** (the rest of the prompt, then an answer fed back token by token) are packed
  into ONE sequence after that prefix and run together. A 4-D attention mask keeps the tails apart
  (each sees the prefix and its own earlier tokens only) and can hide prompt positions from a tail
  (``hide``): that is how evidence takes frames away from the answer (see ``PromptScorer.score``).

The scoring rule (the same as the training objective, llamavid/train/objective.py): an answer's tokens
are ``tokenizer.encode(text) + [</s>]``, i.e. the reply and the end of the reply; its log-likelihood is
the sum of ``log p(token | prompt, earlier answer tokens)`` over those tokens. ``Scored.mean`` divides
by their number (length normalisation), so a long option is not penalised for being long, and the end
token makes an option that is only the start of a likelier answer ("red" vs "red circle") pay for it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .generation import cache_argument

PACK_TOKENS = 2048  # tail tokens run in one pass (bounds the 4-D mask: tokens x (prefix + tokens))
PREFILL_CHUNK = 4096


@contextmanager
def eager_attention(llm) -> Iterator[None]:
    """Run the LLM with eager attention inside the block, which returns its weights (sdpa returns none), and
    put back what it had, whatever happens."""
    config = llm.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


def answer_ids(model, text: str) -> list[int]:
    """The tokens an answer is scored on: the reply's ids and the end-of-reply token (as in training)."""
    return list(model.text_tokenizer.encode(text.strip())) + [model.text_tokenizer.eos_id]


@dataclass(frozen=True)
class Scored:
    """The log-likelihood of one answer: the sum over its ``tokens`` tokens (natural log)."""

    logprob: float
    tokens: int

    @property
    def mean(self) -> float:
        """Length-normalised: the mean log-probability per token."""
        return self.logprob / max(1, self.tokens)

    @property
    def per_token(self) -> float:
        """exp(mean): the geometric mean of the tokens' probabilities, in (0, 1]."""
        import math

        return math.exp(self.mean)


@dataclass(frozen=True)
class ChoiceScore:
    """One option of a multiple-choice question and its length-normalised score: exp(mean log-probability
    per token), the geometric mean of its tokens' probabilities, in (0, 1]."""

    choice: str
    score: float
    logprob: float  # the sum over the option's tokens (its end token included)
    tokens: int

    def to_json(self) -> dict:
        return {"choice": self.choice, "score": round(self.score, 6)}


def choose(model, embeds: torch.Tensor, choices: Sequence[str]) -> tuple[int, list[ChoiceScore]]:
    """Score every option as the answer to the prompt ``embeds``; (index of the best, scores in order).

    The best has the highest mean log-probability per token; a tie goes to the option given first.
    """
    scorer = PromptScorer(model, embeds)
    scored = scorer.score([answer_ids(model, c) for c in choices])
    out = [ChoiceScore(c, s.per_token, s.logprob, s.tokens) for c, s in zip(choices, scored)]
    best = max(range(len(out)), key=lambda i: (scored[i].mean, -i))
    return best, out


def empty_cache(model):
    """A KV cache for generation to fill and a ``PromptScorer`` to reuse afterwards."""
    from transformers import DynamicCache

    return DynamicCache(config=model.llm.config)


def rewind(cache, length: int) -> None:
    """Cut a KV cache back to its first ``length`` positions (``crop(-n)`` removes the last n in every
    transformers version that has ``crop``)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)
    if cache.get_seq_length() != length:
        raise RuntimeError(f"KV cache holds {cache.get_seq_length()} positions after rewinding to {length}")


class PromptScorer:
    """One prompt's prefix in the LLM's KV cache; tails (prompt rest + an answer) scored against it.

    ``embeds`` is the whole prompt embedded (visual tokens spliced in, as for generation); positions
    ``[0, cut)`` are the prefix, kept in the cache; ``cut`` must leave at least one prompt token for the
    tails (the one whose output predicts the answer's first token). ``cache``: the KV cache that
    generating the answer to this very prompt left behind; it is cut back to the prefix and used, so
    the prefix is not computed twice.
    """

    def __init__(self, model, embeds: torch.Tensor, cut: int | None = None, *, cache=None):
        from transformers import DynamicCache

        length = int(embeds.shape[0])
        cut = length - 1 if cut is None else int(cut)
        if not 0 < cut < length:
            raise ValueError(f"prefix cut {cut} must leave 1..{length - 1} prompt tokens in the prefix")
        self.model, self.llm = model, model.llm
        self.cut = cut
        self.rest = embeds[cut:]
        self._kw = cache_argument(self.llm)
        if cache is not None and cache.get_seq_length() >= cut:
            # the cache generation left behind (this prompt, then the answer): its first ``cut`` positions
            # are exactly the prefix, so nothing is computed again
            self.cache = cache
            rewind(cache, cut)
            return
        self.cache = DynamicCache(config=self.llm.config)
        with torch.inference_mode():
            for start in range(0, cut, PREFILL_CHUNK):
                end = min(cut, start + PREFILL_CHUNK)
                self.llm(inputs_embeds=embeds[None, start:end],
                         position_ids=torch.arange(start, end, device=embeds.device)[None],
                         use_cache=True, logits_to_keep=1, **{self._kw: self.cache})

    # -- scoring ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, answers: Sequence[Sequence[int]], *, hide: Sequence[torch.Tensor | None] | None = None,
              pack_tokens: int = PACK_TOKENS) -> list[Scored]:
        """The log-likelihood of each answer (token ids, see ``answer_ids``) after the prompt.

        ``hide[i]`` (None: nothing hidden): a boolean mask over the prompt's positions (the prefix, or the
        prefix and the rest) that tail i must do without. Hidden positions of the REST are left out of
        that tail altogether (exactly as if they were not in the prompt; the positions after them close
        up), so a tail costs only the tokens it keeps. Hidden positions of the PREFIX were computed into
        the cache with everything else, so they are hidden only from the tail's own tokens (the kept rest
        of the prompt and the answer). Tails are packed into as few passes as ``pack_tokens`` allows;
        the cache is rewound after each.
        """
        if hide is not None and len(hide) != len(answers):
            raise ValueError(f"{len(hide)} hide masks for {len(answers)} answers")
        results: list[Scored | None] = [None] * len(answers)
        tails = []
        for i, ids in enumerate(answers):
            if not ids:
                raise ValueError("an answer to score has no tokens")
            tails.append((i, list(ids), self._hidden(hide[i] if hide is not None else None)))
        pack: list = []
        size = 0
        for tail in tails:
            n = self._kept(tail[2]) + len(tail[1]) - 1
            if pack and size + n > pack_tokens:
                self._run(pack, results)
                pack, size = [], 0
            pack.append(tail)
            size += n
        if pack:
            self._run(pack, results)
        return results  # type: ignore[return-value]

    def _kept(self, hidden: torch.Tensor | None) -> int:
        r = self.rest.shape[0]
        return r if hidden is None else r - int(hidden[self.cut:].sum())

    def _run(self, pack: list, results: list) -> None:
        embed = self.llm.get_input_embeddings()
        device, dtype = self.rest.device, self.rest.dtype
        p = self.cut
        pieces, blocks, targets = [], [], []
        q = 0
        for i, ids, hidden in pack:
            rest = self.rest if hidden is None else self.rest[~hidden[p:]]
            fed = embed(torch.as_tensor(ids[:-1], device=device, dtype=torch.long)).to(dtype) if len(ids) > 1 else \
                self.rest.new_zeros(0, self.rest.shape[1])
            pieces += [rest, fed]
            n = rest.shape[0] + len(ids) - 1
            blocks.append((q, n, None if hidden is None else hidden[:p]))
            # the outputs at the last kept prompt token and the fed answer tokens predict the answer
            targets.append((i, q + rest.shape[0] - 1, ids))
            q += n
        allowed = torch.zeros(q, p + q, dtype=torch.bool, device=device)
        positions = torch.empty(q, dtype=torch.long, device=device)
        for start, n, prefix_hidden in blocks:
            allowed[start:start + n, :p] = True if prefix_hidden is None else ~prefix_hidden
            allowed[start:start + n, p + start:p + start + n] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
            positions[start:start + n] = torch.arange(p, p + n, device=device)
        keep = torch.cat([torch.arange(first, first + len(ids), device=device) for _, first, ids in targets])
        out = self.llm(inputs_embeds=torch.cat(pieces)[None], attention_mask=allowed[None, None],
                       position_ids=positions[None], use_cache=True, logits_to_keep=keep, **{self._kw: self.cache})
        rewind(self.cache, p)
        logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
        row = 0
        for i, _, ids in targets:
            rows = logprobs[row:row + len(ids)]
            total = rows.gather(1, torch.as_tensor(ids, device=device)[:, None]).sum()
            results[i] = Scored(float(total), len(ids))
            row += len(ids)

    def _hidden(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """A hide mask over the prompt (prefix + rest); a mask over the prefix only is padded."""
        if mask is None:
            return None
        p, r = self.cut, self.rest.shape[0]
        mask = mask.to(device=self.rest.device, dtype=torch.bool)
        if mask.shape[0] == p:
            mask = torch.cat([mask, torch.zeros(r, dtype=torch.bool, device=mask.device)])
        if mask.shape[0] != p + r:
            raise ValueError(f"a hide mask covers {mask.shape[0]} positions; the prompt has {p + r}")
        if bool(mask[p + r - 1]):
            raise ValueError("the last prompt token cannot be hidden (it predicts the answer)")
        return mask

    # -- attention ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def attention(self, answer: Sequence[int]) -> torch.Tensor:
        """How much the positions that predict the answer's tokens attend to each prefix position:
        attention weights averaged over layers, heads and those positions -> (cut,) (sums to <= 1).

        Runs the tail once with eager attention (sdpa returns no weights); the model is left as it was.
        """
        ids = list(answer)
        embed = self.llm.get_input_embeddings()
        device, dtype = self.rest.device, self.rest.dtype
        p, r = self.cut, self.rest.shape[0]
        fed = embed(torch.as_tensor(ids[:-1], device=device, dtype=torch.long)).to(dtype)
        tail = torch.cat([self.rest, fed])
        n = tail.shape[0]
        allowed = torch.ones(n, p + n, dtype=torch.bool, device=device)
        allowed[:, p:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        additive = torch.zeros(n, p + n, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        try:
            with eager_attention(self.llm):
                out = self.llm(inputs_embeds=tail[None], attention_mask=additive[None, None],
                               position_ids=torch.arange(p, p + n, device=device)[None], use_cache=True,
                               logits_to_keep=1, output_attentions=True, **{self._kw: self.cache})
        finally:
            rewind(self.cache, p)
        if not out.attentions:
            raise RuntimeError("the LLM returned no attention weights")
        rows = slice(r - 1, r - 1 + len(ids))
        stacked = torch.stack([a[0, :, rows, :p].float() for a in out.attentions])  # (layers, heads, answer, p)
        return stacked.mean(dim=(0, 1, 2))


__all__ = ["ChoiceScore", "PromptScorer", "Scored", "answer_ids", "choose", "eager_attention", "empty_cache",
           "rewind"]
