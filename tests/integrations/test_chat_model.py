"""ChatRagGLM on the packaged SmolLM2: chat format, streaming, async, parameters, usage, a knowledge
base's citations and follow-ups, tool calls and structured output, checked against the engine itself."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from ragglm.integrations import langchain as module
from ragglm.integrations.langchain import ChatRagGLM

SYSTEM = "You are terse."
PROMPT = "Name a fruit."
MESSAGES = [SystemMessage(SYSTEM), HumanMessage(PROMPT)]
ENGINE_MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
QUESTION = "How long does the AquaPure W3 filter last?"


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


@pytest.fixture(scope="module")
def chat(smollm2):
    module._loaded[("smollm2", None, "cpu")] = smollm2  # the session's engine, not a second copy
    return ChatRagGLM(model="smollm2", max_tokens=8)


_references: dict = {}


def reference(engine, messages=None, **kwargs):
    """The engine's own greedy answer to the messages, as the ground truth (computed once)."""
    messages = messages or ENGINE_MESSAGES
    key = (json.dumps(messages), json.dumps(kwargs, sort_keys=True))
    if key not in _references:
        _references[key] = engine.chat(messages, **{"max_new_tokens": 8, **kwargs})
    return _references[key]


def test_messages_in_the_chat_format_with_usage_and_metadata(chat, smollm2):
    message = chat.invoke(MESSAGES)
    expected = reference(smollm2)
    assert isinstance(message, AIMessage) and message.content == expected.text and message.content.strip()
    assert message.usage_metadata["input_tokens"] == len(smollm2.chat_ids(ENGINE_MESSAGES))
    assert message.usage_metadata["output_tokens"] == len(expected.token_ids)
    assert message.usage_metadata["total_tokens"] == sum(message.usage_metadata[k] for k in
                                                         ("input_tokens", "output_tokens"))
    assert message.response_metadata["model_name"] == "smollm2"
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    # the system turn is rendered as such, not folded into the user's words
    assert chat.invoke([HumanMessage(PROMPT)]).content == reference(
        smollm2, [{"role": "user", "content": PROMPT}]).text


def test_stream_pieces_callbacks_and_last_chunk(chat, smollm2):
    recorder = Recorder()
    chunks = list(chat.stream(MESSAGES, config={"callbacks": [recorder]}))
    assert len([c for c in chunks if c.content]) >= 3
    assert "".join(c.content for c in chunks) == reference(smollm2).text
    assert "".join(recorder.tokens) == "".join(c.content for c in chunks)
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["output_tokens"] == len(
        reference(smollm2).token_ids)
    assert [c for c in chunks if c.usage_metadata] == [last]  # counted once


def test_async_matches_sync_and_leaves_the_loop_free(chat, smollm2):
    async def run():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        message = await chat.ainvoke(MESSAGES)
        pieces = [chunk.content async for chunk in chat.astream(MESSAGES)]
        done.set()
        await ticking
        return message, pieces, ticks

    message, pieces, ticks = asyncio.run(run())
    assert message.content == reference(smollm2).text == "".join(pieces)
    assert ticks > 1  # the loop ran other tasks while the engine generated in its thread


def test_batch_answers_each_conversation(chat, smollm2):
    other = [HumanMessage("Name a colour.")]
    assert [m.content for m in chat.batch([MESSAGES, other])] == [
        reference(smollm2).text, reference(smollm2, [{"role": "user", "content": "Name a colour."}]).text]


@pytest.mark.slow
def test_standard_parameters_reach_the_engine_or_are_refused(chat, smollm2):
    assert chat.invoke(MESSAGES, max_tokens=3).content == reference(smollm2, max_new_tokens=3).text
    # at temperature 1.5 only the most likely token survives top_k=1 or a tiny top_p: the greedy text
    assert chat.invoke(MESSAGES, temperature=1.5, top_k=1).content == reference(smollm2).text
    assert chat.invoke(MESSAGES, temperature=1.5, top_p=1e-4).content == reference(smollm2).text
    sampled = smollm2.chat(ENGINE_MESSAGES, max_new_tokens=8, temperature=1.0, seed=5).text
    assert ChatRagGLM(max_tokens=8, temperature=1.0, seed=5).invoke(MESSAGES).content == sampled
    words = reference(smollm2).text.split()
    assert len(words) >= 2
    stop = " " + words[1]
    assert chat.invoke(MESSAGES, stop=[stop]).content == reference(smollm2).text.split(stop)[0]
    assert ChatRagGLM(max_tokens=8, stop=[stop]).invoke(MESSAGES).content == reference(smollm2).text.split(stop)[0]
    with pytest.raises(ValueError, match="presence_penalty"):
        chat.invoke(MESSAGES, presence_penalty=0.5)
    with pytest.raises(ValueError, match="top_p"):
        ChatRagGLM(top_p=5)
    with pytest.raises(ValueError, match="max_tokenz"):
        ChatRagGLM(max_tokenz=5)
    with pytest.raises(ValueError, match="disagree"):
        ChatRagGLM(max_tokens=3, max_new_tokens=4)


def test_tracing_parameters():
    params = ChatRagGLM(max_tokens=10, temperature=0.3, stop=["x"])._get_ls_params(model="other")
    assert params == {"ls_provider": "ragglm", "ls_model_name": "other", "ls_model_type": "chat",
                      "ls_temperature": 0.3, "ls_max_tokens": 10, "ls_stop": ["x"]}


def test_identifying_parameters_match_the_plain_llms(manuals_kb):
    from ragglm.integrations.langchain import RagGLM

    settings = {"model": "smollm2", "max_tokens": 10, "temperature": 0.3, "top_k": 5, "seed": 2}
    chat = ChatRagGLM(**settings, stop=["x"])._identifying_params
    assert chat == {**RagGLM(**settings)._identifying_params, "stop": ["x"]}
    assert chat == {"model": "smollm2", "quant": None, "device": "cpu", "knowledge_base": None, "max_new_tokens": 10,
                    "temperature": 0.3, "top_p": None, "top_k": 5, "repetition_penalty": 1.0, "seed": 2,
                    "stop": ["x"]}
    assert ChatRagGLM(knowledge_base=manuals_kb)._identifying_params["knowledge_base"] == "in-memory"


def test_timeout_cancels_and_frees_the_engine(chat, smollm2):
    with pytest.raises(TimeoutError):
        ChatRagGLM(max_tokens=200, timeout=0.001).invoke(MESSAGES)
    with pytest.raises(TimeoutError):
        list(ChatRagGLM(max_tokens=200, timeout=0.001).stream(MESSAGES))
    assert chat.invoke(MESSAGES).content == reference(smollm2).text


def test_images_are_refused_by_name(chat):
    image = HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    with pytest.raises(ValueError, match="image_url"):
        chat.invoke([image])


def test_knowledge_base_answer_carries_citations(manuals_kb):
    bot = ChatRagGLM(knowledge_base=manuals_kb, max_tokens=12)
    message = bot.invoke([HumanMessage(QUESTION)])
    expected = manuals_kb.ask(QUESTION, on_text=lambda piece: None, max_new_tokens=12)
    assert message.content == expected.text
    citations = message.response_metadata["citations"]
    assert [c["source"] for c in citations] == [c.source for c in expected.citations] and citations
    assert message.usage_metadata["input_tokens"] > 0 and message.usage_metadata["output_tokens"] > 0
    chunks = list(bot.stream([HumanMessage(QUESTION)]))
    assert "".join(c.content for c in chunks).strip() == expected.text
    assert chunks[-1].response_metadata["citations"] == citations
    with pytest.raises(ValueError, match="top_k"):
        bot.invoke([HumanMessage(QUESTION)], top_k=3)


@pytest.mark.slow
def test_knowledge_base_follow_up_is_answered_from_the_documents(manuals_kb):
    bot = ChatRagGLM(knowledge_base=manuals_kb, max_tokens=12)
    first = bot.invoke([HumanMessage(QUESTION)])
    history = [HumanMessage(QUESTION), first, HumanMessage("How do I replace it?")]
    follow_up = bot.invoke(history)
    plan = follow_up.response_metadata["plan"]
    assert "filter" in plan["standalone_question"].lower()  # rewritten with the first question's topic
    citations = follow_up.response_metadata["citations"]
    assert citations and all(c["source"].endswith("aquapure-w3-manual.pdf") for c in citations[:1])
    expected = manuals_kb.chat([{"role": "user", "content": QUESTION},
                                {"role": "assistant", "content": first.content},
                                {"role": "user", "content": "How do I replace it?"}],
                               on_text=lambda piece: None, max_new_tokens=12)
    assert follow_up.content == expected.text


def test_knowledge_base_takes_a_system_message_as_instructions(manuals_kb):
    bot = ChatRagGLM(knowledge_base=manuals_kb, max_tokens=12)
    system = "You are the AquaPure support desk."
    reply = bot.invoke([SystemMessage(system), HumanMessage(QUESTION)])
    # SmolLM2 answers by extract: the plan says the instructions could not shape a quote
    assert reply.response_metadata["plan"]["instructions"].startswith("not followed: the answer quotes")
    assert "instructions" not in bot.invoke([HumanMessage(QUESTION)]).response_metadata["plan"]
    expected = manuals_kb.ask(QUESTION, on_text=lambda piece: None, max_new_tokens=12, instructions=system)
    assert reply.content == expected.text


class Weather(BaseModel):
    """Report the weather for a city."""

    city: str = Field(description="the city")
    unit: str = Field(description="celsius or fahrenheit", json_schema_extra={"enum": ["celsius", "fahrenheit"]})


@tool
def get_weather(city: str, unit: str) -> str:
    """Get the current weather in a city, in celsius or fahrenheit."""
    return f"It is 21 degrees {unit} and sunny in {city}."


@pytest.mark.slow
def test_forced_tool_call_round_trip(chat):
    question = HumanMessage("What is the weather in Paris?")
    call_message = ChatRagGLM(max_tokens=48).bind_tools([get_weather], tool_choice="any").invoke([question])
    assert len(call_message.tool_calls) >= 1
    call = call_message.tool_calls[0]
    assert call["name"] == "get_weather" and call["id"]
    assert set(call["args"]) == {"city", "unit"} and all(isinstance(v, str) for v in call["args"].values())
    assert call_message.response_metadata["finish_reason"] == "tool_calls"
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    final = ChatRagGLM(max_tokens=24).invoke([question, call_message, result])
    assert final.content.strip() and not final.tool_calls
    # streamed, the call arrives as tool_call_chunks that add up to the same call
    full = None
    for chunk in ChatRagGLM(max_tokens=48).bind_tools([get_weather], tool_choice="get_weather").stream([question]):
        full = chunk if full is None else full + chunk
    assert full.tool_calls and full.tool_calls[0]["name"] == "get_weather"
    assert set(full.tool_calls[0]["args"]) == {"city", "unit"}
    with pytest.raises(ValueError, match="nope"):
        chat.bind_tools([get_weather], tool_choice="nope")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_parses_and_validates(method):
    structured = ChatRagGLM(max_tokens=48, temperature=0.8, seed=1).with_structured_output(Weather, method=method)
    result = structured.invoke("Weather in Rome?")
    assert isinstance(result, Weather) and result.unit in ("celsius", "fahrenheit")
    raw = ChatRagGLM(max_tokens=48).with_structured_output(Weather, include_raw=True).invoke("Weather in Oslo?")
    assert isinstance(raw["raw"], AIMessage) and isinstance(raw["parsed"], Weather) and raw["parsing_error"] is None


def test_tool_round_trip_in_a_template_syntax():
    """A checkpoint whose template has its own tool syntax (Llama 3.1's): the call is made and read
    back in it, and the call and its result go back to the model in the template's turns."""
    from ragglm.engine.constraints.chat import plan_chat
    from ragglm.integrations.chat_model import _openai_messages
    from tests.engine.test_tool_format_templates import (
        LLAMA3_SPECIALS,
        LLAMA31_TEMPLATE,
        tiny_engine,
    )

    engine = tiny_engine(LLAMA3_SPECIALS, [], LLAMA31_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>")
    module._loaded[("tiny-llama31", None, "cpu")] = engine
    question = HumanMessage("Weather in Paris?")
    reply = ChatRagGLM(model="tiny-llama31", max_tokens=40).bind_tools([get_weather], tool_choice="any").invoke(
        [question])
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    assert all(isinstance(value, str) for value in call["args"].values())
    assert reply.response_metadata["finish_reason"] == "tool_calls" and reply.content == ""
    messages = _openai_messages([question, reply, ToolMessage("21 degrees", tool_call_id=call["id"])])
    text = engine.tokenizer.decode(plan_chat(engine, messages).prompt_ids)
    assert text.endswith('"parameters": ' + json.dumps(call["args"], ensure_ascii=False) + "}"
                         + "ipython\n\n\"21 degrees\"assistant\n\n")  # control ids decode to nothing
