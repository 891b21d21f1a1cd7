"""Tool calls in the syntax a checkpoint's own Jinja chat template was trained with.

A template that lists a `tools` variable gets the tools from the request, and writes assistant
tool calls and tool results its own way; what the model answers is read back in that syntax:

- Llama 3.1/3.2 (the template speaks of `ipython`, the role its tool results take): a call is the
  whole reply, `{"name": ..., "parameters": {...}}`, perhaps after `<|python_tag|>` (a control
  token, so not in the decoded text), several separated by `;`.
- Qwen2.5 and other Hermes-style templates (`<tool_call>` in the template): a call is
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`; results come back in
  `<tool_response>` inside a user turn, which the template writes.
- Mistral (`[TOOL_CALLS]`): the control token, then a JSON list of `{"name", "arguments"}`
  objects; call ids are nine letters or digits, as its template requires.

Templates without one of these syntaxes keep the JSON convention of tool_format.
"""

from __future__ import annotations

import hashlib
import json
import string

from ragglm.engine.tokenizers.tool_format import (
    JsonToolFormat,
    ParsedOutput,
    ToolFormat,
    _call_of,
    _text,
    function_of,
)

__all__ = ["TemplateToolFormat", "LlamaToolFormat", "HermesToolFormat", "MistralToolFormat",
           "template_tool_format"]


class TemplateToolFormat(ToolFormat):
    """Tools go to the template as `tools`; calls and results stay OpenAI-shaped messages, with
    arguments as objects (templates write them with tojson)."""

    one_call_per_turn = False  # a template that refuses several calls in one assistant message

    def template_tools(self, tools):
        return [{"type": "function", "function": function_of(t)} for t in tools] or None

    def messages(self, messages, tools):
        out: list[dict] = []
        for message in messages:
            role = message.get("role")
            if role == "assistant" and message.get("tool_calls"):
                calls = [self.template_call(call) for call in message["tool_calls"]]
                groups = [[call] for call in calls] if self.one_call_per_turn else [calls]
                content = _text(message.get("content"))
                for index, group in enumerate(groups):
                    out.append({"role": "assistant", "content": content if index == 0 else "", "tool_calls": group})
            elif role == "tool":
                out.append({**message, "content": _text(message.get("content"))})
            else:
                kept = {k: v for k, v in message.items() if k != "tool_calls"}
                out.append({**kept, "content": _text(message.get("content"))})
        return out

    def template_call(self, call: dict) -> dict:
        name, arguments = _call_of(call)
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError:
            value = arguments  # written as the string it is
        return {"id": call.get("id"), "type": "function", "function": {"name": name, "arguments": value}}


class HermesToolFormat(TemplateToolFormat, JsonToolFormat):
    """Qwen2.5's syntax: JsonToolFormat's calls and their reading, but written by the template."""


class LlamaToolFormat(TemplateToolFormat):
    at_start_only = True
    one_call_per_turn = True  # Llama 3.1's template raises on more than one

    def call_parts(self, name):
        return '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "parameters": ', "}"

    def triggers(self, names):
        return ['{"name"']

    def parse(self, text, names):
        body = text.strip().removeprefix("<|python_tag|>").lstrip()
        calls, rest = _json_calls(body, separators=";")
        if not calls:
            return ParsedOutput(text.strip(), [])
        return ParsedOutput(rest.strip(), calls)


class MistralToolFormat(TemplateToolFormat):
    at_start_only = True
    forced_marker = "[TOOL_CALLS]"

    def template_call(self, call):
        return {**super().template_call(call), "id": mistral_call_id(call.get("id"))}

    def messages(self, messages, tools):
        out = super().messages(messages, tools)
        return [{**m, "tool_call_id": mistral_call_id(m.get("tool_call_id"))} if m.get("role") == "tool" else m
                for m in out]

    def call_parts(self, name):
        # [TOOL_CALLS] is a control token the grammar cannot write: the call is held from the list on
        return '[{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": ', "}]"

    def triggers(self, names):
        return ['[{"name"']

    def parse(self, text, names):
        body = text.strip().removeprefix("[TOOL_CALLS]").lstrip()
        try:
            value, end = json.JSONDecoder().raw_decode(body)
        except json.JSONDecodeError:
            return ParsedOutput(text.strip(), [])
        items = value if isinstance(value, list) else [value]
        calls = [_named_call(item) for item in items]
        if not calls or None in calls:
            return ParsedOutput(text.strip(), [])
        return ParsedOutput(body[end:].strip(), calls)


def mistral_call_id(call_id) -> str | None:
    """Nine letters or digits standing for an OpenAI call id (the same one each time)."""
    if call_id is None:
        return None
    text = str(call_id)
    if len(text) == 9 and text.isalnum():
        return text
    alphabet = string.ascii_letters + string.digits
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:9])


def template_tool_format(chat_format) -> TemplateToolFormat | None:
    """The template's own tool syntax, when the chat format is a Jinja template that has one."""
    template = getattr(chat_format, "template", None)
    if not isinstance(template, str) or not getattr(chat_format, "takes_tools", False):
        return None
    if "[TOOL_CALLS]" in template:
        return MistralToolFormat()
    if "ipython" in template or "<|python_tag|>" in template:
        return LlamaToolFormat()
    if "<tool_call>" in template:
        return HermesToolFormat()
    return None


def _named_call(value) -> tuple[str, dict | str] | None:
    if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
        return None
    return value["name"], value.get("parameters", value.get("arguments", {}))


def _json_calls(text: str, separators: str) -> tuple[list[tuple[str, dict | str]], str]:
    """The calls written as JSON objects at the start of text, one after another, and the text after them."""
    decoder = json.JSONDecoder()
    calls, position = [], 0
    while position < len(text) and text[position] == "{":
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        call = _named_call(value)
        if call is None:
            break
        calls.append(call)
        position = end
        while position < len(text) and (text[position].isspace() or text[position] in separators):
            position += 1
    return calls, text[position:]
