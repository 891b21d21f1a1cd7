"""Answering: planning the context, grounded prompts, checked citations, evaluation."""

from ragglm.pipelines.answering import MODES, ask, chat
from ragglm.pipelines.citations import parse_citation_numbers, resolve_citations
from ragglm.pipelines.planner import Plan, PlannerConfig, plan_context
from ragglm.pipelines.prompts import NOT_FOUND, build_messages
from ragglm.pipelines.qa import AnswerConfig, answer_question, extractive_answer
from ragglm.pipelines.rewrite import standalone_question

__all__ = ["MODES", "NOT_FOUND", "AnswerConfig", "Plan", "PlannerConfig", "answer_question", "ask",
           "build_messages", "chat", "extractive_answer", "parse_citation_numbers", "plan_context",
           "resolve_citations", "standalone_question"]
