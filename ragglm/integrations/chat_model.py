"""ChatRagGLM: a LangChain chat model on the ragglm engine, or answering from a KnowledgeBase.

    from ragglm.integrations.langchain import ChatRagGLM

    chat = ChatRagGLM(model="smollm2", max_tokens=64)
    chat.invoke([SystemMessage("Be terse."), HumanMessage("Name a fruit.")])
    chat.bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?").tool_calls
    chat.with_structured_output(Person).invoke("Alice is 30.")         # -> Person(name=..., age=...)
    ChatRagGLM(knowledge_base=kb).invoke("How long does the filter last?").response_metadata["citations"]

Messages are rendered in the model's own chat format (system, user, assistant with tool calls, tool
results). Bound to a knowledge base the conversation is answered from its documents, follow-ups
rewritten to stand alone first, and the citations come back in `response_metadata`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
)
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, Field

from ragglm.errors import RemoteGeneratorError
from ragglm.integrations.answering import Cancelled as _Cancelled
from ragglm.integrations.answering import (
    Conversation,
    Outcome,
    ask_knowledge_base,
    chat_generator,
    is_remote,
)
from ragglm.integrations.engine_params import DecodingOptions, EngineParams
from ragglm.integrations.langchain import pieces_from_thread, shared_generator

__all__ = ["ChatRagGLM"]

# call arguments that shape the output (set by bind_tools and with_structured_output), not decoding
_CONSTRAINTS = ("tools", "tool_choice", "response_format")


@dataclass
class _Reply:
    """One answer: its text and counts, the tool calls it made, and what to report about it."""

    outcome: Outcome
    model_name: str
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI shape

    def usage(self) -> UsageMetadata:
        prompt, completion = self.outcome.prompt_tokens, self.outcome.completion_tokens
        return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)

    def metadata(self) -> dict:
        info = {"model_name": self.model_name, "finish_reason": self.outcome.finish_reason,
                "mode": self.outcome.mode, "timings": self.outcome.timings}
        if self.outcome.mode != "generate":  # answered from a knowledge base
            info.update(citations=self.outcome.citations, plan=self.outcome.plan)
        return info

    def langchain_tool_calls(self) -> tuple[list[dict], list[dict]]:
        """The tool calls as LangChain's tool_calls, and those whose arguments are not JSON."""
        good, bad = [], []
        for call in self.tool_calls:
            function = call.get("function", {})
            arguments = function.get("arguments") or "{}"
            try:
                args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
                good.append({"name": function.get("name", ""), "args": args, "id": call.get("id"),
                             "type": "tool_call"})
            except (ValueError, TypeError) as exc:
                bad.append({"name": function.get("name"), "args": arguments, "id": call.get("id"),
                            "error": str(exc), "type": "invalid_tool_call"})
        return good, bad


class ChatRagGLM(BaseChatModel, EngineParams):
    """A LangChain chat model on the ragglm engine (or a remote `openai:http://...` model).

    Decoding: max_tokens (or max_new_tokens), temperature, top_p, top_k, repetition_penalty, seed
    and stop, here or per call; anything else is refused. timeout (seconds) cancels a generation
    still running then and raises TimeoutError; max_retries retries a remote generator that could
    not be reached. Bound to a `knowledge_base`, the conversation is answered from its documents by
    the knowledge base's own generator, with citations in `response_metadata["citations"]`.
    """

    stop: list[str] | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0)
    streaming: bool = False  # invoke() streams (on_llm_new_token fires per piece)

    @property
    def _llm_type(self) -> str:
        return "ragglm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**self._engine_params(), "stop": self.stop}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        decoding = self._decoding(**{k: v for k, v in kwargs.items() if k in _DECODING_NAMES})
        params = LangSmithParams(ls_provider="ragglm", ls_model_name=str(kwargs.get("model") or self.model),
                                 ls_model_type="chat", ls_temperature=decoding.temperature,
                                 ls_max_tokens=decoding.max_new_tokens)
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop)
        return params

    # --- LangChain's entry points -----------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = self._prepare(messages, stop, kwargs)
        cancelled = threading.Event()
        timer = self._deadline(cancelled)
        try:
            reply = self._with_retries(lambda: call(None, cancelled))
        except _Cancelled:
            raise TimeoutError(f"ChatRagGLM: no answer within timeout={self.timeout} s") from None
        finally:
            if timer:
                timer.cancel()
        return _result(reply)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs)
        for item in pieces_from_thread(lambda on_text, cancelled: self._with_retries(
                lambda: call(on_text, cancelled)), timeout_s=self.timeout):
            if isinstance(item, _Reply):
                chunk = _last_chunk(item)
            else:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        # the engine holds the GIL only between tensor ops: in a thread the event loop stays free
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._stream(messages, stop, None, **kwargs)
        done = object()
        try:
            while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            await asyncio.to_thread(chunks.close)  # stops the generation at its next token

    # --- tools and structured output ---------------------------------------------------------------

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | Any], *,
                   tool_choice: str | dict | bool | None = None, **kwargs: Any
                   ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model. tool_choice: "auto", "none", "any" or "required" (some tool must be
        called), True (the only tool), or a tool's name (that tool)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted]
        choice = _tool_choice(tool_choice, names)
        return super().bind(tools=formatted, **({"tool_choice": choice} if choice is not None else {}), **kwargs)

    def with_structured_output(self, schema: dict | type, *, include_raw: bool = False,
                               method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
                               strict: bool | None = None, **kwargs: Any
                               ) -> Runnable[LanguageModelInput, dict | BaseModel]:
        """Answers as `schema` (a pydantic class, TypedDict, JSON schema or tool), by constrained decoding.

        method "json_schema" (and "json_mode", which is held to the schema too) constrains the text
        to the schema; "function_calling" forces a call of the schema as a tool."""
        if kwargs:
            raise ValueError(f"with_structured_output takes no {', '.join(sorted(kwargs))}")
        is_pydantic = is_basemodel_subclass(schema)  # pydantic 2, or its v1 namespace
        traced = {"ls_structured_output_format": {"kwargs": {"method": method, "strict": strict},
                                                  "schema": convert_to_json_schema(schema)}}
        if method == "function_calling":
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            bound = self.bind_tools([schema], tool_choice=name, **traced)
            parser = (PydanticToolsParser(tools=[schema], first_tool_only=True) if is_pydantic
                      else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
        elif method in ("json_schema", "json_mode"):
            # json_mode is held to the schema as well: the schema is at hand, and an object that
            # misses its fields would fail the parser anyway
            json_schema = convert_to_json_schema(schema)
            response_format = {"type": "json_schema", "json_schema": {
                "name": json_schema.get("title", "response"), "schema": json_schema,
                **({"strict": strict} if strict is not None else {})}}
            bound = self.bind(response_format=response_format, **traced)
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
        else:
            raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', not {method!r}")
        if not include_raw:
            return bound | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=bound) | parsed.with_fallbacks([failed], exception_key="parsing_error")

    # --- running ------------------------------------------------------------------------------------

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict
                 ) -> Callable[[Callable | None, threading.Event], _Reply]:
        """Check the call's arguments now, in the caller's thread; the returned function runs it."""
        kwargs = dict(kwargs)
        model = str(kwargs.pop("model", None) or self.model)
        constraints = {name: kwargs.pop(name) for name in _CONSTRAINTS if kwargs.get(name) is not None}
        for name in _CONSTRAINTS:
            kwargs.pop(name, None)
        kwargs.pop("parallel_tool_calls", None)  # one call per turn is all a forced call can make anyway
        budget, sampling, seed = self._decoding(**kwargs).split()
        stop = list(stop) if stop is not None else self.stop
        openai_messages = _openai_messages(messages)
        kb = self.knowledge_base
        if kb is not None:
            refused = [*sampling, *constraints]
            if refused:
                raise ValueError(f"{', '.join(refused)} applies to plain generation; a ChatRagGLM bound to "
                                 "a knowledge base answers with its pipeline's own decoding")
            conversation = Conversation.of(openai_messages)
            if not conversation.question:
                raise ValueError("a ChatRagGLM bound to a knowledge base answers the last human message, "
                                 "and there is none")

            def answer(on_text, cancelled) -> _Reply:
                outcome = ask_knowledge_base(kb, conversation.question, history=conversation.history,
                                             instructions=conversation.instructions, stop=stop, on_text=on_text,
                                             cancelled=cancelled, seed=seed, **budget)
                return _Reply(outcome, str(kb.generator.name))
            return answer

        def generate(on_text, cancelled) -> _Reply:
            generator = shared_generator(model, self.quant, self.device)
            if constraints and is_remote(generator):  # only the local engine constrains its output
                raise ValueError(f"{', '.join(constraints)} cannot be sent on to a remote generator")
            outcome = chat_generator(generator, openai_messages, stop=stop, seed=seed, on_text=on_text,
                                     cancelled=cancelled, sampling=sampling, options=constraints, **budget)
            return _Reply(outcome, model, outcome.tool_calls)
        return generate

    def _deadline(self, cancelled: threading.Event) -> threading.Timer | None:
        if self.timeout is None:
            return None
        timer = threading.Timer(self.timeout, cancelled.set)
        timer.daemon = True
        timer.start()
        return timer

    def _with_retries(self, work: Callable[[], _Reply]) -> _Reply:
        """work(), again up to max_retries times while a remote generator cannot be reached."""
        for attempt in range(self.max_retries + 1):
            try:
                return work()
            except RemoteGeneratorError:
                if attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")


_DECODING_NAMES = {*DecodingOptions.model_fields, "max_tokens"}


def _openai_messages(messages: list[BaseMessage]) -> list[dict]:
    """LangChain messages as the OpenAI-shaped dicts Engine.chat renders; text content only."""
    converted = convert_to_openai_messages(messages, text_format="string")
    for index, message in enumerate(converted):
        content = message.get("content")
        if isinstance(content, list):
            kinds = sorted({part.get("type", "?") for part in content if part.get("type") != "text"})
            raise ValueError(f"message {index} holds {', '.join(kinds)} content; ChatRagGLM reads text only")
        message["content"] = content or ""
    return converted


def _tool_choice(choice: str | dict | bool | None, names: list[str]) -> str | dict | None:
    """LangChain's tool_choice values in OpenAI's form."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if choice is True:
        if len(names) != 1:
            raise ValueError(f"tool_choice=True picks the only tool, but {len(names)} are bound; name one")
        choice = names[0]
    if choice is False:
        return "none"
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"tool_choice {choice!r} is none of the bound tools ({', '.join(names)})")
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, dict):
        return choice
    raise ValueError(f"tool_choice must be 'auto', 'none', 'any', 'required', a tool name or True, not {choice!r}")


def _result(reply: _Reply) -> ChatResult:
    tool_calls, invalid = reply.langchain_tool_calls()
    message = AIMessage(content=reply.outcome.text, tool_calls=tool_calls, invalid_tool_calls=invalid,
                        usage_metadata=reply.usage(), response_metadata=reply.metadata())
    return ChatResult(generations=[ChatGeneration(message=message, generation_info={
        "finish_reason": reply.outcome.finish_reason})])


def _last_chunk(reply: _Reply) -> ChatGenerationChunk:
    """The end of a stream: tool calls (whole, as the engine reads them back once generated), usage,
    and the metadata (citations included)."""
    chunks = [{"name": call.get("function", {}).get("name"), "args": _arguments(call), "id": call.get("id"),
               "index": index, "type": "tool_call_chunk"} for index, call in enumerate(reply.tool_calls)]
    message = AIMessageChunk(content="", tool_call_chunks=chunks, usage_metadata=reply.usage(),
                             response_metadata=reply.metadata(), chunk_position="last")
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": reply.outcome.finish_reason})


def _arguments(call: dict) -> str:
    arguments = call.get("function", {}).get("arguments")
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {})
