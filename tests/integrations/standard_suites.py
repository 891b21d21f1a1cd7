"""What LangChain's standard chat-model suites are told about ragglm: which tests wait for constrained
decoding in the engine, which ask more judgement of a 135M model than it has, and how those are marked."""

from __future__ import annotations

import functools
import inspect

import pytest

from ragglm.engine.engine import Engine

__all__ = ["CONSTRAINED", "JUDGEMENT", "TOOL_TESTS", "mark_chat_suite"]

# The engine constrains tool calls and JSON output once Engine.chat takes tools and response_format.
CONSTRAINED = "tools" in inspect.signature(Engine.chat).parameters

TOOL_TESTS = (
    "test_tool_calling", "test_tool_calling_async", "test_bind_runnables_as_tools",
    "test_tool_message_histories_string_content", "test_tool_message_histories_list_content",
    "test_tool_choice", "test_tool_calling_with_no_arguments", "test_tool_message_error_status",
    "test_structured_few_shot_examples", "test_structured_output", "test_structured_output_async",
    "test_structured_output_pydantic_2_v1", "test_structured_output_optional_param", "test_json_mode",
    "test_agent_loop", "test_unicode_tool_call_integration",
)

# test name -> why its assertion is beyond a 135M model (the output's format is still constrained)
JUDGEMENT: dict[str, str] = {
    "test_agent_loop": "with tool_choice 'auto' the model decides whether to call the tool; SmolLM2 "
                       "answers in prose instead",
    "test_unicode_tool_call_integration": "the call is forced and its arguments follow the schema, but "
                                          "copying the customer's Chinese and Japanese name into them is "
                                          "the model's work; SmolLM2 writes other strings",
}


def mark_chat_suite(cls: type, judgement: dict[str, str] = JUDGEMENT, loop_scope: str = "function") -> type:
    """Mark the suite's tool tests (until the engine constrains output) and the judgement tests.

    The suite accepts an overridden test only when it is an xfail with a reason; its async tests
    need pytest-asyncio's mark, which it leaves to the project (loop_scope "module" for clients that
    keep one connection pool, bound to the loop that opened it, across tests)."""
    for name in TOOL_TESTS:
        if name not in judgement:
            _mark(cls, name, pytest.mark.xfail(not CONSTRAINED, reason="needs constrained tool calls",
                                               strict=False))
    for name, why in judgement.items():
        _mark(cls, name, pytest.mark.xfail(reason=why, strict=False))
    cls.pytestmark = [*getattr(cls, "pytestmark", []), pytest.mark.asyncio(loop_scope=loop_scope)]
    return cls


def _mark(cls: type, name: str, mark) -> None:
    """Mark a wrapper of the inherited test, so the mark lands on this class, not the suite's base class."""
    test = getattr(cls, name)
    if inspect.iscoroutinefunction(test):
        @functools.wraps(test)
        async def wrapper(*args, **kwargs):
            return await test(*args, **kwargs)
    else:
        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            return test(*args, **kwargs)
    wrapper.pytestmark = [*getattr(test, "pytestmark", []), mark.mark]
    setattr(cls, name, wrapper)
