"""Tools, calls and results in each family's format, calls read back from output, and forced
calls on tiny GLM-4 and ChatGLM3 engines whose arguments follow the tool's schema."""

from __future__ import annotations

import json

import pytest
import torch

from ragglm.engine.constraints.chat import plan_chat
from ragglm.engine.tokenizers.glm_chat_format import ChatGLM3Format, GLM4Format
from ragglm.engine.tokenizers.tokenizer import SentencePieceTokenizer
from ragglm.engine.tokenizers.tool_format import (
    ChatGLM3ToolFormat,
    GLM4ToolFormat,
    JsonToolFormat,
    tool_format_for,
)
from ragglm.errors import InvalidRequestError
from tests.engine.glm_fixtures import train_sentencepiece
from tests.engine.structured_fixtures import TIME, WEATHER, tiny_glm_engines, validate

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                         "arguments": '{"city": "Paris", "unit": "celsius"}'}}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 degrees"},
]


@pytest.fixture(scope="module")
def glm_engines(tmp_path_factory):
    return tiny_glm_engines(tmp_path_factory)


def test_each_family_gets_its_own_format():
    assert isinstance(tool_format_for(ChatGLM3Format()), ChatGLM3ToolFormat)
    assert isinstance(tool_format_for(GLM4Format()), GLM4ToolFormat)
    assert isinstance(tool_format_for(object()), JsonToolFormat)


def test_chatglm3_tools_calls_and_observations_as_ids():
    tokenizer = SentencePieceTokenizer(train_sentencepiece())
    messages = ChatGLM3ToolFormat().messages(HISTORY, [WEATHER])
    ids = ChatGLM3Format().ids(messages, tokenizer)
    command, plain = tokenizer.token_id, tokenizer.encode_plain
    system = ChatGLM3ToolFormat.PROMPT + "\n" + json.dumps([WEATHER["function"]], indent=4, ensure_ascii=False)
    call = ' ```python\ntool_call(**{"city": "Paris", "unit": "celsius"})\n```'
    expected = ([command("[gMASK]"), command("sop"), command("<|system|>")] + plain("\n") + plain(system)
                + [command("<|user|>")] + plain("\n") + plain("Weather in Paris?")
                + [command("<|assistant|>")] + plain("get_weather\n") + plain(call)
                + [command("<|observation|>")] + plain("\n") + plain("18 degrees") + [command("<|assistant|>")])
    assert ids == expected


def test_glm4_tools_calls_and_observations_as_text():
    messages = GLM4ToolFormat().messages(HISTORY, [WEATHER])
    text = GLM4Format().render(messages)
    assert text.startswith("[gMASK]<sop><|system|>\n" + GLM4ToolFormat.PROMPT + "\n\n## get_weather\n\n{")
    assert "在调用上述函数时，请使用 Json 格式表示调用的参数。" in text
    assert text.endswith('<|user|>\nWeather in Paris?<|assistant|>get_weather\n{"city": "Paris", "unit": "celsius"}'
                         "<|observation|>\n18 degrees<|assistant|>")


def test_json_convention_in_any_template(smollm2):
    messages = JsonToolFormat().messages(HISTORY, [WEATHER])
    assert messages[0]["role"] == "system" and "<tools>" in messages[0]["content"]
    assert messages[2] == {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": '
                                                           '{"city": "Paris", "unit": "celsius"}}\n</tool_call>'}
    assert messages[3] == {"role": "user", "content": "<tool_response>\n18 degrees\n</tool_response>"}
    assert "<tool_response>" in smollm2.chat_format.render(messages)


@pytest.mark.parametrize(("tool_format", "text", "content", "calls"), [
    (JsonToolFormat(), 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                       "</tool_call>", "Let me look.", [("get_weather", {"city": "Oslo"})]),
    (JsonToolFormat(), "No call here.", "No call here.", []),
    (JsonToolFormat(), '<tool_call>\n{"name": "get_weather", "argu', '<tool_call>\n{"name": "get_weather", "argu', []),
    (ChatGLM3ToolFormat(), 'get_weather\n ```python\ntool_call(city="Oslo", metric=True)\n```', "",
     [("get_weather", {"city": "Oslo", "metric": True})]),
    (ChatGLM3ToolFormat(), 'get_weather\n ```python\ntool_call(**{"city": "Oslo", "metric": true})\n```', "",
     [("get_weather", {"city": "Oslo", "metric": True})]),
    (ChatGLM3ToolFormat(), "\nIt is sunny.", "It is sunny.", []),
    (GLM4ToolFormat(), 'get_weather\n{"city": "Oslo"}', "", [("get_weather", {"city": "Oslo"})]),
    (GLM4ToolFormat(), "\nget_weather is a tool.", "get_weather is a tool.", []),
])
def test_calls_are_read_back(tool_format, text, content, calls):
    parsed = tool_format.parse(text, ["get_weather", "get_time"])
    assert (parsed.content, parsed.calls) == (content, calls)


@pytest.mark.parametrize("family", ["glm4", "chatglm3"])
def test_forced_calls_on_tiny_glms_follow_the_schema(glm_engines, family):
    engine = glm_engines[family]
    for seed in range(5):
        named = engine.chat(HISTORY[:1], tools=[WEATHER, TIME], max_new_tokens=80, temperature=0.8, seed=seed,
                            tool_choice={"type": "function", "function": {"name": "get_time"}})
        (call,) = named.tool_calls
        assert named.finish_reason == "tool_calls" and call["function"]["name"] == "get_time"
        validate(call["function"]["arguments"], TIME["function"]["parameters"])
        anyone = engine.chat(HISTORY[:1], tools=[WEATHER, TIME], tool_choice="required", max_new_tokens=80,
                             temperature=0.8, seed=seed)
        (call,) = anyone.tool_calls
        tool = {"get_weather": WEATHER, "get_time": TIME}[call["function"]["name"]]
        validate(call["function"]["arguments"], tool["function"]["parameters"])


def test_a_forced_call_with_smollm2(smollm2):
    result = smollm2.chat(HISTORY[:1], tools=[WEATHER], tool_choice="required", max_new_tokens=48)
    (call,) = result.tool_calls
    assert result.text == "" and call["id"].startswith("call_")
    validate(call["function"]["arguments"], WEATHER["function"]["parameters"])


def test_tool_choice_none_shows_no_tools(smollm2):
    plan = plan_chat(smollm2, HISTORY[:1], tools=[WEATHER], tool_choice="none")
    assert plan.prompt_ids == smollm2.chat_ids(HISTORY[:1]) and plan.constraint is None


def test_auto_constrains_a_call_once_it_starts(smollm2):
    plan = plan_chat(smollm2, HISTORY[:1], tools=[WEATHER])
    constraint, tokenizer = plan.constraint, smollm2.tokenizer
    for token in tokenizer.encode_plain('Sure. <tool_call>\n{"name": "get_'):
        assert not constraint.accept(token)
    assert constraint.inner is not None  # the call's grammar took over after the trigger
    allowed = torch.isfinite(constraint.allowed(torch.zeros(smollm2.args.vocab_size), 40))
    texts = {tokenizer.decode([i]) for i in allowed.nonzero().flatten().tolist()}
    assert texts and all("weather".startswith(t) for t in texts)


def test_unknown_tool_choice_is_refused(smollm2):
    with pytest.raises(InvalidRequestError, match="not among the tools"):
        plan_chat(smollm2, HISTORY[:1], tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
