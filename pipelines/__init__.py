"""Answering: planning the context, grounded prompts, checked citations, evaluation."""

from ragglm.documents import AnswerPlan, ContextPlan
from ragglm.pipelines.answering import MODES, AnswerPipeline
from ragglm.pipelines.checks import is_refusal
from ragglm.pipelines.citations import parse_citation_numbers, resolve_citations
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.extract import extractive_answer, rank_sentences
from ragglm.pipelines.planner import PlannerConfig, plan_context
from ragglm.pipelines.prompts import NOT_FOUND, build_messages
from ragglm.pipelines.qa import answer_question
from ragglm.pipelines.rewrite import standalone_question

__all__ = ["MODES", "NOT_FOUND", "AnswerConfig", "AnswerPipeline", "AnswerPlan", "ContextPlan", "PlannerConfig",
           "answer_question", "build_messages", "extractive_answer", "is_refusal", "parse_citation_numbers",
           "plan_context", "rank_sentences", "resolve_citations", "standalone_question"]
