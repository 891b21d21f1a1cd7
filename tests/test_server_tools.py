"""response_format, tools and tool_choice through the official openai client against a real server:
structured output that validates, a tool round trip, tool calls streamed as OpenAI deltas."""

from __future__ import annotations

import json

import openai
import pytest

from ragglm.engine.constraints import json_schema_constraint
from ragglm.server import BackgroundServer, ServerLimits, create_app
from tests.engine.structured_fixtures import SCHEMA, TIME, WEATHER, validate

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(smollm2):
    app = create_app(generator=smollm2, limits=ServerLimits(max_new_tokens=128))
    with BackgroundServer(app) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0, timeout=600)


def create(client, messages=QUESTION, **kwargs):
    return client.chat.completions.create(model="smollm2", messages=messages, **kwargs)


def test_response_format_json_schema_validates(client, smollm2):
    budget = json_schema_constraint(smollm2, SCHEMA).min_tokens + 6
    response_format = {"type": "json_schema", "json_schema": {"name": "part", "schema": SCHEMA, "strict": True}}
    for seed in range(3):
        choice = create(client, response_format=response_format, max_tokens=budget, temperature=0.8,
                        seed=seed).choices[0]
        validate(choice.message.content, SCHEMA)
        assert choice.finish_reason == "stop"


def test_response_format_json_object(client):
    content = create(client, response_format={"type": "json_object"}, max_tokens=16).choices[0].message.content
    assert isinstance(json.loads(content), dict)


def test_tool_round_trip(client):
    tools = [WEATHER, TIME]
    first = create(client, tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                   max_tokens=48, temperature=0.8, seed=1).choices[0]
    assert first.finish_reason == "tool_calls" and first.message.content is None
    (call,) = first.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    validate(call.function.arguments, WEATHER["function"]["parameters"])
    history = QUESTION + [first.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    final = create(client, messages=history, tools=tools, max_tokens=24).choices[0]
    assert final.message.content and not final.message.tool_calls
    assert final.finish_reason in ("stop", "length")


def test_required_tool_choice_forces_a_call_and_none_hides_the_tools(client):
    required = create(client, tools=[WEATHER], tool_choice="required", max_tokens=48).choices[0]
    assert required.finish_reason == "tool_calls" and required.message.tool_calls[0].function.name == "get_weather"
    hidden = create(client, tools=[WEATHER], tool_choice="none", max_tokens=8).choices[0]
    assert hidden.message.content == create(client, max_tokens=8).choices[0].message.content
    assert not hidden.message.tool_calls


def test_tool_calls_stream_as_deltas(client):
    stream = create(client, tools=[WEATHER], tool_choice="required", max_tokens=48, stream=True)
    calls, finish = [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    (call,) = calls
    assert call.index == 0 and call.function.name == "get_weather"
    validate(call.function.arguments, WEATHER["function"]["parameters"])


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
])
def test_bad_tools_and_formats_are_refused_by_name(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        create(client, max_tokens=4, **kwargs)
    assert info.value.body["param"] == param


def test_a_tool_message_needs_its_call_id(client):
    with pytest.raises(openai.BadRequestError) as info:
        create(client, messages=QUESTION + [{"role": "tool", "content": "18"}], max_tokens=4)
    assert info.value.body["param"] == "messages.1.tool_call_id"
