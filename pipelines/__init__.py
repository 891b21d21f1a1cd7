"""Answering: grounded prompts, citation checking, the question-answering pipeline."""

from ragglm.pipelines.citations import parse_citation_numbers, resolve_citations
from ragglm.pipelines.prompts import NOT_FOUND, build_messages
from ragglm.pipelines.qa import answer_question, extractive_answer

__all__ = ["NOT_FOUND", "answer_question", "build_messages", "extractive_answer",
           "parse_citation_numbers", "resolve_citations"]
