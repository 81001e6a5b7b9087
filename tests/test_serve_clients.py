"""Third-party clients, unchanged, against a real `llamavid serve` process (the shipped demo model): the official
`openai` package (sync, async, streaming, structured output), the `llm` command through its OpenAI-compatible
configuration (text, an image, a system prompt, a schema), and LangChain's `ChatOpenAI` (invoke, stream, a
system message, `stop`, `with_structured_output`).

Every reply must be an answer (no 4xx for an ordinary request of these clients), and the server's log must
hold no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import VIDEO, DemoServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo = DemoServer(tmp_path_factory.mktemp("clients"))
    try:
        yield demo
    finally:
        code = demo.stop()
    assert code == 0
    log = demo.stderr()
    assert "Traceback" not in log and '" 500' not in log, log[-3000:]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "frame.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(ROOT / "examples" / VIDEO), "-frames:v", "1", str(path)],
                   check=True)
    return path


def video_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": VIDEO}},
                                         {"type": "text", "text": question}]}]


COLORS = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
          "required": ["color"], "additionalProperties": False}


# ---------------------------------------------------------------------------------------------------------
# the official openai package


def test_openai_sync(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                           temperature=0, max_tokens=16)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    # what the client sends at OpenAI's defaults, and fields llamavid does not use: accepted
    text = client.chat.completions.create(
        model="demo", messages=[{"role": "system", "content": "You answer briefly."},
                                {"role": "user", "content": "What color is the sky?"}],
        temperature=0, max_completion_tokens=16, presence_penalty=0, frequency_penalty=0, logprobs=False,
        metadata={"purpose": "test"}, store=False, user="someone", service_tier="auto", seed=1)
    assert text.choices[0].message.content
    assert text.model_extra["llamavid"]["frames"] == 0  # answered by the language model alone
    several = client.chat.completions.create(model="demo", messages=video_messages("What shape is it?"),
                                             temperature=1.0, seed=3, n=3, max_tokens=8, logprobs=True, top_logprobs=2)
    assert [c.index for c in several.choices] == [0, 1, 2]
    for choice in several.choices:
        tokens = choice.logprobs.content
        assert tokens and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    assert several.usage.completion_tokens == sum(len(c.logprobs.content) for c in several.choices)
    # an answer that never ends by itself (its end token biased away) is cut by a stop string
    endless = client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                             temperature=0, max_tokens=30, logit_bias={"2": -100})
    assert endless.choices[0].finish_reason == "length" and endless.usage.completion_tokens == 30
    word = endless.choices[0].message.content.split()[-1]
    stopped = client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                             temperature=0, max_tokens=30, logit_bias={"2": -100}, stop=[word])
    assert stopped.choices[0].finish_reason == "stop" and word not in stopped.choices[0].message.content
    # JSON: json_object, and a schema through the client's own structured-output helper
    obj = client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                         temperature=0, max_tokens=40, response_format={"type": "json_object"})
    content, finish = obj.choices[0].message.content, obj.choices[0].finish_reason
    if finish == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens (the demo model may write a long key): the beginning of an object, as OpenAI's
        # JSON mode gives then; the schema below has bounded values, so that answer must be whole
        assert finish == "length" and content.startswith("{") and obj.usage.completion_tokens == 40
    from typing import Literal

    from pydantic import BaseModel

    class Shape(BaseModel):
        color: Literal["red", "green", "blue"]
        shape: Literal["circle", "square", "triangle"]

    parsed = client.chat.completions.parse(model="demo", messages=video_messages("What color is the shape?"),
                                           temperature=0, max_tokens=60, response_format=Shape)
    assert isinstance(parsed.choices[0].message.parsed, Shape)


def test_openai_async(server):
    import openai

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        questions = ["What color is the shape?", "What shape is it?", "How many shapes are there?", "Hi!"]
        replies = await asyncio.gather(*(client.chat.completions.create(
            model="demo", messages=video_messages(q) if q != "Hi!" else [{"role": "user", "content": q}],
            temperature=0, max_tokens=12) for q in questions))
        stream = await client.chat.completions.create(model="demo", messages=video_messages(questions[0]),
                                                      temperature=0, max_tokens=12, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert streamed == replies[0].choices[0].message.content
        return [r.choices[0].message.content for r in replies]

    answers = asyncio.run(main())
    assert len(answers) == 4 and all(answers)


def test_openai_streaming(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                           temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model="demo", messages=video_messages("What color is the shape?"),
                                                 temperature=0, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    two = list(client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Say something."}],
                                              temperature=1, seed=5, max_tokens=12, n=2, stream=True))
    finished = sorted(c.choices[0].index for c in two if c.choices and c.choices[0].finish_reason)
    assert finished == [0, 1]


# ---------------------------------------------------------------------------------------------------------
# llm, through its OpenAI-compatible configuration


def _llm(server, tmp: Path, *args: str) -> str:
    home = tmp / "llm-home"
    home.mkdir(exist_ok=True)
    (home / "extra-openai-models.yaml").write_text(
        f"- model_id: llamavid-demo\n  model_name: demo\n  api_base: \"{server.url}/v1\"\n  vision: true\n"
        "  supports_schema: true\n")
    env = dict(os.environ, LLM_USER_PATH=str(home), OPENAI_API_KEY="unused")
    done = subprocess.run([sys.executable, "-m", "llm", "-m", "llamavid-demo", "--no-log", *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_llm_command(server, tmp_path, image):
    assert _llm(server, tmp_path, "What color is a tomato?", "-o", "temperature", "0")
    assert _llm(server, tmp_path, "-s", "You answer in one word.", "What color is a tomato?", "--no-stream")
    assert _llm(server, tmp_path, "What color is the shape?", "-a", str(image), "-o", "temperature", "0")
    answer = _llm(server, tmp_path, "What color is the shape?", "-a", str(image), "--schema", json.dumps(COLORS))
    assert json.loads(answer)["color"] in ("red", "green", "blue")


# ---------------------------------------------------------------------------------------------------------
# LangChain's ChatOpenAI


def test_langchain_chat_openai(server):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    chat = ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model="demo", temperature=0, max_tokens=24,
                      max_retries=0)
    assert chat.invoke("What color is a tomato?").content
    video = HumanMessage(content=[{"type": "video_url", "video_url": {"url": VIDEO}},
                                  {"type": "text", "text": "What color is the shape?"}])
    answer = chat.invoke([SystemMessage(content="You answer in one word."), video])
    assert answer.content and answer.response_metadata["finish_reason"] in ("stop", "length")
    streamed = "".join(chunk.content for chunk in chat.stream([video]))
    assert streamed == chat.invoke([video]).content
    endless = chat.bind(logit_bias={"2": -100}).invoke([video])
    word = endless.content.split()[-1]
    assert word not in chat.bind(logit_bias={"2": -100}).invoke([video], stop=[word]).content

    class Color(BaseModel):
        """The color of the shape."""

        color: str = Field(description="one of red, green, blue", json_schema_extra={"enum": ["red", "green",
                                                                                             "blue"]})

    structured = chat.with_structured_output(Color).invoke([video])
    assert isinstance(structured, Color) and structured.color in ("red", "green", "blue")
