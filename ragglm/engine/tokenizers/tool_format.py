"""Tools and tool turns in each model family's own format, and tool calls read back from its output.

- ChatGLM3: the tools as JSON in the system turn, after the line ChatGLM3 was trained with; a
  call is an assistant turn whose first line names the tool, followed by a fenced Python call
  `tool_call(**{...})`; a tool's result is an `<|observation|>` turn.
- GLM-4: the tools under a "# 可用工具" heading in the system turn, one "## name" section each, as
  GLM-4 was trained; a call is an assistant turn "name\\n{arguments JSON}"; results are
  `<|observation|>` turns.
- Jinja templates with a tool syntax of their own (Llama 3.1/3.2, Qwen2.5, Mistral): that syntax,
  see tool_format_templates.
- Every other chat template (SmolLM2, ChatML and other Jinja templates, ChatGLM2): a JSON
  convention. The system message lists the tools inside <tools></tools>; a call is written
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`; a tool's result comes back as a
  user turn wrapped in <tool_response></tool_response>.

A call's text is `prefix + arguments JSON + suffix` in every format, so a grammar can hold the
arguments to the tool's JSON schema (see ragglm.engine.constraints.chat).
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass

from ragglm.engine.tokenizers.glm_chat_format import ChatGLM3Format, GLM4Format
from ragglm.errors import InvalidRequestError

__all__ = ["ToolFormat", "JsonToolFormat", "ChatGLM3ToolFormat", "GLM4ToolFormat", "tool_format_for",
           "function_of", "openai_tool_call"]


def function_of(tool: dict) -> dict:
    """The function dict of an OpenAI tool ({"type": "function", "function": {...}}) or of a bare function."""
    function = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidRequestError(f"tool {tool!r} has no function name; tools are "
                                  "{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}")
    return function


def openai_tool_call(name: str, arguments: dict | str) -> dict:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": text}}


@dataclass
class ParsedOutput:
    content: str
    calls: list[tuple[str, dict | str]]  # (name, arguments)


class ToolFormat:
    """How one family writes tools, calls and results. Subclasses fill in the format's pieces."""

    at_start_only = False  # whether a call can only open the reply (GLM) or may follow some text
    forced_marker: str | None = None  # a control token that opens calls, written into the prompt when one is forced

    def messages(self, messages: list[dict], tools: list[dict]) -> list[dict]:
        """Messages the chat format renders: tools in the system turn, calls and results as turns."""
        out: list[dict] = []
        for message in messages:
            role = message.get("role")
            if role == "assistant" and message.get("tool_calls"):
                out += self.call_turns(message.get("content") or "", [_call_of(c) for c in message["tool_calls"]])
            elif role == "tool":
                out.append(self.result_turn(_text(message.get("content"))))
            else:
                out.append({**message, "content": _text(message.get("content"))})
        if tools:
            out = self.with_tools(out, [function_of(t) for t in tools])
        return out

    def template_tools(self, tools: list[dict]) -> list[dict] | None:
        """The tools for the chat template's own `tools` variable; None when messages() shows them."""
        return None

    def with_tools(self, messages: list[dict], functions: list[dict]) -> list[dict]:
        raise NotImplementedError

    def call_turns(self, content: str, calls: list[tuple[str, str]]) -> list[dict]:
        raise NotImplementedError

    def result_turn(self, content: str) -> dict:
        raise NotImplementedError

    def call_parts(self, name: str) -> tuple[str, str]:
        """The text before and after a call's arguments JSON."""
        raise NotImplementedError

    def triggers(self, names: list[str]) -> list[str]:
        """Text that starts a call; what follows it is held to the call grammar."""
        raise NotImplementedError

    def parse(self, text: str, names: list[str]) -> ParsedOutput:
        raise NotImplementedError


class JsonToolFormat(ToolFormat):
    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def with_tools(self, messages, functions):
        listing = "\n".join(json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions)
        text = ("You can call functions to help answer. The functions, as JSON:\n<tools>\n" + listing
                + "\n</tools>\nTo call one, reply with nothing but:\n" + self.OPEN
                + '\n{"name": <function name>, "arguments": <arguments as a JSON object>}\n' + self.CLOSE)
        return _add_to_system(messages, text)

    def call_turns(self, content, calls):
        blocks = [self._block(name, arguments) for name, arguments in calls]
        return [{"role": "assistant", "content": "\n".join(([content] if content else []) + blocks)}]

    def result_turn(self, content):
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}

    def _block(self, name: str, arguments: str) -> str:
        prefix, suffix = self.call_parts(name)
        return prefix + arguments + suffix

    def call_parts(self, name):
        return f'{self.OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": ', f"}}\n{self.CLOSE}"

    def triggers(self, names):
        return [self.OPEN]

    def parse(self, text, names):
        calls, kept, position = [], [], 0
        decoder = json.JSONDecoder()
        while (start := text.find(self.OPEN, position)) >= 0:
            body_at = start + len(self.OPEN)
            body_at += len(text[body_at:]) - len(text[body_at:].lstrip())
            try:
                value, end = decoder.raw_decode(text, body_at)
            except json.JSONDecodeError:
                break  # an unfinished call stays in the text
            if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
                break
            kept.append(text[position:start])
            calls.append((value["name"], value.get("arguments", value.get("parameters", {}))))
            close = text.find(self.CLOSE, end)
            position = close + len(self.CLOSE) if close >= 0 and not text[end:close].strip() else end
        kept.append(text[position:])
        return ParsedOutput("".join(kept).strip(), calls)


class _GLMToolFormat(ToolFormat):
    """Calls as assistant turns whose first line (the turn's metadata) names the tool."""

    at_start_only = True

    def call_turns(self, content, calls):
        turns = [{"role": "assistant", "content": content}] if content else []
        for name, arguments in calls:
            prefix, suffix = self.call_parts(name)
            turns.append({"role": "assistant", "metadata": name, "content": prefix[len(name) + 1:] + arguments + suffix})
        return turns

    def result_turn(self, content):
        return {"role": "observation", "content": content}

    def triggers(self, names):
        return [f"{name}\n" for name in names]

    def parse(self, text, names):
        head, newline, rest = text.lstrip("\n").partition("\n")
        if not newline or head.strip() not in names:
            return ParsedOutput(text.strip(), [])
        arguments = self.arguments(rest)
        if arguments is None:
            return ParsedOutput(text.strip(), [])
        return ParsedOutput("", [(head.strip(), arguments)])

    def arguments(self, text: str) -> dict | str | None:
        raise NotImplementedError


class ChatGLM3ToolFormat(_GLMToolFormat):
    PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"

    def with_tools(self, messages, functions):
        return _add_to_system(messages, self.PROMPT + "\n" + json.dumps(functions, indent=4, ensure_ascii=False))

    def call_parts(self, name):
        return f"{name}\n ```python\ntool_call(**", ")\n```"

    def arguments(self, text):
        body = text.strip().removeprefix("```python").removesuffix("```").strip()
        match = re.fullmatch(r"tool_call\((.*)\)", body, re.S)
        if not match:
            return None
        inner = match.group(1).strip()
        if inner.startswith("**"):
            try:
                return json.loads(inner[2:])
            except json.JSONDecodeError:
                return None
        return _python_kwargs(inner)


class GLM4ToolFormat(_GLMToolFormat):
    # GLM-4's tool system turn, as its chat template writes it
    PROMPT = ("你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对"
              "用户的问题和要求提供适当的答复和支持。\n\n# 可用工具")

    def with_tools(self, messages, functions):
        sections = "".join(f"\n\n## {f['name']}\n\n{json.dumps(f, indent=4, ensure_ascii=False)}\n"
                           "在调用上述函数时，请使用 Json 格式表示调用的参数。" for f in functions)
        return _add_to_system(messages, self.PROMPT + sections)

    def call_parts(self, name):
        return f"{name}\n", ""

    def arguments(self, text):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


def tool_format_for(chat_format) -> ToolFormat:
    if isinstance(chat_format, ChatGLM3Format):
        return ChatGLM3ToolFormat()
    if isinstance(chat_format, GLM4Format):
        return GLM4ToolFormat()
    return JsonToolFormat()


def _add_to_system(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{text}" if first["content"] else text}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _call_of(call: dict) -> tuple[str, str]:
    function = call.get("function", call) if isinstance(call, dict) else {}
    name = function.get("name")
    if not isinstance(name, str):
        raise InvalidRequestError(f"tool call {call!r} has no function name")
    arguments = function.get("arguments", "{}")
    return name, arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _python_kwargs(text: str) -> dict | None:
    """`a="x", b=2` as ChatGLM3 may write them; JSON's true, false and null are read too."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        return None
    names = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
    arguments = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            return None
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            if isinstance(keyword.value, ast.Name) and keyword.value.id in names:
                arguments[keyword.arg] = names[keyword.value.id]
            else:
                return None
    return arguments if not call.args else None
