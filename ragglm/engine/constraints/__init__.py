"""Constrained decoding: grammars (JSON schema, regex, tool calls) that mask the logits at every step."""

from ragglm.engine.constraints.chat import (
           ChatPlan,
           json_schema_constraint,
           plan_chat,
           regex_constraint,
)
from ragglm.engine.constraints.grammar import GrammarConstraint, TriggeredConstraint

__all__ = ["ChatPlan", "GrammarConstraint", "TriggeredConstraint", "json_schema_constraint", "plan_chat",
           "regex_constraint"]
