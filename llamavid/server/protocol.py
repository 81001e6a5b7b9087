"""An OpenAI chat-completions request body -> one llamavid question (``ChatRequest``), validated once.

The body as the OpenAI API defines it, read the way ``llamavid chat`` works:

* ``messages`` alternate ``user`` and ``assistant`` turns and end with a user turn, whose text is the
  question; earlier turns become the conversation's text history (consecutive messages of one role are
  one turn). At most one video or image (``video_url`` / ``image_url`` content parts, in any user turn;
  the same reference may repeat) is what the conversation is about, and the current turn gets its
  visual tokens, as a chat's every turn does. Without one, the language model answers from the text alone.
  ``system``/``developer`` messages are the conversation's system message: it follows the model's
  published system prompt (``llamavid.model.prompt.ConvTemplate.render``).
* ``temperature``, ``top_p``, ``seed``, ``max_tokens`` (or ``max_completion_tokens``) are llamavid's
  sampling options; unset ones take the published defaults, as ``llamavid ask`` does. ``stop``,
  ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``logprobs``/``top_logprobs`` and
  ``response_format`` (JSON, through constrained decoding) are generation controls the model applies
  (``SamplingOptions``). ``n`` asks for that many answers.
* OpenAI fields that do not change an answer here (``user``, ``metadata``, ``store``, ``service_tier``...)
  are ignored (``ChatRequest.ignored``: the app logs each name once, as vLLM does); fields asking for what
  llamavid cannot do (tool calls, audio) are refused.
* Every other field of the body is one of llamavid's own question options (``BATCH_OPTION_FIELDS``:
  ``fps``, ``max_frames``, ``long``...), validated by ``options_from_json`` exactly as a batch line's
  fields are; a field that is neither is refused, naming it. ``subtitles`` is a path under a media root.

Everything a request carries is validated here or, where the model must be asked (a logit bias's token ids,
a schema's grammar, the context), by planning, before the question joins a batch. Refusals are
``RequestError``s naming the field (``param``) in OpenAI's style.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import InputError, Opt, RequestError, shown
from ..core.options import (
    BATCH_OPTION_FIELDS,
    AskOptions,
    OptionError,
    SearchOptions,
    check_text,
    options_from_json,
)
from ..tasks.qa import Question
from ..tasks.search import LibraryFile, library_files
from .media_access import MediaAccess, MediaSource

# OpenAI fields read here.
OPENAI_FIELDS = ("model", "messages", "stream", "stream_options", "n", "temperature", "top_p", "seed", "max_tokens",
                 "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                 "top_logprobs", "response_format")
# OpenAI fields that change nothing in an answer here: accepted and ignored (the app logs each name once).
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
                  "prompt_cache_retention", "safety_identifier", "verbosity", "reasoning_effort", "prediction",
                  "web_search_options", "modalities", "audio", "tools", "tool_choice", "functions", "function_call")
# llamavid's question options a request may set: a batch line's, but for the KV-cache mode and the speech
# recognizer's model, which are the server's to choose: a request must not make it keep a cache it has no room
# for, nor fetch a model.
REQUEST_OPTION_FIELDS = tuple(name for name in BATCH_OPTION_FIELDS if name not in ("kv_cache", "asr_model"))
# Options that only mean something with a video or image.
VIDEO_OPTION_FIELDS = tuple(name for name in REQUEST_OPTION_FIELDS if name not in
                            ("temperature", "top_p", "max_new_tokens", "seed"))
# llamavid options spelled differently in the OpenAI API: the OpenAI name is the one accepted.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "json_schema": "response_format", "logprobs": "top_logprobs"}
MAX_TEMPERATURE = 2.0  # OpenAI's range is [0, 2]
MAX_CHOICES = 16  # n
DEFAULT_MAX_TOKENS_LIMIT = 4096  # llamavid serve --max-tokens-limit


@dataclass(frozen=True)
class ChatRequest:
    """One validated chat-completions request: what to answer about (None: the text alone), the question, and
    how to reply."""

    media: MediaSource | None
    question: Question
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts
    n: int = 1  # answers asked for ("choices")
    logprobs: bool = False  # each answer's tokens with their log-probabilities
    ignored: tuple[str, ...] = ()  # fields accepted and ignored
    files: dict[str, str] = field(default_factory=dict)  # server path -> the reference the client sent


def request_fields() -> frozenset[str]:
    """Every field a request body may hold, under the names it uses."""
    return frozenset(OPENAI_FIELDS) | frozenset(IGNORED_FIELDS) | frozenset(option_fields())


def option_fields() -> tuple[str, ...]:
    """The llamavid options a request body may set, under the names it uses for them."""
    return tuple(OPENAI_NAMES.get(name, name) for name in REQUEST_OPTION_FIELDS)


def parse_chat_request(body: Any, *, model_id: str, media: MediaAccess, defaults: AskOptions = AskOptions(),
                       max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT) -> ChatRequest:
    """Validate a decoded JSON body; a ``RequestError`` (4xx) names the first problem. ``max_tokens_limit``: the
    most new tokens a request may ask for (more is a 400; an answer is never longer)."""
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    ignored = []
    for name in body:
        if name in OPENAI_FIELDS:
            continue
        if name in OPENAI_NAMES:
            raise RequestError(f"\"{name}\" is spelled \"{OPENAI_NAMES[name]}\" in this API", param=name)
        if name in REQUEST_OPTION_FIELDS:
            continue
        if name in IGNORED_FIELDS:
            ignored.append(name)
            continue
        raise RequestError(f"unknown field {shown(name, as_json=True)}: neither a field of OpenAI's chat completions "
                           "nor one of llamavid's options "
                           f"({', '.join(f for f in option_fields() if f not in OPENAI_FIELDS)})",
                           param=str(name)[:80], code="unknown_field")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("\"model\" is required: the id of the served model (GET /v1/models)", param="model")
    if model != model_id:
        raise RequestError(f"the model {shown(model)} is not served here; this server serves {model_id!r}",
                           status=404, param="model", code="model_not_found")
    _unsupported(body)
    n = _count(body.get("n"))
    stream = _flag(body, "stream")
    include_usage = False
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise RequestError("\"stream_options\" is only allowed with \"stream\": true", param="stream_options")
        if not isinstance(stream_options, Mapping) or set(stream_options) - {"include_usage", "include_obfuscation"}:
            raise RequestError("\"stream_options\" may only hold \"include_usage\" (and \"include_obfuscation\", "
                               "which is ignored)", param="stream_options")
        include_usage = _flag(stream_options, "include_usage", "stream_options.include_usage")
    logprobs = _flag(body, "logprobs")
    files: dict[str, str] = {}
    options = _options(body, defaults, media, max_tokens_limit, logprobs, files)
    source, text, history, system = _conversation(body.get("messages"), media)
    if source is None:
        given = [name for name in VIDEO_OPTION_FIELDS if body.get(name) is not None]
        if given:
            raise RequestError(f"{shown(given[0], as_json=True)} applies to a video or image, and this conversation "
                               "has none", param=given[0])
    elif source.path is not None:
        files[str(source.path)] = source.shown
    return ChatRequest(source, Question(text, options, history, system), stream, include_usage, n, logprobs,
                       tuple(ignored), files)


def _unsupported(body: Mapping[str, Any]) -> None:
    """Ignored OpenAI fields whose values ask for what llamavid cannot do: refused rather than ignored."""
    def refuse(name: str, what: str) -> RequestError:
        return RequestError(f"{shown(name, as_json=True)}: {what}", param=name, code="unsupported_parameter")

    choice = body.get("tool_choice")
    if choice is not None and choice != "none":
        raise refuse("tool_choice", "llamavid does not call tools (only \"none\" is accepted)")
    if body.get("tools") and choice is None:
        raise refuse("tools", "llamavid does not call tools; send \"tool_choice\": \"none\" to have them ignored")
    if body.get("function_call") not in (None, "none"):
        raise refuse("function_call", "llamavid does not call functions")
    if body.get("functions") and body.get("function_call") is None:
        raise refuse("functions", "llamavid does not call functions; send \"function_call\": \"none\" to have "
                     "them ignored")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise refuse("modalities", "llamavid answers with text only ([\"text\"])")
    if body.get("audio") is not None:
        raise refuse("audio", "llamavid answers with text only")


def _count(n: Any) -> int:
    whole = (isinstance(n, int) and not isinstance(n, bool)) or (isinstance(n, float) and n.is_integer())
    if n is None:
        return 1
    if not whole or not 1 <= n <= MAX_CHOICES:
        raise RequestError(f"\"n\": {shown(n)}: must be a whole number from 1 to {MAX_CHOICES}", param="n")
    return int(n)


def _flag(record: Mapping[str, Any], name: str, param: str | None = None) -> bool:
    value = record.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"\"{param or name}\" must be true or false", param=param or name)
    return value


def _options(body: Mapping[str, Any], defaults: AskOptions, media: MediaAccess, limit: int, logprobs: bool,
             files: dict[str, str]) -> AskOptions:
    record = {name: body[name] for name in REQUEST_OPTION_FIELDS if name in body}
    given = [name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
    if len(given) == 2 and body["max_tokens"] != body["max_completion_tokens"]:
        raise RequestError("\"max_tokens\" and \"max_completion_tokens\" differ; give one", param="max_tokens")
    if given:
        record["max_new_tokens"] = body[given[0]]
    subtitles = record.get("subtitles")
    if isinstance(subtitles, str):  # a path: only under a media root, like the media
        found = media.file(subtitles, param="subtitles")
        record["subtitles"] = str(found.path)
        files[str(found.path)] = subtitles
    controls = _controls(body, logprobs)
    try:
        options = options_from_json(record, defaults).replace(**controls)
    except OptionError as exc:
        name = given[0] if exc.field == "max_new_tokens" and given else OPENAI_NAMES.get(exc.field, exc.field)
        raise RequestError(Opt(name, exc.value), " ", exc.reason, where="request", param=name) from None
    except InputError as exc:
        raise RequestError(*exc.parts, where=exc.where) from None
    return _within_limits(options, body, limit, given[0] if given else "max_tokens")


def _within_limits(options: AskOptions, body: Mapping[str, Any], limit: int, tokens_field: str) -> AskOptions:
    """What this server allows beyond what the options themselves check: a temperature up to
    ``MAX_TEMPERATURE`` and up to ``limit`` new tokens (``tokens_field``: the name the body gave them)."""
    if options.temperature is not None and options.temperature > MAX_TEMPERATURE:
        raise RequestError(Opt("temperature", body.get("temperature")), f" must be <= {MAX_TEMPERATURE:g}",
                           param="temperature")
    if options.max_new_tokens is not None and options.max_new_tokens > limit:
        raise RequestError(Opt(tokens_field, options.max_new_tokens), " is more than this server allows: ",
                           Opt("max_tokens_limit", limit), param=tokens_field)
    return options.replace(max_tokens_limit=limit)


def _controls(body: Mapping[str, Any], logprobs: bool) -> dict[str, Any]:
    """The generation controls a body sets, as ``AskOptions`` fields (validated there)."""
    out: dict[str, Any] = {}
    for name in ("stop", "presence_penalty", "frequency_penalty", "logit_bias"):
        if body.get(name) is not None:
            out[name] = body[name]
    top = body.get("top_logprobs")
    if top is not None and not logprobs:
        raise RequestError("\"top_logprobs\" needs \"logprobs\": true", param="top_logprobs")
    if logprobs:
        out["logprobs"] = 0 if top is None else top
    response_format = body.get("response_format")
    if response_format is not None:
        schema = _response_format(response_format)
        if schema is not None:
            out["json_schema"] = schema
    return out


def _response_format(value: Any) -> Any:
    """OpenAI's ``response_format`` -> the JSON schema the answer must follow (None: plain text)."""
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise RequestError("\"response_format\": a json_schema format needs a \"json_schema\" object (with "
                               "\"name\" and \"schema\")", param="response_format.json_schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, Mapping):
            raise RequestError("\"response_format.json_schema.schema\" must be a JSON schema (an object)",
                               param="response_format.json_schema.schema")
        return schema
    raise RequestError(f"\"response_format\": type {shown(kind)}; accepted: text, json_object, json_schema",
                       param="response_format.type")


def _conversation(messages: Any, media: MediaAccess
                  ) -> tuple[MediaSource | None, str, tuple[tuple[str, str], ...], str | None]:
    """(the one media source or None, the question, earlier (question, answer) turns, the system message)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("\"messages\" must be a non-empty list of messages", param="messages")
    turns: list[tuple[str, list[str], int]] = []  # (role, texts, index of its first message)
    sources: list[tuple[MediaSource, str]] = []
    system: list[tuple[str, int]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise RequestError(f"{where} must be an object with \"role\" and \"content\"", param=where)
        role = message.get("role")
        if role in ("tool", "function"):
            raise RequestError(f"{where}: {role} messages are not supported: llamavid does not call tools",
                               param=f"{where}.role", code="unsupported_role")
        if role not in ("user", "assistant", "system", "developer"):
            raise RequestError(f"{where}.role must be \"user\", \"assistant\" or \"system\", not {shown(role)}",
                               param=f"{where}.role")
        _message_fields(message, where)
        if role in ("system", "developer"):
            text = "\n".join(_content(message.get("content"), role, where, media, sources))
            if text.strip():
                system.append((text, i))
            continue
        texts = _content(message.get("content"), role, where, media, sources)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(texts)
        else:
            turns.append((role, list(texts), i))
    if not turns or turns[0][0] != "user" or turns[-1][0] != "user":
        raise RequestError("\"messages\" must start and end with a user message (the last one holds the question; "
                           "system messages may come anywhere)", param="messages")
    distinct = {s.key: (s, where) for s, where in sources}
    if len(distinct) > 1:
        (_, first), (_, second) = list(distinct.values())[:2]
        raise RequestError(f"a conversation is about one video or image; {second} names another than {first}",
                           param=second)
    texts = []
    for role, parts, index in turns:
        texts.append(_text("\n".join(parts), f"messages[{index}]", role))
    system_text = None
    if system:
        system_text = _text("\n".join(t for t, _ in system), f"messages[{system[0][1]}]", "system")
    history = tuple(zip(texts[0:-1:2], texts[1:-1:2]))
    source = next(iter(distinct.values()))[0] if distinct else None
    return source, texts[-1], history, system_text


def _message_fields(message: Mapping[str, Any], where: str) -> None:
    """Fields of a message besides role and content: ``name`` is ignored, and so are the fields a client sends
    back with an earlier reply when they are empty; tool calls are refused."""
    for key, value in message.items():
        if key in ("role", "content", "name"):
            continue
        if key in ("refusal", "audio", "annotations", "function_call", "tool_calls", "reasoning_content") \
                and not value:
            continue
        if key in ("tool_calls", "function_call", "tool_call_id"):
            raise RequestError(f"{where}: {key}: llamavid does not call tools", param=f"{where}.{key}",
                               code="unsupported_parameter")
        raise RequestError(f"{where}: unsupported field {shown(key, as_json=True)}", param=f"{where}.{str(key)[:80]}")


def _text(text: str, what: str, role: str) -> str:
    if not text.strip():
        raise RequestError(f"{what}: a {role} turn needs text" + (" (the question)" if role == "user" else ""),
                           param=f"{what}.content")
    try:
        return check_text(text, f"the text of {what}")
    except InputError as exc:
        raise RequestError(*exc.parts, where=exc.where, param=f"{what}.content") from None


def _content(content: Any, role: str, where: str, media: MediaAccess,
             sources: list[tuple[MediaSource, str]]) -> list[str]:
    """A message's text pieces; its media parts (user messages only) are resolved into ``sources``."""
    if isinstance(content, str):
        return [content]
    if content is None and role == "assistant":
        return []
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of content parts", param=f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{at}.text must be a string", param=f"{at}.text")
            texts.append(text)
        elif kind in ("video_url", "image_url") and role == "user":
            ref = part.get(kind)
            if not isinstance(ref, Mapping) or "url" not in ref:
                raise RequestError(f"{at}.{kind} must be an object with a \"url\"", param=f"{at}.{kind}")
            param = f"{at}.{kind}.url"
            sources.append((media.resolve(ref["url"], param=param, kind=kind[:5]), param))
        elif kind in ("video_url", "image_url"):
            raise RequestError(f"{at}: only user messages may hold a {kind}", param=f"{at}.type")
        else:
            raise RequestError(f"{at}: unsupported content part type {shown(kind)} (supported: text, video_url, "
                               "image_url)",
                               param=f"{at}.type", code="unsupported_content")
    return texts


# -- POST /v1/llamavid/search ---------------------------------------------------------------------------------

# The fields of a search request: what to search and how (``SearchOptions``), the frame rate videos are encoded
# at, and the length and temperature of the answers ``answer`` asks for.
SEARCH_FIELDS = ("model", "query", "paths", "top", "closer", "rerank", "answer", "fps", "temperature",
                 "max_tokens")
MAX_SEARCH_PATHS = 256  # entries of "paths"
MAX_SEARCH_FILES = 100_000  # files a request's folders may hold in all


@dataclass(frozen=True)
class SearchRequest:
    """One validated search request: the files to search (each named as the client would: the folder it gave,
    then the file's path inside it), the query and the options."""

    query: str
    files: tuple[LibraryFile, ...]
    options: SearchOptions
    skipped: tuple[str, ...] = ()  # files left out before the search (links out of the media roots)
    names: dict[str, str] = field(default_factory=dict)  # server path -> the client's name, for messages


def parse_search_request(body: Any, *, model_id: str, media: MediaAccess, defaults: AskOptions = AskOptions(),
                         max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT) -> SearchRequest:
    """Validate a search request's decoded JSON body: ``{"query": "a purple ring", "paths": ["lectures/"],
    "top": 5, "closer": 50, "rerank": 10, "answer": false, "fps": 1, "temperature": 0, "max_tokens": 64, "model": ID}``
    (``query`` and ``paths`` required; ``model``, if given, the served one). ``paths`` are files (``.vidtok``,
    videos) and folders (searched recursively) under the media roots, as a chat request's media are. A
    ``RequestError`` (4xx) names the first problem's field."""
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    for name in body:
        if name not in SEARCH_FIELDS:
            raise RequestError(f"unknown field {shown(name, as_json=True)}; a search takes "
                               f"{', '.join(SEARCH_FIELDS)}", param=str(name)[:80], code="unknown_field")
    model = body.get("model")
    if model is not None and model != model_id:
        raise RequestError(f"the model {shown(model)} is not served here; this server serves {model_id!r}",
                           status=404, param="model", code="model_not_found")
    query = body.get("query")
    if query is None:
        raise RequestError("\"query\" is required: what to find, e.g. \"a purple ring\"", param="query")
    try:
        check_text(query, "\"query\"")
    except InputError as exc:
        raise RequestError(*exc.parts, param="query") from None
    paths = body.get("paths")
    if not isinstance(paths, list) or not paths:
        raise RequestError("\"paths\" must be a non-empty list of files and folders under the media roots",
                           param="paths")
    if len(paths) > MAX_SEARCH_PATHS:
        raise RequestError(f"\"paths\" holds {len(paths):,} entries; at most {MAX_SEARCH_PATHS} are accepted",
                           param="paths")
    files, skipped, names = _library(paths, media)
    record = {name: body[name] for name in ("fps", "temperature") if name in body}
    if body.get("max_tokens") is not None:
        record["max_new_tokens"] = body["max_tokens"]
    try:
        ask = options_from_json(record, defaults)
        options = SearchOptions(top=5 if body.get("top") is None else body["top"],
                                closer=SearchOptions.closer if body.get("closer") is None else body["closer"],
                                rerank=body.get("rerank"),
                                answer=False if body.get("answer") is None else body["answer"],
                                ask=ask)
    except OptionError as exc:
        name = "max_tokens" if exc.field == "max_new_tokens" else exc.field
        raise RequestError(Opt(name, exc.value), " ", exc.reason, param=name) from None
    except InputError as exc:
        raise RequestError(*exc.parts, where=exc.where) from None
    options = options.replace(ask=_within_limits(ask, body, max_tokens_limit, "max_tokens"))
    return SearchRequest(query, tuple(files), options, tuple(skipped), names)


def _library(paths: list, media: MediaAccess) -> tuple[list[LibraryFile], list[str], dict[str, str]]:
    """The files ``paths`` name, under the media roots, each once; a folder's files found recursively and
    named by the folder as given plus their path inside it. A link in a folder that leads out of the roots is
    left out (listed as skipped), as is everything that is not a .vidtok or a video."""
    files: list[LibraryFile] = []
    skipped: list[str] = []
    names: dict[str, str] = {}
    seen: set[str] = set()

    def add(real: Path, label: str) -> None:
        if str(real) not in seen:
            seen.add(str(real))
            files.append(LibraryFile(real, label))
            names[str(real)] = label

    for i, reference in enumerate(paths):
        param = f"paths[{i}]"
        real, folder = media.library_entry(reference, param=param)
        if not folder:
            add(real, reference)
            continue
        try:
            found = library_files([real])
        except InputError:
            raise RequestError(f"{param}: {reference}: holds no .vidtok files or videos to search",
                               param=param, code="nothing_to_search") from None
        names[str(real)] = reference
        for item in found:
            label = posixpath.join(reference.rstrip("/") or "/", item.path.relative_to(real).as_posix())
            inside = media.locate(os.path.realpath(item.path))
            if inside is None:
                skipped.append(f"{label}: skipped: a link out of the server's media roots")
                continue
            add(inside, label)
            if len(files) > MAX_SEARCH_FILES:
                raise RequestError(f"\"paths\" hold more than {MAX_SEARCH_FILES:,} files; search fewer at a time",
                                   param="paths", code="too_many_files")
    if not files:
        raise RequestError("nothing to search: every file of \"paths\" is outside the server's media roots",
                           status=403, param="paths", code="media_access_denied")
    return files, skipped, names
