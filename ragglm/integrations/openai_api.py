"""The OpenAI API's request and response shapes as ragglm serves them.

Every chat-completion parameter is honoured or refused: a client that asks for something this
server cannot do (logprobs, a frequency penalty) gets a 400 naming it rather than an answer that
silently ignored it. tools, tool_choice and response_format are honoured by the engine's
constrained decoding (see ragglm.engine.constraints). Fields OpenAI clients send for bookkeeping (user, metadata, store)
are accepted, as they change nothing about the answer.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["CITATIONS_HEADER", "KB_MODEL_ID", "citations_header", "ChatCompletionRequest", "ChatMessage", "EmbeddingRequest", "ParameterError", "check_chat_request",
           "chat_options", "embedding_response", "embedding_texts", "engine_messages", "relative_sources",
           "sampling_options", "tool_call_deltas"]

# The model name that answers from the documents ("ragglm:NAME" picks one of several knowledge bases)
KB_MODEL_ID = "ragglm"

MAX_STOP_STRINGS = 4  # as OpenAI allows
MAX_EMBEDDING_INPUTS = 2048  # as OpenAI allows


class ParameterError(ValueError):
    """A request parameter this server refuses; `param` names it as OpenAI's error body does."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class _TextRequest(BaseModel):
    """A request body whose strings must all be valid Unicode."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        # JSON may spell a lone surrogate ("\ud800"); no tokenizer, nor UTF-8, can take one
        where = _lone_surrogate(data)
        if where is not None:
            raise PydanticCustomError("lone_surrogate", "holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                                      "which is not text; send valid Unicode", {"param": where or "body"})
        return data


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # a speaker's label: it does not change how the text is read
    tool_calls: list[dict] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # which call a tool message answers

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(_TextRequest):
    # unknown fields are kept so that check_chat_request can name them in its refusal
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)  # not OpenAI's, but vLLM and others take it; 0 is off
    repetition_penalty: float | None = Field(default=None, gt=0.0)  # likewise; 1 is off
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    # bookkeeping a client may send: accepted, changing nothing
    user: str | None = None
    metadata: dict | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None  # calls come one per turn; accepted either way
    # refused unless at their defaults (see _REFUSED)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None

    def parts(self) -> int:
        return sum(1 + (len(m.content) if isinstance(m.content, list) else 0) for m in self.messages)

    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


def _empty(value) -> bool:
    return value is None or value == {} or value == []


# (parameter, is it at a value that changes nothing, why a value that would change something is refused)
_REFUSED = (
    ("presence_penalty", lambda v: not v, "presence_penalty is not supported; repetition_penalty (>1 "
                                          "discourages repeats) is"),
    ("frequency_penalty", lambda v: not v, "frequency_penalty is not supported; repetition_penalty (>1 "
                                           "discourages repeats) is"),
    ("logit_bias", _empty, "logit_bias is not supported"),
    ("logprobs", lambda v: not v, "logprobs are not returned by this server"),
    ("top_logprobs", lambda v: not v, "logprobs are not returned by this server"),
    ("functions", _empty, "functions (deprecated by OpenAI) are not supported; send tools"),
    ("function_call", lambda v: v is None or v == "none", "function_call (deprecated by OpenAI) is not "
                                                          "supported; send tool_choice"),
)
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def check_chat_request(request: ChatCompletionRequest) -> None:
    """Raise ParameterError for the first parameter the request sets that this server cannot honour."""
    for name in request.model_extra or {}:
        raise ParameterError(name, f"unknown parameter {name!r}")
    for name, harmless, why in _REFUSED:
        if not harmless(getattr(request, name)):
            raise ParameterError(name, why)
    if request.n != 1:
        raise ParameterError("n", "only n=1 is supported")
    _check_stops(request.stops())
    _check_response_format(request.response_format)
    _check_tools(request.tools, request.tool_choice)
    for index, message in enumerate(request.messages):
        _check_message(index, message)


def _check_response_format(response_format: dict | None) -> None:
    if response_format is None:
        return
    kind = response_format.get("type")
    if kind not in _RESPONSE_FORMATS:
        raise ParameterError("response_format", f"response_format type {kind!r} is not one of "
                                                f"{', '.join(_RESPONSE_FORMATS)}")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ParameterError("response_format", "response_format json_schema needs "
                                                    "{\"json_schema\": {\"name\": ..., \"schema\": {...}}}")


def _check_tools(tools: list | None, tool_choice) -> None:
    for index, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict) \
                or not isinstance(function.get("name"), str) or not function["name"]:
            raise ParameterError(f"tools.{index}", "a tool is {\"type\": \"function\", \"function\": "
                                                   "{\"name\": ..., \"parameters\": {...}}}")
        if not isinstance(function.get("parameters", {}), dict):
            raise ParameterError(f"tools.{index}.function.parameters", "parameters must be a JSON schema object")
    names = [tool["function"]["name"] for tool in tools or ()]
    if tool_choice is None or tool_choice in ("auto", "none"):
        return
    if not names:
        raise ParameterError("tool_choice", f"tool_choice {tool_choice!r} needs tools")
    if tool_choice == "required":
        return
    chosen = (tool_choice.get("function") or {}).get("name") if isinstance(tool_choice, dict) else None
    if chosen is None:
        raise ParameterError("tool_choice", "tool_choice is \"auto\", \"none\", \"required\" or "
                                            "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if chosen not in names:
        raise ParameterError("tool_choice", f"tool_choice names {chosen!r}, which is not among the tools: "
                                            f"{', '.join(names)}")


def chat_options(request: ChatCompletionRequest) -> dict:
    """Engine.chat's tools, tool_choice and response_format, those the request sets."""
    options = {}
    if request.tools:
        options["tools"] = request.tools
        if request.tool_choice is not None:
            options["tool_choice"] = request.tool_choice
    if request.response_format is not None and request.response_format.get("type") != "text":
        options["response_format"] = request.response_format
    return options


def engine_messages(request: ChatCompletionRequest) -> list[dict]:
    """The messages as Engine.chat takes them: text contents, developer as system, tool turns kept."""
    messages = []
    for m in request.messages:
        message = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.role == "tool" and m.name:
            message["name"] = m.name
        messages.append(message)
    return messages


def tool_call_deltas(tool_calls: list[dict]) -> list[dict]:
    """Calls as streamed chunks carry them: each whole, with its index."""
    return [{"index": index, **call} for index, call in enumerate(tool_calls)]


def _check_stops(stops: list[str] | None) -> None:
    if stops is None:
        return
    if len(stops) > MAX_STOP_STRINGS:
        raise ParameterError("stop", f"stop holds {len(stops)} strings; at most {MAX_STOP_STRINGS} are allowed")
    if any(not stop for stop in stops):
        raise ParameterError("stop", "a stop string is empty, which would end every answer before it began")


def _check_message(index: int, message: ChatMessage) -> None:
    where = f"messages.{index}"
    if message.tool_calls and message.role != "assistant":
        raise ParameterError(f"{where}.tool_calls", "only assistant messages carry tool_calls")
    if message.role == "tool" and not message.tool_call_id:
        raise ParameterError(f"{where}.tool_call_id", "a tool message needs the tool_call_id it answers")
    for number, call in enumerate(message.tool_calls or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ParameterError(f"{where}.tool_calls.{number}", "a tool call is {\"id\": ..., \"type\": "
                                                                 "\"function\", \"function\": {\"name\": ..., "
                                                                 "\"arguments\": JSON text}}")
    for name, value in (message.model_extra or {}).items():
        # a client that sends back an earlier reply whole brings its empty fields along
        if not _empty(value):
            raise ParameterError(f"{where}.{name}", f"{name} in a message is not supported")
    if isinstance(message.content, list):
        for number, part in enumerate(message.content):
            if part.type != "text":
                raise ParameterError(f"{where}.content.{number}", f"{part.type!r} content parts are not "
                                                                  "supported: the model reads text only")


def sampling_options(request: ChatCompletionRequest, temperature: float) -> tuple[float, dict]:
    """The temperature and the engine's sampling arguments the request asks for, defaults left out.

    top_p 0 keeps only the most likely token, which is greedy decoding: the engine reads 0 as "off"."""
    if request.top_p == 0:
        return 0.0, _penalty(request)
    options = _penalty(request)
    if request.top_p is not None and request.top_p < 1:
        options["top_p"] = request.top_p
    if request.top_k:
        options["top_k"] = request.top_k
    return temperature, options


def _penalty(request: ChatCompletionRequest) -> dict:
    if request.repetition_penalty is None or request.repetition_penalty == 1:
        return {}
    return {"repetition_penalty": request.repetition_penalty}


def _lone_surrogate(data) -> str | None:
    """The dotted path of a string in data (keys included) that UTF-8 cannot encode, if any.

    A walk with its own stack, as a body may nest deeper than Python's recursion limit allows."""
    stack = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return path
        elif isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not _encodable(key):
                    return path
                stack.append((f"{path}.{key}" if path else str(key), item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- embeddings -----------------------------------------------------------------------------------

class EmbeddingRequest(_TextRequest):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def embedding_texts(request: EmbeddingRequest) -> list[str]:
    """The input as strings; token ids are refused, as they belong to another model's tokenizer."""
    for name in request.model_extra or {}:
        raise ParameterError(name, f"unknown parameter {name!r}")
    texts = [request.input] if isinstance(request.input, str) else request.input
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise ParameterError("input", f"input holds {len(texts)} items; at most {MAX_EMBEDDING_INPUTS}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ParameterError(f"input.{index}", "input must be a string or a list of strings; token ids "
                                                   "are not accepted (with LangChain's OpenAIEmbeddings, "
                                                   "set check_embedding_ctx_length=False)")
    return texts


def embedding_response(vectors: np.ndarray, model: str, encoding: str, tokens: int) -> dict:
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
                     for i, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the openai client decodes it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


# --- citations ------------------------------------------------------------------------------------

# A response header with an answer's citations: OpenAI clients keep only OpenAI's own fields of the
# body (LangChain's ChatOpenAI drops the `citations` field), but can hand back the headers
CITATIONS_HEADER = "x-ragglm-citations"
MAX_CITATIONS_HEADER_BYTES = 8 * 1024  # well under what HTTP clients accept for all headers together


def citations_header(citations: list[dict]) -> str:
    """The citations without their quoted text, as ASCII JSON; as many as fit the header's budget."""
    kept = [{k: c.get(k) for k in ("id", "source", "page", "document") if k in c} for c in citations]
    while True:
        text = json.dumps(kept, ensure_ascii=True, separators=(",", ":"))
        if len(text) <= MAX_CITATIONS_HEADER_BYTES or not kept:
            return text
        kept.pop()


def relative_sources(citations: list[dict], sources: list[str], files: Path | None) -> list[dict]:
    """Citations whose file sources are named relative to the knowledge base, not by the server's paths.

    An upload is named within the knowledge base's files folder; any other file within the folder
    that holds all such files (the one the documents were added from). URLs stay as they are. The
    `document` field is the source's id in the document API, which the web page links a citation by."""
    from ragglm.web.documents import (
        document_id,  # ragglm.web imports the server: not at module level
    )

    files = files.resolve() if files is not None else None
    others = [s for s in sources if _is_path(s) and _within(s, files) is None]
    base = _common_folder(others)
    return [{**c, "source": _relative(c["source"], files, base), "document": document_id(c["source"])}
            for c in citations]


def _is_path(source: str) -> bool:
    return not source.startswith(("http://", "https://"))


def _within(source: str, folder: Path | None) -> str | None:
    if folder is None:
        return None
    try:
        return Path(source).relative_to(folder).as_posix()
    except ValueError:
        return None


def _common_folder(paths: list[str]) -> Path | None:
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return Path(os.path.commonpath(sorted(folders))) if folders else None


def _relative(source: str, files: Path | None, base: Path | None) -> str:
    if not _is_path(source):
        return source
    return _within(source, files) or _within(source, base) or Path(source).name
