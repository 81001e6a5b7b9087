"""Prompts: the published conversation templates, the long-video (movie) prompt, and their token ids.

A prompt is text with ``<image>`` placeholders. It is tokenized the published way: split at ``<image>``,
encode every chunk separately with the LLaMA sentencepiece model (so every chunk gets sentencepiece's
dummy-prefix space), keep BOS only at the very start, and leave a slot (``IMAGE_SLOT``) where each
``<image>`` stood; the model later puts visual tokens into the slots.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.errors import CheckpointError

IMAGE_PLACEHOLDER = "<image>"
IMAGE_SLOT = -200  # the published IMAGE_TOKEN_INDEX

MOVIE_START = "Below is a movie. Memorize the content and answer my question after watching this movie."
MOVIE_END = "Now the movie end."

_USER_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")
_HUMAN_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@dataclass(frozen=True)
class ConvTemplate:
    """A conversation template. style "two": ``system sep role: msg sep|sep2 ... role:``; "plain": messages only."""

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str
    style: str = "two"

    @property
    def stop_string(self) -> str:
        return self.sep2 if self.style == "two" else self.sep

    def render(self, turns: Sequence[tuple[str, str | None]], system: str | None = None) -> str:
        """turns: (user message, assistant reply or None for the one to generate) -> prompt text.

        ``system``: a caller's system message (an API client's). It follows the template's own system prompt
        (separated by a space; on a line of its own in the "plain" style), which stays first, as the model
        was trained with it; None leaves the prompt exactly as published."""
        head = self.system if not system else (f"{self.system} {system}" if self.system else system)
        if self.style == "plain":
            out = head + (self.sep if system else "")
            for user, reply in turns:
                out += user + self.sep
                if reply is not None:
                    out += reply + self.sep2
            return out
        out = head + self.sep
        for user, reply in turns:
            out += f"{self.roles[0]}: {user}{self.sep}"
            out += f"{self.roles[1]}: {reply}{self.sep2}" if reply is not None else f"{self.roles[1]}:"
        return out


TEMPLATES: dict[str, ConvTemplate] = {
    "vicuna_v1": ConvTemplate("vicuna_v1", _USER_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    "imgsp_v1": ConvTemplate("imgsp_v1", _USER_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    "llava_v1": ConvTemplate("llava_v1", _HUMAN_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    # The published "plain" template has no second separator; "\n" keeps multi-turn history well formed.
    "plain": ConvTemplate("plain", "", ("", ""), "\n", "\n", style="plain"),
}


def get_template(name: str) -> ConvTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise CheckpointError(f"unknown conversation template {name!r} (known: {', '.join(TEMPLATES)})") from None


def image_message(question: str) -> str:
    """The user turn of a short-video / image question: all visual tokens, a newline, the question."""
    return f"{IMAGE_PLACEHOLDER}\n{question}"


def movie_message(frame_subtitles: Sequence[str], question: str) -> str:
    """The published long-video user turn: per frame, its visual tokens then that frame's subtitle text.

    One ``<image>`` per frame (the model fills it with that frame's 1 + n tokens), exactly as the release
    concatenated ``<image>`` + subtitle text with no separator, between the fixed start and end sentences.
    """
    body = "".join(IMAGE_PLACEHOLDER + text for text in frame_subtitles)
    return f"{MOVIE_START}{body}{MOVIE_END}\n{question}"


class TextTokenizer:
    """The LLM tokenizer. For a ``tokenizer.model`` the published ids come from sentencepiece itself.

    (transformers' AutoTokenizer on a model_type "llava" checkpoint drops the dummy prefix, and
    ``LlamaTokenizer(vocab_file=...)`` builds an empty tokenizer: both give ids unlike training.)
    A ``tokenizer.json`` (no sentencepiece model) is read with the ``tokenizers`` library instead.
    """

    def __init__(self, path: str | os.PathLike, *, bos_id: int | None = None, eos_id: int | None = None):
        path = Path(path)
        self.path = path
        self._sp = None
        self._hf = None
        if path.suffix == ".model":
            import sentencepiece as spm

            try:
                self._sp = spm.SentencePieceProcessor(model_file=str(path))
            except Exception as exc:
                raise CheckpointError(f"not a sentencepiece model ({' '.join(str(exc).split())[:120]})",
                                      where=path) from None
            self.bos_id = self._sp.bos_id() if bos_id is None else bos_id
            self.eos_id = self._sp.eos_id() if eos_id is None else eos_id
            self.vocab_size = self._sp.get_piece_size()
            # The published (slow, legacy) LlamaTokenizer first splits text at its special tokens and maps
            # them to their ids ("</s>" between chat turns becomes EOS), then sentencepiece-encodes each
            # piece (each with its own dummy prefix).
            specials = {self._sp.id_to_piece(i): i for i in (self._sp.unk_id(), self.bos_id, self.eos_id) if i >= 0}
            self._specials = specials
            self._special_split = re.compile("("
                                             + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))
                                             + ")")
        else:
            from tokenizers import Tokenizer

            try:
                self._hf = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise CheckpointError(f"not a tokenizers JSON file ({' '.join(str(exc).split())[:120]})",
                                      where=path) from None
            self._hf.no_padding()
            self._hf.no_truncation()
            self.bos_id = bos_id if bos_id is not None else self._hf.token_to_id("<s>")
            self.eos_id = eos_id if eos_id is not None else self._hf.token_to_id("</s>")
            self.vocab_size = self._hf.get_vocab_size()
        if self.bos_id is None or self.bos_id < 0 or self.eos_id is None or self.eos_id < 0:
            raise CheckpointError("tokenizer has no <s>/</s> tokens", where=path)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, **kw) -> "TextTokenizer":
        directory = Path(directory)
        for name in ("tokenizer.model", "tokenizer.json"):
            if (directory / name).is_file():
                return cls(directory / name, **kw)
        raise CheckpointError("no tokenizer.model or tokenizer.json in the checkpoint directory", where=directory)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS (sentencepiece adds its dummy-prefix space)."""
        if not text:
            return []
        if self._sp is not None:
            ids: list[int] = []
            for piece in self._special_split.split(text):
                if piece in self._specials:
                    ids.append(self._specials[piece])
                elif piece:
                    ids.extend(self._sp.encode(piece))
            return ids
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if int(i) >= 0]
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=True)

    def is_special(self, token: int) -> bool:
        """A control token (<s>, </s>, <unk>...): no text of its own."""
        if self._sp is not None:
            return bool(self._sp.is_control(token) or self._sp.is_unknown(token))
        return token in (self.bos_id, self.eos_id)

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for where it follows other text (sentencepiece's "\u2581" is a space, a
        byte-fallback token its byte); a control token's piece name (e.g. b"</s>")."""
        if self._sp is not None:
            piece = self._sp.id_to_piece(int(token))
            if self._sp.is_byte(int(token)):
                return bytes([int(piece[3:5], 16)])
            return piece.replace("\u2581", " ").encode("utf-8")
        piece = self._hf.id_to_token(int(token)) or ""
        return self._hf.decode([int(token)], skip_special_tokens=False).encode("utf-8") if piece else b""

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of ``text`` as it would be tokenized after other text: without sentencepiece's dummy-prefix space
        (for constrained decoding, which tokenizes pieces of an answer)."""
        if self._sp is None:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        if not text:
            return []
        mark = self._sp.encode("<unk>")  # HF's legacy=False rule: encode after a marker, then drop it
        return list(self._sp.encode("<unk>" + text))[len(mark):]


def tokenize_prompt(prompt: str, tokenizer: TextTokenizer) -> list[int]:
    """Prompt text -> ids with BOS first and ``IMAGE_SLOT`` where each ``<image>`` stood (published rule)."""
    ids = [tokenizer.bos_id]
    for i, chunk in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_SLOT)
        ids.extend(tokenizer.encode(chunk))
    return ids
