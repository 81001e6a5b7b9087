"""An OpenAI chat-completions request body -> one llamavid question (``ChatRequest``), validated once.

The body as the OpenAI API defines it, read the way ``llamavid chat`` works:

* ``messages`` alternate ``user`` and ``assistant`` turns and end with a user turn, whose text is the
  question; earlier turns become the conversation's text history (consecutive messages of one role are
  one turn). Exactly one video or image (``video_url`` / ``image_url`` content parts, in any user turn;
  the same reference may repeat) is what the conversation is about, and the current turn gets its
  visual tokens, as a chat's every turn does. ``system``/``developer`` messages are refused: llamavid
  prompts with the model's published system prompt.
* ``temperature``, ``top_p``, ``seed``, ``max_tokens`` (or ``max_completion_tokens``) are llamavid's
  sampling options; unset ones take the published defaults, as ``llamavid ask`` does. ``n`` must be 1.
* Every other field of the body is one of llamavid's own question options (``BATCH_OPTION_FIELDS``:
  ``fps``, ``max_frames``, ``long``...), validated by ``options_from_json`` exactly as a batch line's
  fields are; a field that is neither is refused, naming it. ``subtitles`` is a path under a media root.

Refusals are ``RequestError``s naming the field (``param``) in OpenAI's style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..core.errors import InputError, Opt, RequestError, shown
from ..core.options import BATCH_OPTION_FIELDS, AskOptions, OptionError, check_text, options_from_json
from ..tasks.qa import Question
from .media_access import MediaAccess, MediaSource

# OpenAI fields read here; every other field must be a llamavid question option.
OPENAI_FIELDS = ("model", "messages", "stream", "stream_options", "n", "temperature", "top_p", "seed", "max_tokens",
                 "max_completion_tokens", "user")
# llamavid's question options a request may set: a batch line's, but for the KV-cache mode and the speech
# recognizer's model, which are the server's to choose: a request must not make it keep a cache it has no room
# for, nor fetch a model.
REQUEST_OPTION_FIELDS = tuple(name for name in BATCH_OPTION_FIELDS if name not in ("kv_cache", "asr_model"))
# llamavid options spelled differently in the OpenAI API: the OpenAI name is the one accepted.
OPENAI_NAMES = {"max_new_tokens": "max_tokens"}


@dataclass(frozen=True)
class ChatRequest:
    """One validated chat-completions request: what to answer about, the question, and how to reply."""

    media: MediaSource
    question: Question
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts


def request_fields() -> frozenset[str]:
    """Every field a request body may hold, under the names it uses."""
    return frozenset(OPENAI_FIELDS) | frozenset(option_fields())


def option_fields() -> tuple[str, ...]:
    """The llamavid options a request body may set, under the names it uses for them."""
    return tuple(OPENAI_NAMES.get(name, name) for name in REQUEST_OPTION_FIELDS)


def parse_chat_request(body: Any, *, model_id: str, media: MediaAccess,
                       defaults: AskOptions = AskOptions()) -> ChatRequest:
    """Validate a decoded JSON body; a ``RequestError`` (4xx) names the first problem."""
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    for name in body:
        if name in OPENAI_FIELDS:
            continue
        if name in OPENAI_NAMES:
            raise RequestError(f"\"{name}\" is spelled \"{OPENAI_NAMES[name]}\" in this API", param=name)
        if name not in REQUEST_OPTION_FIELDS:
            raise RequestError(f"unknown field {shown(name, as_json=True)}; fields of this API: "
                               f"{', '.join(OPENAI_FIELDS)}, and llamavid's options "
                               f"{', '.join(f for f in option_fields() if f not in OPENAI_FIELDS)}",
                               param=str(name)[:80], code="unknown_field")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("\"model\" is required: the id of the served model (GET /v1/models)", param="model")
    if model != model_id:
        raise RequestError(f"the model {shown(model)} is not served here; this server serves {model_id!r}",
                           status=404, param="model", code="model_not_found")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float)) or n != 1):
        raise RequestError(f"\"n\": {shown(n)}: only one choice per request (n=1) is supported", param="n")
    stream = _flag(body, "stream")
    include_usage = False
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise RequestError("\"stream_options\" is only allowed with \"stream\": true", param="stream_options")
        if not isinstance(stream_options, Mapping) or set(stream_options) - {"include_usage"}:
            raise RequestError("\"stream_options\" may only hold \"include_usage\"", param="stream_options")
        include_usage = _flag(stream_options, "include_usage", "stream_options.include_usage")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("\"user\" must be a string", param="user")
    options = _options(body, defaults, media)
    source, text, history = _conversation(body.get("messages"), media)
    return ChatRequest(source, Question(text, options, history), stream, include_usage)


def _flag(record: Mapping[str, Any], name: str, param: str | None = None) -> bool:
    value = record.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"\"{param or name}\" must be true or false", param=param or name)
    return value


def _options(body: Mapping[str, Any], defaults: AskOptions, media: MediaAccess) -> AskOptions:
    record = {name: body[name] for name in REQUEST_OPTION_FIELDS if name in body}
    given = [name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
    if len(given) == 2 and body["max_tokens"] != body["max_completion_tokens"]:
        raise RequestError("\"max_tokens\" and \"max_completion_tokens\" differ; give one", param="max_tokens")
    if given:
        record["max_new_tokens"] = body[given[0]]
    subtitles = record.get("subtitles")
    if isinstance(subtitles, str):  # a path: only under a media root, like the media
        record["subtitles"] = str(media.file(subtitles, param="subtitles").path)
    try:
        return options_from_json(record, defaults)
    except OptionError as exc:
        name = given[0] if exc.field == "max_new_tokens" and given else OPENAI_NAMES.get(exc.field, exc.field)
        raise RequestError(Opt(name, exc.value), " ", exc.reason, where="request", param=name) from None
    except InputError as exc:
        raise RequestError(*exc.parts, where=exc.where) from None


def _conversation(messages: Any, media: MediaAccess) -> tuple[MediaSource, str, tuple[tuple[str, str], ...]]:
    """(the one media source, the question, earlier (question, answer) turns)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("\"messages\" must be a non-empty list of messages", param="messages")
    turns: list[tuple[str, list[str], int]] = []  # (role, texts, index of its first message)
    sources: list[tuple[MediaSource, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise RequestError(f"{where} must be an object with \"role\" and \"content\"", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            raise RequestError(f"{where}: {role} messages are not supported: llamavid uses the model's published "
                               "system prompt", param=f"{where}.role", code="unsupported_role")
        if role not in ("user", "assistant"):
            raise RequestError(f"{where}.role must be \"user\" or \"assistant\", not {shown(role)}",
                               param=f"{where}.role")
        unknown = sorted(set(message) - {"role", "content", "name"})
        if unknown:
            raise RequestError(f"{where}: unsupported field(s) {', '.join(map(str, unknown))}",
                               param=f"{where}.{unknown[0]}")
        texts = _content(message.get("content"), role, where, media, sources)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(texts)
        else:
            turns.append((role, list(texts), i))
    if turns[0][0] != "user" or turns[-1][0] != "user":
        raise RequestError("\"messages\" must start and end with a user message (the last one holds the question)",
                           param="messages")
    distinct = {s.key: (s, where) for s, where in sources}
    if not distinct:
        raise RequestError("the conversation has no video: add a video_url (or image_url) content part to a user "
                           "message", param="messages", code="missing_media")
    if len(distinct) > 1:
        (_, first), (_, second) = list(distinct.values())[:2]
        raise RequestError(f"a conversation is about one video or image; {second} names another than {first}",
                           param=second)
    texts = []
    for role, parts, index in turns:
        text = "\n".join(parts)
        what = f"messages[{index}]"
        if not text.strip():
            raise RequestError(f"{what}: a {role} turn needs text" + (" (the question)" if role == "user" else ""),
                               param=f"{what}.content")
        try:
            texts.append(check_text(text, f"the text of {what}"))
        except InputError as exc:
            raise RequestError(*exc.parts, where=exc.where, param=f"{what}.content") from None
    history = tuple(zip(texts[0:-1:2], texts[1:-1:2]))
    [(source, _)] = distinct.values()
    return source, texts[-1], history


def _content(content: Any, role: str, where: str, media: MediaAccess,
             sources: list[tuple[MediaSource, str]]) -> list[str]:
    """A message's text pieces; its media parts (user messages only) are resolved into ``sources``."""
    if isinstance(content, str):
        return [content]
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
            sources.append((media.resolve(ref["url"], param=param, allow_data=kind == "image_url"), param))
        elif kind in ("video_url", "image_url"):
            raise RequestError(f"{at}: only user messages may hold a {kind}", param=f"{at}.type")
        else:
            raise RequestError(f"{at}: unsupported content part type {shown(kind)} (supported: text, video_url, "
                               "image_url)",
                               param=f"{at}.type", code="unsupported_content")
    return texts
