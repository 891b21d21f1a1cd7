"""A chat request's tools, tool_choice and response_format, turned into a prompt, a grammar
constraint for the decoder, and a reader for the output.

- response_format {"type": "json_schema", "json_schema": {"schema": ...}}: the output is JSON
  valid under the schema; {"type": "json_object"}: any JSON object; {"type": "regex", "regex": ...}
  (an extension): text matching the regular expression; {"type": "text"}: free.
- tools with tool_choice "required" or a named function: the output is one call in the model's
  format, its arguments held to the tool's parameters schema. "auto" (the default with tools):
  free until the output starts a call, then the call's grammar. "none": tools are not shown.
JSON is written compactly (no free whitespace), which keeps a small model from padding forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ragglm.engine.constraints.grammar import GrammarConstraint, TriggeredConstraint
from ragglm.engine.constraints.vocabulary import grammar_compiler
from ragglm.engine.tokenizers.tool_format import (
    ToolFormat,
    function_of,
    openai_tool_call,
    tool_format_for,
)
from ragglm.engine.tokenizers.tool_format_templates import template_tool_format
from ragglm.errors import InvalidRequestError

__all__ = ["ChatPlan", "plan_chat", "json_schema_constraint", "regex_constraint"]

_ANY_ARGUMENTS = {"type": "object"}


@dataclass
class ChatPlan:
    prompt_ids: list[int]
    constraint: object | None = None  # a generate.Constraint
    tool_format: ToolFormat | None = None
    tool_names: list[str] = field(default_factory=list)  # calls are read from the output when set

    def finish(self, result) -> None:
        """Read tool calls out of the result's text: text keeps what is not a call."""
        if not self.tool_names:
            return
        parsed = self.tool_format.parse(result.text, self.tool_names)
        result.tool_calls = [openai_tool_call(name, arguments) for name, arguments in parsed.calls]
        if result.tool_calls:
            result.text = parsed.content
            result.finish_reason = "tool_calls"


class _Grammars:
    """Grammars for one engine's tokenizer and vocabulary, compiled and wrapped as constraints."""

    def __init__(self, engine):
        import xgrammar

        self.xgr = xgrammar
        self.vocab_size = engine.args.vocab_size
        self.compiler, self.pieces, self.ranks = grammar_compiler(engine.tokenizer, self.vocab_size)

    def constraint(self, grammar) -> GrammarConstraint:
        return GrammarConstraint(self.compiler.compile_grammar(grammar), self.pieces, self.vocab_size, self.ranks)

    def json_schema(self, schema: dict, strict: bool = True):
        try:
            return self.xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=strict)
        except Exception as exc:  # xgrammar raises its own error types for schemas it cannot take
            raise InvalidRequestError(f"the JSON schema cannot be used to constrain output: {exc}") from exc

    def literal(self, text: str):
        return self.xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text)}")

    def call(self, tool_format: ToolFormat, function: dict, skip: str = ""):
        """One call of the function in the format; skip: the part of its text already written."""
        prefix, suffix = tool_format.call_parts(function["name"])
        if not prefix.startswith(skip):
            return None
        parts = [self.literal(prefix[len(skip):])] if prefix[len(skip):] else []
        parts.append(self.json_schema(function.get("parameters") or _ANY_ARGUMENTS))
        if suffix:
            parts.append(self.literal(suffix))
        return self.xgr.Grammar.concat(*parts) if len(parts) > 1 else parts[0]

    def calls(self, tool_format: ToolFormat, functions: list[dict], skip: str = ""):
        grammars = [g for g in (self.call(tool_format, f, skip) for f in functions) if g is not None]
        return self.xgr.Grammar.union(*grammars) if len(grammars) > 1 else grammars[0]


def plan_chat(engine, messages: list[dict], *, tools: list[dict] | None = None, tool_choice=None,
              response_format: dict | None = None, max_new_tokens: int = 256) -> ChatPlan:
    tool_format = template_tool_format(engine.chat_format) or tool_format_for(engine.chat_format)
    functions = [function_of(t) for t in tools or ()]
    choice = _tool_choice(tool_choice, functions)
    shown = [{"type": "function", "function": f} for f in functions] if choice != "none" else []
    rendered = tool_format.messages(messages, shown)
    listed = tool_format.template_tools(shown)  # the template's own `tools`, for formats that have one
    prompt_ids = (engine.chat_ids(rendered) if listed is None
                  else engine.chat_format.ids(rendered, engine.tokenizer, tools=listed))
    plan = ChatPlan(prompt_ids, tool_format=tool_format, tool_names=[f["name"] for f in functions if shown])
    if choice in ("required",) or isinstance(choice, dict):
        forced = functions if choice == "required" else [f for f in functions if f["name"] == choice["name"]]
        marker = engine.tokenizer.token_id(tool_format.forced_marker) if tool_format.forced_marker else None
        if marker is not None:  # the grammar writes text only: the control token that opens calls goes first
            plan.prompt_ids.append(marker)
        grammars = _Grammars(engine)
        plan.constraint = grammars.constraint(grammars.calls(tool_format, forced))
        plan.constraint.require_budget(max_new_tokens, "a call of the tool")
    elif response_format is not None and response_format.get("type", "text") != "text":
        plan.constraint = format_constraint(engine, response_format)
        plan.constraint.require_budget(max_new_tokens, "response_format")
    elif shown:
        plan.constraint = _auto_calls(engine, tool_format, functions)
    return plan


def format_constraint(engine, response_format: dict) -> GrammarConstraint:
    kind = response_format.get("type")
    if kind == "json_object":
        return json_schema_constraint(engine, {"type": "object"}, strict=False)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        return json_schema_constraint(engine, schema)
    if kind == "regex":
        pattern = response_format.get("regex") or response_format.get("pattern")
        if not isinstance(pattern, str):
            raise InvalidRequestError("response_format regex needs {'type': 'regex', 'regex': PATTERN}")
        return regex_constraint(engine, pattern)
    raise InvalidRequestError(f"response_format type {kind!r} is not one of text, json_object, json_schema, regex")


def json_schema_constraint(engine, schema: dict, strict: bool = True) -> GrammarConstraint:
    """A constraint holding the output to compact JSON valid under schema."""
    grammars = _Grammars(engine)
    return grammars.constraint(grammars.json_schema(schema, strict))


def regex_constraint(engine, pattern: str) -> GrammarConstraint:
    grammars = _Grammars(engine)
    try:
        grammar = grammars.xgr.Grammar.from_regex(pattern)
    except Exception as exc:
        raise InvalidRequestError(f"the regular expression {pattern!r} cannot be used: {exc}") from exc
    return grammars.constraint(grammar)


def _auto_calls(engine, tool_format: ToolFormat, functions: list[dict]) -> TriggeredConstraint:
    grammars = _Grammars(engine)

    def after(trigger: str) -> GrammarConstraint:
        return grammars.constraint(grammars.calls(tool_format, functions, skip=trigger))

    return TriggeredConstraint(tool_format.triggers([f["name"] for f in functions]), after,
                               engine.tokenizer.decode, at_start_only=tool_format.at_start_only)


def _tool_choice(choice, functions: list[dict]):
    """"none" | "auto" | "required" | {"name": ...}; "none" without tools."""
    if not functions:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError(f"tool_choice {choice!r} needs tools")
        return "none"
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name not in [f["name"] for f in functions]:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools: "
                                      f"{', '.join(f['name'] for f in functions)}")
        return {"name": name}
    raise InvalidRequestError(f"tool_choice {choice!r} is not 'auto', 'none', 'required' or "
                              "{'type': 'function', 'function': {'name': ...}}")

