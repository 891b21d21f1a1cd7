"""From a question to a checked, cited answer: decide how to answer, pick the context, answer from it.

AnswerPipeline receives its collaborators (a Retriever, a way to the Generator, an Embedder) and an
AnswerConfig; per-call options (mode, k, token budget, temperature) are arguments of `ask`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ragglm.documents import Answer, AnswerPlan, ContextPlan, Hit
from ragglm.errors import InvalidRequestError
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.context import pack_hits
from ragglm.pipelines.planner import PlannerConfig, plan_context, prefill_rate
from ragglm.pipelines.prompts import build_messages, format_sources
from ragglm.pipelines.qa import answer_question
from ragglm.pipelines.rewrite import standalone_question
from ragglm.protocols import Embedder, Generator, Retriever, TextCallback
from ragglm.text.language import detect_language

__all__ = ["MODES", "AnswerPipeline", "SMALL_MODEL_STUFF_TOKENS"]

MODES = ("auto", "stuff", "retrieve", "extractive")
# Models under a billion parameters answer garbage from long stuffed contexts (SmolLM2-135M on the
# 1.6K-token example manuals answered with a heading); they get retrieved chunks instead.
SMALL_MODEL_STUFF_TOKENS = 1024
_EXTRACT_REASON = {
    "asked": "extractive was asked for",
    "language": "{model} does not answer in {language}; configure a Chinese-capable model "
                "(e.g. --model THUDM/glm-4-9b-chat) for generated answers",
    "small": "{model} has under a billion parameters: its answers are right less often than the cited "
             "extract; --mode retrieve or stuff generates, a larger --model generates in auto mode",
}


@dataclass
class AnswerPipeline:
    """retriever: where sources come from; generator: called when an answer is to be generated (so a
    model loads only then); embedder: for the calibrated answerability check, where one fits it."""

    retriever: Retriever
    generator: Callable[[], Generator]
    embedder: Embedder | None = None
    config: AnswerConfig = field(default_factory=AnswerConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)  # its answer and retrieval budgets follow config
    # (corpus signature, generator, language) -> (whole pages, their prompt tokens)
    _corpus: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def ask(self, question: str, *, mode: str = "auto", k: int | None = None,
            max_new_tokens: int | None = None, temperature: float | None = None,
            on_text: TextCallback | None = None, instructions: str | None = None) -> Answer:
        """instructions: the caller's own (tone, language, length), given to the generator after the
        grounding rules; an extract or a refusal cannot follow them, and the plan says so."""
        answer = self._answer(question, mode, k, max_new_tokens, temperature, on_text, instructions)
        if instructions and instructions.strip():
            answer.plan.instructions = _instructions_note(answer.plan)
        return answer

    def _answer(self, question: str, mode: str, k: int | None, max_new_tokens: int | None,
                temperature: float | None, on_text: TextCallback | None, instructions: str | None) -> Answer:
        if mode not in MODES:
            raise InvalidRequestError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        config = dataclasses.replace(self.config, top_k=k or self.config.top_k,
                                     max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                                     temperature=self.config.temperature if temperature is None else temperature)
        language = detect_language(question)
        generator = None if mode == "extractive" else self.generator()
        why = _why_extract(generator, mode, language, config)
        if why:
            hits = self.retriever.search(question, config.top_k)
            answer = answer_question(question, hits, None, language, config=config, embedder=self.embedder,
                                     on_text=on_text)
            name = generator.name if generator is not None else ""
            answer.model = name
            answer.plan.reason = _EXTRACT_REASON[why].format(model=name, language=language)
            answer.plan.language = language
            return answer
        planner = dataclasses.replace(
            self.planner, answer_tokens=config.max_new_tokens, retrieve_k=config.top_k,
            max_stuff_tokens=SMALL_MODEL_STUFF_TOKENS if _is_small(generator) else self.planner.max_stuff_tokens)
        plan, hits = self.choose_context(question, generator, mode, planner, language, instructions)
        answer = answer_question(question, hits, generator, language, config=config, context_mode=plan.mode,
                                 embedder=self.embedder, on_text=on_text, instructions=instructions)
        answer.plan.mode, answer.plan.reason = plan.mode, plan.reason
        answer.plan.context, answer.plan.language, answer.plan.sources_given = plan, language, len(hits)
        return answer

    def chat(self, history: list[dict], *, mode: str = "auto", **options) -> Answer:
        """Answer the last user turn of history; a follow-up is first rewritten to stand alone."""
        question = standalone_question(history, None if mode == "extractive" else self.generator())
        answer = self.ask(question, mode=mode, **options)
        answer.plan.standalone_question = question
        return answer

    def choose_context(self, question: str, generator: Generator, mode: str = "auto",
                       planner: PlannerConfig | None = None, language: str | None = None,
                       instructions: str | None = None) -> tuple[ContextPlan, list[Hit]]:
        """The plan (stuff or retrieve, with its numbers) and the sources the prompt will hold."""
        planner = planner or self.planner
        language = language or detect_language(question)
        pages, document_tokens = self._whole_pages(generator, language)
        # the caller's instructions take room in the prompt as the question does, and are counted with it
        question_tokens = generator.count_tokens(question) + (generator.count_tokens(instructions) if instructions else 0)
        budget = generator.window - question_tokens - planner.answer_tokens - planner.prompt_overhead_tokens
        cached = 0
        if mode != "retrieve" and document_tokens <= budget:
            cached = min(document_tokens, generator.cached_prompt_tokens(
                build_messages(question, pages, language, instructions)))
        plan = plan_context(document_tokens, question_tokens, generator.window, prefill_rate(generator), cached,
                            planner, forced=mode if mode in ("stuff", "retrieve") else None)
        plan.prefix_cache = getattr(generator, "prefix_cache_note", None)
        if plan.mode == "stuff":
            return plan, pages
        retrieved = self.retriever.search(question, planner.retrieve_k)
        hits, _ = pack_hits(retrieved, plan.budget_tokens, generator.count_tokens)
        return plan, hits

    def _whole_pages(self, generator: Generator, language: str) -> tuple[list[Hit], int]:
        """Whole pages as sources and their token count, computed once per content."""
        key = (self.retriever.signature(), generator.name, language)
        if key in self._corpus:
            self._corpus.move_to_end(key)
            return self._corpus[key]
        pages = self.retriever.whole_pages()
        tokens = generator.count_tokens(format_sources(pages, language)) if pages else 0
        self._corpus[key] = (pages, tokens)
        while len(self._corpus) > 4:
            self._corpus.popitem(last=False)
        return pages, tokens


def _instructions_note(plan: AnswerPlan) -> str:
    if plan.refused:
        return "not followed: the documents do not answer, and the refusal phrase is fixed"
    if plan.mode == "extractive" or plan.fallback:
        return "not followed: the answer quotes the documents as they are"
    return "given to the model after the grounding rules"


def _why_extract(generator: Generator | None, mode: str, language: str, config: AnswerConfig) -> str:
    """Why this question is answered by extract ("asked", "language", "small"), or "" to generate."""
    if generator is None:
        return "asked"
    if language not in generator.languages:
        return "language"
    if mode == "auto" and config.small_model_extracts and _is_small(generator):
        return "small"
    return ""


def _is_small(generator: Generator) -> bool:
    """A model under a billion parameters; a remote generator's size is unknown (not small)."""
    return generator.parameter_count is not None and generator.parameter_count < 1e9
