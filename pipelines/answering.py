"""From a question to a checked, cited answer: pick the context (plan), then answer from it."""

from __future__ import annotations

from collections import OrderedDict

from ragglm.documents import Answer, Hit
from ragglm.engine.model import ModelArgs
from ragglm.pipelines.context import corpus_signature, pack_hits, whole_pages
from ragglm.pipelines.planner import (
    Plan,
    PlannerConfig,
    cached_tokens,
    count_prompt_tokens,
    plan_context,
    prefill_rate,
)
from ragglm.pipelines.prompts import build_messages, format_sources
from ragglm.pipelines.qa import AnswerConfig, answer_question
from ragglm.pipelines.rewrite import standalone_question
from ragglm.text.language import detect_language

__all__ = ["MODES", "ask", "chat", "choose_context"]

MODES = ("auto", "stuff", "retrieve", "extractive")
_EXTRACT_REASON = {
    "asked": "extractive was asked for",
    "language": "{model} does not answer in {language}; configure a Chinese-capable model "
                "(e.g. --model THUDM/glm-4-9b-chat) for generated answers",
    "small": "{model} has under a billion parameters: its answers are right less often than the cited "
             "extract; --mode retrieve or stuff generates, a larger --model generates in auto mode",
}
_CORPUS_TOKENS: OrderedDict = OrderedDict()  # (corpus signature, model) -> (pages, source tokens)


def ask(kb, question: str, mode: str = "auto", k: int | None = None, on_text=None,
        config: AnswerConfig | None = None, planner: PlannerConfig | None = None) -> Answer:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if not question.strip():
        raise ValueError("the question is empty")
    settings = kb.settings
    config = config or AnswerConfig(settings.max_new_tokens, settings.temperature)
    k = k or settings.top_k
    language = detect_language(question)
    engine = None if mode == "extractive" else kb.engine
    small = mode == "auto" and engine is not None and config.small_model_extracts and _is_small(engine)
    if engine is None or language not in engine.languages or small:
        why = "asked" if engine is None else "language" if language not in engine.languages else "small"
        hits = kb.search(question, k)
        answer = answer_question(question, hits, engine, on_text=on_text, mode="extractive", config=config,
                                 language=language, embedder=_embedder(kb))
        reason = _EXTRACT_REASON[why].format(model=getattr(engine, "name", ""), language=language)
        answer.plan = {"mode": "extractive", "reason": reason, "language": language, **answer.plan}
        return answer

    planner = planner or PlannerConfig(answer_tokens=config.max_new_tokens, retrieve_k=k,
                                       max_stuff_tokens=_stuff_limit(engine))
    plan, hits = choose_context(kb, question, engine, mode, planner, language)
    answer = answer_question(question, hits, engine, on_text=on_text, config=config, context_mode=plan.mode,
                             language=language, embedder=_embedder(kb))
    answer.plan = {**plan.to_dict(), "language": language, "sources_given": len(hits), **answer.plan}
    return answer


def choose_context(kb, question: str, engine, mode: str = "auto", planner: PlannerConfig | None = None,
                   language: str | None = None) -> tuple[Plan, list[Hit]]:
    """The plan (stuff or retrieve, with its numbers) and the sources the prompt will hold."""
    planner = planner or PlannerConfig()
    language = language or detect_language(question)
    pages, document_tokens = _corpus(kb, engine, language)
    question_tokens = count_prompt_tokens(engine, question)
    window = context_window(engine)
    budget = window - question_tokens - planner.answer_tokens - planner.prompt_overhead_tokens
    cached = 0
    if mode != "retrieve" and document_tokens <= budget:
        cached = min(document_tokens, cached_tokens(engine, build_messages(question, pages, language)))
    plan = plan_context(document_tokens, question_tokens, window, prefill_rate(engine), cached, planner,
                        forced=mode if mode in ("stuff", "retrieve") else None)
    if plan.mode == "stuff":
        return plan, pages
    retrieved = kb.search(question, planner.retrieve_k)
    hits, _ = pack_hits(retrieved, plan.budget_tokens, lambda text: count_prompt_tokens(engine, text))
    return plan, hits


def _embedder(kb):
    """The knowledge base's embedder, when it has one of its own (an external dense store may not)."""
    return getattr(getattr(kb, "store", None), "embedder", None)


def context_window(engine) -> int:
    """The generator's window; a remote server does not say, so assume a common 8K."""
    args = getattr(engine, "args", None)
    return args.max_seq_len if args is not None else REMOTE_WINDOW_TOKENS


REMOTE_WINDOW_TOKENS = 8192


def _stuff_limit(engine) -> int | None:
    """Models under a billion parameters answer garbage from long stuffed contexts (SmolLM2-135M on
    the 1.6K-token example manuals answered with a heading); give them retrieved chunks instead."""
    return SMALL_MODEL_STUFF_TOKENS if _is_small(engine) else None


def _is_small(engine) -> bool:
    """A local model under a billion parameters; a remote generator's size is unknown (not small)."""
    args = getattr(getattr(engine, "model", None), "args", None)
    return isinstance(args, ModelArgs) and args.parameter_count < 1e9


SMALL_MODEL_STUFF_TOKENS = 1024


def chat(kb, history: list[dict], mode: str = "auto", k: int | None = None, on_text=None,
         config: AnswerConfig | None = None) -> Answer:
    """Answer the last user turn of history; a follow-up is first rewritten to stand alone."""
    engine = None if mode == "extractive" else kb.engine
    question = standalone_question(history, engine)
    answer = ask(kb, question, mode=mode, k=k, on_text=on_text, config=config)
    answer.plan = {**answer.plan, "standalone_question": question}
    return answer


def _corpus(kb, engine, language: str):
    """Whole pages of the knowledge base and their token count as sources, computed once per content."""
    key = (id(kb.store), corpus_signature(kb.store), engine.name, language)
    if key in _CORPUS_TOKENS:
        _CORPUS_TOKENS.move_to_end(key)
        return _CORPUS_TOKENS[key]
    pages = whole_pages(kb.store)
    tokens = count_prompt_tokens(engine, format_sources(pages, language)) if pages else 0
    _CORPUS_TOKENS[key] = (pages, tokens)
    while len(_CORPUS_TOKENS) > 4:
        _CORPUS_TOKENS.popitem(last=False)
    return pages, tokens
