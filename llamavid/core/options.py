"""What a question may set (``AskOptions``), validated once at the edge.

The CLI builds one ``AskOptions`` from its flags and every batch line builds one from its JSON fields
(over the CLI's as defaults); both go through the same checks here, so deeper code can trust every value:
finite numbers in range, whole numbers where counts are meant, JSON booleans for switches, text that is
valid UTF-8, subtitle files that exist. Errors name the option and the value in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .choices import DEFAULT_ASR_MODEL, KV_CACHE_CHOICES, SUBTITLE_KEYWORDS, WHISPER_LANGUAGES
from .errors import InputError, Opt, OptionError
from .timecode import format_clock, parse_time

MAX_FPS = 240.0
MAX_CHOICES = 26
MAX_CHOICE_CHARS = 2000  # an option is an answer, not a document


def check_text(text: Any, what: str = "the question") -> str:
    """A string that is valid Unicode (no lone surrogates from undecodable bytes) and shows something: not
    empty, and not only spaces, control characters or invisible format characters (zero-width spaces)."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} is not valid UTF-8 text") from None
    if not any(not c.isspace() and unicodedata.category(c) not in _INVISIBLE for c in text):
        raise InputError(f"{what} is empty" if not text.strip() else f"{what} holds nothing visible (only "
                         "spaces, control or zero-width characters)")
    return text


_INVISIBLE = ("Cc", "Cf", "Zs", "Zl", "Zp")
INT64_MAX = 2**63 - 1
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
MIN_FPS = 1e-4  # one frame every 10,000 s
MIN_TEMPERATURE = 1e-6  # below it, sampling is greedy in all but name and its arithmetic overflows: use 0


def _float(field: str, value: Any) -> float:
    """A JSON/CLI number as a Python float: refuses what is not a number, or is too large to be one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(field, value, "must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise OptionError(field, value, "is too large to be a number") from None
    if not math.isfinite(number):
        raise OptionError(field, value, "must be a finite number")
    return number


def _number(field: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    number = _float(field, value)
    if low is not None and (number < low or (low_open and number == low)):
        raise OptionError(field, value, f"must be {'>' if low_open else '>='} {low:g}")
    if high is not None and number > high:
        raise OptionError(field, value, f"must be <= {high:g}")
    return number


def check_whole(field: str, value: Any, *, low: int, high: int = INT64_MAX) -> int:
    """A whole number in [low, high] (by default what a 64-bit integer holds)."""
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise OptionError(field, value, "must be a whole number")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(field, value, "must be a whole number")
    if value < low:
        raise OptionError(field, value, f"must be at least {low}")
    if value > high:
        raise OptionError(field, value, f"must be at most {high}")
    return value


def _switch(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(field, value, "must be true or false (a JSON boolean)")
    return value


def _time(field: str, value: Any) -> float:
    """Seconds, or [HH:]MM:SS text (the command line gives text, JSON may give either)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _float(field, value)  # a number too large to be one is refused as such
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise OptionError(field, value, str(exc) if isinstance(exc, ValueError) else "is out of range") from None


def _choices(value: Any) -> tuple[str, ...]:
    def fail(reason: str) -> OptionError:
        shown = list(value) if isinstance(value, (list, tuple)) else value
        return OptionError("choices", shown, reason)

    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise fail("must be a list of option texts")
    if len(value) < 2:
        raise fail("needs at least two options")
    if len(value) > MAX_CHOICES:
        raise fail(f"takes at most {MAX_CHOICES} options")
    out: list[str] = []
    for text in value:
        if not isinstance(text, str):
            raise fail("must be a list of option texts (strings)")
        try:
            check_text(text, "an option")
        except InputError as exc:
            raise fail(str(exc)) from None
        if len(text) > MAX_CHOICE_CHARS:
            raise fail(f"holds an option of {len(text):,} characters (at most {MAX_CHOICE_CHARS:,})")
        if text.strip() in out:
            raise fail(f"lists the option {text.strip()!r} twice")
        out.append(text.strip())
    return tuple(out)


def check_fps(value: Any, field: str = "fps") -> float:
    """A sampling rate in frames per second: a finite number in (0, ``MAX_FPS``] (the one check of it); below
    ``MIN_FPS`` the sampling arithmetic would overflow."""
    fps = _number(field, value, low=0, low_open=True, high=MAX_FPS)
    if fps < MIN_FPS:
        raise OptionError(field, value, f"must be at least {MIN_FPS:g} (one frame every {1 / MIN_FPS:,.0f} s)")
    return fps


def check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of words (``choices.py``)."""
    if not isinstance(value, str) or value not in allowed:
        raise OptionError(field, value, f"expected one of {', '.join(allowed)}")
    return value


def check_subtitles(value: Any, field: str = "subtitles", *, keywords: bool = False) -> str:
    """The path of a subtitles file that exists and can be read (``keywords``: or "speech" / "none")."""
    if keywords and value in SUBTITLE_KEYWORDS:
        return value
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise OptionError(field, value, "must be the path of an .srt file" + (", speech or none" if keywords else ""))
    path = Path(value).expanduser()
    if path.is_dir():
        raise OptionError(field, str(value), "is a directory, not an .srt file")
    if not path.is_file():
        raise OptionError(field, str(value), "no such file")
    if not os.access(path, os.R_OK):
        raise OptionError(field, str(value), "cannot be read (permission denied)")
    return str(value)


def check_speech(model: Any, language: Any) -> tuple[str, str | None]:
    """The speech recognizer's model name and language code, checked without loading it: a non-empty model
    (a size name, a Hugging Face id or a folder), a language Whisper knows (case folded), and no language
    but English for an English-only model (a name ending in ``.en``). The one home of these rules
    (``llamavid.media.asr.AsrOptions`` and ``AskOptions`` both use it)."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise OptionError("asr_model", model, "must be a model size (base, small, ...), a Hugging Face id or a folder")
    if language is None:
        return model, None
    if not isinstance(language, str):
        raise OptionError("language", language, "must be a language code such as en")
    code = language.strip().lower()
    if code not in WHISPER_LANGUAGES:
        raise OptionError("language", language, "is not a language Whisper knows (use a code such as en, de, fr, "
                          f"es, ja, zh: {len(WHISPER_LANGUAGES)} in all)")
    if code != "en" and Path(model.rstrip("/\\")).name.lower().endswith(".en"):
        raise OptionError("language", language, f"cannot be transcribed by the English-only model {model} "
                          f"(use a multilingual model, such as {DEFAULT_ASR_MODEL})")
    return model, code


def _temperature(value: Any) -> float:
    temperature = _number("temperature", value, low=0)
    if 0 < temperature < MIN_TEMPERATURE:
        raise OptionError("temperature", value, f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
    return temperature


def _top_p(value: Any) -> float:
    top_p = _number("top_p", value, low=0, low_open=True, high=1)
    if struct.unpack("f", struct.pack("f", top_p))[0] == 0.0:  # tokens are picked in float32: no mass at all
        raise OptionError("top_p", value, "rounds to 0 in float32 (the smallest is 1.4e-45)")
    return top_p


def _max_new_tokens(value: Any) -> int:
    return check_whole("max_new_tokens", value, low=1)


def _seed(value: Any) -> int:
    return check_whole("seed", value, low=0, high=SEED_MAX)


# Generation controls beyond sampling (OpenAI's request fields; llamavid serve takes them). Limits as OpenAI's.
MAX_STOP = 4  # stop strings
MAX_STOP_CHARS = 200
MAX_PENALTY = 2.0  # presence_penalty, frequency_penalty in [-2, 2]
MAX_BIAS = 100.0  # logit_bias values in [-100, 100]
MAX_BIASED_TOKENS = 1024
MAX_LOGPROBS = 20  # top_logprobs
MAX_SCHEMA_CHARS = 100_000  # a JSON schema, as canonical JSON text


def check_stop(value: Any, field: str = "stop") -> tuple[str, ...]:
    """Stop strings: one string or a list of up to ``MAX_STOP`` non-empty strings (generation ends before the first
    one the answer would contain)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OptionError(field, value, "must be a string or a list of strings")
    if len(items) > MAX_STOP:
        raise OptionError(field, list(items), f"takes at most {MAX_STOP} strings")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise OptionError(field, list(items), "must hold non-empty strings")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise OptionError(field, list(items), "holds text that is not valid UTF-8") from None
        if len(item) > MAX_STOP_CHARS:
            raise OptionError(field, list(items), f"holds a string of {len(item):,} characters "
                                                  f"(at most {MAX_STOP_CHARS})")
        if item not in out:
            out.append(item)
    return tuple(out)


def check_penalty(field: str, value: Any) -> float:
    return _number(field, value, low=-MAX_PENALTY, high=MAX_PENALTY)


def check_logit_bias(value: Any, field: str = "logit_bias") -> tuple[tuple[int, float], ...]:
    """Token id -> bias added to its logit: a mapping (JSON keys are strings of digits) or (id, bias) pairs;
    normalized to sorted pairs without zero biases. Whether an id is in the model's vocabulary is planning's
    check (``llamavid.pipeline.planning.check_controls``): the options do not know the model."""
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(pairs, (list, tuple)) or isinstance(value, str):
        raise OptionError(field, value, "must map token ids to biases")
    if len(pairs) > MAX_BIASED_TOKENS:
        raise OptionError(field, f"{len(pairs)} tokens", f"may bias at most {MAX_BIASED_TOKENS:,} tokens")
    out: dict[int, float] = {}
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise OptionError(field, value, "must map token ids to biases")
        key, bias = pair
        if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 19:
            key = int(key)
        try:
            token = check_whole(field, key, low=0)
        except OptionError:
            raise OptionError(field, key if not isinstance(key, str) else str(key), "keys must be token ids "
                              "(whole numbers >= 0)") from None
        number = _number(field, bias, low=-MAX_BIAS, high=MAX_BIAS)
        if number:
            out[token] = number
    return tuple(sorted(out.items()))


def check_logprobs(value: Any, field: str = "top_logprobs") -> int:
    return check_whole(field, value, low=0, high=MAX_LOGPROBS)


def check_json_schema(value: Any, field: str = "json_schema") -> str:
    """A JSON schema (a JSON object, or its text) -> its canonical JSON text (sorted keys), which compares equal
    for equal schemas. Whether the model can follow it (the grammar compiles) is planning's check."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise OptionError(field, value, "is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise OptionError(field, value, "must be a JSON schema (a JSON object)")
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        raise OptionError(field, "(schema)", "must be a JSON object of JSON values in valid UTF-8") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise OptionError(field, f"{len(text):,} characters", f"is longer than {MAX_SCHEMA_CHARS:,} characters")
    return text


@dataclass
class SamplingOptions:
    """How to pick tokens. temperature 0 is greedy; a seed makes sampling repeatable.

    The generation controls after ``seed`` change nothing at their defaults: ``stop`` strings end an answer
    before the first of them; ``presence_penalty`` / ``frequency_penalty`` lower the logits of tokens already
    generated (OpenAI's rule); ``logit_bias`` adds a bias to tokens' logits; ``logprobs`` (None: none) records
    each generated token's log-probability and that many likeliest alternatives; ``json_schema`` (canonical
    JSON text) constrains the answer to JSON that follows the schema.
    """

    max_new_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.7
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    json_schema: str | None = None

    def __post_init__(self) -> None:
        self.max_new_tokens = _max_new_tokens(self.max_new_tokens)
        self.temperature = _temperature(self.temperature)
        self.top_p = _top_p(self.top_p)
        if self.seed is not None:
            self.seed = _seed(self.seed)
        self.stop = check_stop(self.stop)
        self.presence_penalty = check_penalty("presence_penalty", self.presence_penalty)
        self.frequency_penalty = check_penalty("frequency_penalty", self.frequency_penalty)
        self.logit_bias = check_logit_bias(self.logit_bias)
        if self.logprobs is not None:
            self.logprobs = check_logprobs(self.logprobs, "logprobs")
        if self.json_schema is not None:
            self.json_schema = check_json_schema(self.json_schema)

    @property
    def controls(self) -> tuple:
        """The generation controls beyond temperature, top-p and seed (all at their defaults: nothing to do)."""
        return (self.stop, self.presence_penalty, self.frequency_penalty, self.logit_bias, self.logprobs,
                self.json_schema)

    @property
    def plain(self) -> bool:
        """No generation control is set: tokens are picked from the model's logits as they are."""
        return self.controls == ((), 0.0, 0.0, (), None, None)


# Published generation defaults: the chat CLI, and the movie (long-video) script.
CHAT_SAMPLING = SamplingOptions(max_new_tokens=512, temperature=0.2, top_p=0.7)
MOVIE_SAMPLING = SamplingOptions(max_new_tokens=1024, temperature=0.6, top_p=0.9)


@dataclass(frozen=True)
class AskOptions:
    """Everything one question may set. ``None`` means "the default" (for sampling: the published one
    for the prompt style in use; for ``long``: as the model was trained)."""

    fps: float = 1.0
    max_frames: int | None = None
    long: bool | None = None
    strict_context: bool = False
    subtitles: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    cache: bool = True
    start: float | None = None  # seconds from the start of the video: only [start, end) is used
    end: float | None = None
    evidence: bool = False  # find the time ranges the answer rests on
    choices: tuple[str, ...] | None = None  # answer with exactly one of these, scored by log-likelihood
    kv_cache: str = "auto"  # how the prompt's keys and values are kept (llamavid.model.kvcache)
    # answer in two passes from the seconds that matter (llamavid.tasks.closer); None: when the frames do not
    # fit the context (the rule is planning's: llamavid.pipeline.planning.looks_closer)
    look_closer: bool | None = None
    asr: bool = False  # transcribe the speech: the video's subtitles when it has none of its own
    asr_model: str | None = None  # the speech recognizer (None: DEFAULT_ASR_MODEL)
    language: str | None = None  # the language spoken (None: detected)
    # generation controls (SamplingOptions has their meaning); None: the default (none)
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] | None = None
    logprobs: int | None = None
    json_schema: str | None = None
    max_tokens_limit: int | None = None  # the most new tokens any answer may have (a server's cap)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("fps", check_fps(self.fps))
        if self.max_frames is not None:
            set_("max_frames", check_whole("max_frames", self.max_frames, low=1))
        if self.long is not None:
            _switch("long", self.long)
        _switch("strict_context", self.strict_context)
        _switch("cache", self.cache)
        if self.subtitles is not None:
            set_("subtitles", check_subtitles(self.subtitles, keywords=True))
        if self.temperature is not None:
            set_("temperature", _temperature(self.temperature))
        if self.top_p is not None:
            set_("top_p", _top_p(self.top_p))
        if self.max_new_tokens is not None:
            set_("max_new_tokens", _max_new_tokens(self.max_new_tokens))
        if self.seed is not None:
            set_("seed", _seed(self.seed))
        given_end = self.end
        if self.start is not None:
            set_("start", _time("start", self.start))
        if self.end is not None:
            set_("end", _time("end", self.end))
            if self.end <= (self.start or 0.0):
                if self.start:
                    raise OptionError("end", given_end, "must be after the start "
                                      f"({format_clock(self.start)}; the range would be empty)")
                raise OptionError("end", given_end, "must be after the start of the video (the range would be empty)")
        _switch("evidence", self.evidence)
        if self.choices is not None:
            set_("choices", _choices(self.choices))
        check_choice("kv_cache", self.kv_cache, KV_CACHE_CHOICES)
        if self.look_closer is not None:
            _switch("look_closer", self.look_closer)
        _switch("asr", self.asr)
        if self.asr_model is not None or self.language is not None:
            if not self.speech:
                name = "language" if self.language is not None else "asr_model"
                raise InputError(Opt(name, getattr(self, name)), ": applies to speech recognition: ask for it (",
                                 Opt("asr"), ")")
            model, language = check_speech(self.asr_model or DEFAULT_ASR_MODEL, self.language)
            set_("asr_model", model if self.asr_model is not None else None)
            set_("language", language)
        if self.stop is not None:
            set_("stop", check_stop(self.stop))
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) is not None:
                set_(name, check_penalty(name, getattr(self, name)))
        if self.logit_bias is not None:
            set_("logit_bias", check_logit_bias(self.logit_bias))
        if self.logprobs is not None:
            set_("logprobs", check_logprobs(self.logprobs, "logprobs"))
        if self.json_schema is not None:
            set_("json_schema", check_json_schema(self.json_schema))
        if self.max_tokens_limit is not None:
            set_("max_tokens_limit", check_whole("max_tokens_limit", self.max_tokens_limit, low=1))

    @property
    def speech(self) -> bool:
        """Whether the speech is transcribed: ``asr``, or the transcript asked for as the subtitles."""
        return self.asr or self.subtitles == "speech"

    @property
    def subtitle_file(self) -> str | None:
        """The subtitles file given, if a file (not the keywords "speech" or "none") was."""
        return None if self.subtitles in (None, *SUBTITLE_KEYWORDS) else self.subtitles

    @property
    def time_range(self) -> tuple[float, float] | None:
        """(start, end) in seconds when a part of the video was asked for (end: inf when open)."""
        if self.start is None and self.end is None:
            return None
        return (self.start or 0.0, math.inf if self.end is None else self.end)

    def replace(self, **changes: Any) -> "AskOptions":
        return dataclasses.replace(self, **changes)

    def sampling(self, long_video: bool) -> SamplingOptions:
        """The sampling settings: the published defaults for the prompt style, with what was set on top."""
        base = MOVIE_SAMPLING if long_video else CHAT_SAMPLING
        max_new = base.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens
        return SamplingOptions(
            max_new_tokens=max_new if self.max_tokens_limit is None else min(max_new, self.max_tokens_limit),
            temperature=base.temperature if self.temperature is None else self.temperature,
            top_p=base.top_p if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop or (),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=self.logit_bias or (),
            logprobs=self.logprobs,
            json_schema=self.json_schema,
        )


MAX_SEARCH_TOP = 10_000


@dataclass(frozen=True)
class SearchOptions:
    """Everything a library search may set (``llamavid.tasks.search``); validated here, once.

    ``top``: moments returned; ``closer``: the first stage's best stretches whose visual score is taken again
    from every stored frame at full resolution (0: none); ``rerank``: the best moments of the first stage that
    the model checks (None: ``max(10, 2 * top)``; 0: no second stage); ``rerank_weight``: ``w`` in [0, 1],
    the check's share of a checked moment's score being ``w (1 - its first stage's score)``; ``answer``:
    answer the query as a question on each moment returned; ``ask``: how videos are encoded (``fps``,
    subtitles, the cache) and how checks and answers are asked."""

    top: int = 5
    closer: int = 50
    rerank: int | None = None
    rerank_weight: float = 0.5
    answer: bool = False
    ask: AskOptions = AskOptions()

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("top", check_whole("top", self.top, low=1, high=MAX_SEARCH_TOP))
        set_("closer", check_whole("closer", self.closer, low=0, high=MAX_SEARCH_TOP))
        if self.rerank is not None:
            set_("rerank", check_whole("rerank", self.rerank, low=0, high=MAX_SEARCH_TOP))
        set_("rerank_weight", _number("rerank_weight", self.rerank_weight, low=0.0, high=1.0))
        _switch("answer", self.answer)
        if not isinstance(self.ask, AskOptions):
            raise InputError(f"ask must be AskOptions, not {type(self.ask).__name__}")
        if self.ask.time_range is not None:
            raise InputError(Opt("start"), " and ", Opt("end"), " do not apply to a search (it covers whole videos)")
        if self.ask.subtitle_file is not None:
            raise InputError(Opt("subtitles", self.ask.subtitles), " does not apply to a search: each video's own "
                             "subtitles are read (NAME.srt beside it, or its stream); only \"speech\" or \"none\" "
                             "apply to every file")

    @property
    def candidates(self) -> int:
        """How many of the first stage's best moments the model checks."""
        return max(10, 2 * self.top) if self.rerank is None else self.rerank

    def replace(self, **changes: Any) -> "SearchOptions":
        return dataclasses.replace(self, **changes)


# Fields a batch line may set, and the AskOptions field each one is.
BATCH_OPTION_FIELDS = ("fps", "max_frames", "long", "strict_context", "subtitles", "temperature", "top_p",
                       "max_new_tokens", "seed", "start", "end", "evidence", "choices", "kv_cache", "asr", "asr_model",
                       "language", "look_closer")


def options_from_json(record: Mapping[str, Any], defaults: AskOptions, *, base_dir: Path | None = None) -> AskOptions:
    """The options of one batch line over ``defaults``; JSON ``null`` keeps the default.

    Types are checked strictly (a string "no" is not a boolean, "2" is not a number; "start"/"end" take
    seconds or "[HH:]MM:SS" text, "choices" a list of strings); relative subtitle paths are relative to
    the questions file, like the video paths.
    """
    changes: dict[str, Any] = {}
    for name in BATCH_OPTION_FIELDS:
        if name not in record:
            continue
        value = record[name]
        if value is None:
            continue
        if (name == "subtitles" and isinstance(value, str) and base_dir is not None and not os.path.isabs(value)
                and value not in SUBTITLE_KEYWORDS):
            value = str(base_dir / value)
        changes[name] = value
    return defaults.replace(**changes)
