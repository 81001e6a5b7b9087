"""Constrained decoding: answers that are JSON following a schema (OpenAI's ``response_format``).

The grammar engine is llguidance (Microsoft's, used by vLLM, SGLang and llama.cpp): a JSON schema is compiled
into a grammar over the model's own tokens, and at every decoding step it says which tokens may come next
(a bitmask); the loop in ``llamavid.model.generation`` masks the others out before picking. llguidance is an
optional dependency (``pip install 'llamavid[serve]'``); asking for a schema without it is a one-line error.

The tokenizer is given to llguidance as the bytes of every token (``TextTokenizer.token_bytes``; control
tokens marked special) and a way to tokenize a piece of an answer (``encode_continuation``: no sentencepiece
dummy-prefix space), and is built once per tokenizer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

import torch

from ..core.errors import InputError, Opt

if TYPE_CHECKING:
    from .prompt import TextTokenizer

# JSON as the answer is written: no free whitespace (a small model could otherwise fill its answer with it),
# OpenAI's separators; schema keywords llguidance does not implement are ignored rather than refused.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise InputError(Opt("json_schema"), " (response_format) needs the llguidance package: "
                         "pip install 'llamavid[serve]'") from None
    return llguidance


class _Vocabulary:
    """What llguidance's ``TokenizerWrapper`` reads of a tokenizer."""

    def __init__(self, tokenizer: "TextTokenizer", vocab_size: int):
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id
        size = min(vocab_size, tokenizer.vocab_size)
        self.special_token_ids = [i for i in range(size) if tokenizer.is_special(i)]
        special = set(self.special_token_ids)
        self.tokens = [b"\xff" + tokenizer.token_bytes(i) if i in special else tokenizer.token_bytes(i)
                       for i in range(size)] + [b""] * (vocab_size - size)
        self._tokenizer = tokenizer

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode_continuation(text)


def grammar_tokenizer(tokenizer: "TextTokenizer", vocab_size: int):
    """llguidance's view of ``tokenizer`` for logits of ``vocab_size`` entries (built once, kept on it)."""
    cached = getattr(tokenizer, "_llguidance", None)
    if cached is not None and cached[0] == vocab_size:
        return cached[1]
    llg = _llguidance()
    built = llg.LLTokenizer(llg.TokenizerWrapper(_Vocabulary(tokenizer, vocab_size)), n_vocab=vocab_size)
    tokenizer._llguidance = (vocab_size, built)  # type: ignore[attr-defined]
    return built


def schema_grammar(schema: str, tokenizer: "TextTokenizer", vocab_size: int) -> str:
    """The grammar of ``schema`` (canonical JSON text), checked against the tokenizer: an ``InputError`` naming
    the option says why a schema cannot be followed."""
    llg = _llguidance()
    try:
        grammar = llg.LLMatcher.grammar_from_json_schema(json.loads(schema), defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise InputError(Opt("json_schema"), f": not a schema llamavid can follow ({_short(exc)})") from None
    error = llg.LLMatcher.validate_grammar(grammar, grammar_tokenizer(tokenizer, vocab_size))
    if error:
        raise InputError(Opt("json_schema"), f": not a schema llamavid can follow ({_short(error)})")
    return grammar


def _short(error: object) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:199] + "…"


class Constraint:
    """One matcher per row of a batch: which tokens each row may pick next, and the tokens it picked."""

    def __init__(self, grammar: str, tokenizer: "TextTokenizer", vocab_size: int, rows: int):
        llg = _llguidance()
        lltok = grammar_tokenizer(tokenizer, vocab_size)
        self.vocab_size = vocab_size
        self.matchers = [llg.LLMatcher(lltok, grammar, log_level=0) for _ in range(rows)]
        self.eos = tokenizer.eos_id

    def allowed(self, rows: Sequence[int], device: torch.device) -> torch.Tensor:
        """(B, V) booleans: True where a row may pick a token (rows not in ``rows`` may pick any)."""
        mask = torch.ones(len(self.matchers), self.vocab_size, dtype=torch.bool)
        for row in rows:
            matcher = self.matchers[row]
            if matcher.is_error() or matcher.is_stopped():
                allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            else:
                bits = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.uint8)
                shifts = torch.arange(8, dtype=torch.uint8)
                allowed = ((bits[:, None] >> shifts) & 1).flatten()[: self.vocab_size].bool()
            if not bool(allowed.any()):  # a matcher with nothing left to say: the answer ends here
                allowed[self.eos] = True
            mask[row] = allowed
        return mask.to(device)

    def advance(self, row: int, token: int) -> bool:
        """Take a picked token; True when the row's answer is complete (nothing more may follow)."""
        matcher = self.matchers[row]
        if token == self.eos or not matcher.consume_token(token):
            return True
        return matcher.is_stopped()
