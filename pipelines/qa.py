"""From sources to a checked, cited answer: generate from the best sources, or quote them.

The caller decides whether to generate (a generator is given) or to extract (none is); this module
then refuses when the sources do not answer, and replaces a generated answer by an extract when it
is not backed by the sentences that best match the question.
"""

from __future__ import annotations

import time

from ragglm.documents import Answer, AnswerPlan, Hit
from ragglm.pipelines.answerability import sentence_window
from ragglm.pipelines.checks import (
    is_refusal,
    says_something,
    support_citation,
    unanswerable,
    unbacked_facts,
)
from ragglm.pipelines.citations import (
    CITATION_MARK,
    parse_citation_numbers,
    resolve_citations,
    support,
)
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.extract import ScoredSentence, extractive_answer, rank_sentences
from ragglm.pipelines.prompts import NOT_FOUND, build_messages
from ragglm.protocols import Embedder, Generator, TextCallback
from ragglm.text.stop_strings import StopStringFilter, relay

__all__ = ["answer_question"]


def answer_question(question: str, hits: list[Hit], generator: Generator | None, language: str, *,
                    config: AnswerConfig, context_mode: str = "retrieve", embedder: Embedder | None = None,
                    on_text: TextCallback | None = None, instructions: str | None = None) -> Answer:
    """Answer from hits with the generator (None: a cited extract), checked against them.

    instructions: the caller's own, given to the generator after the grounding rules (see build_messages).

    embedder: the knowledge base's embedder; where a support model is calibrated for it and the
    question's language, it decides whether the sources answer at all (see answerability.py).
    """
    started = time.perf_counter()
    ranked = rank_sentences(question, hits, language=language)
    plan = AnswerPlan("extractive" if generator is None else context_mode,
                      relevance=round(ranked[0].score, 3) if ranked else 0.0)
    refusal, probability = unanswerable(question, hits, ranked, language, config, embedder)
    if probability is not None:
        plan.answerable_p = round(probability, 3)
    model = generator.name if generator is not None else ""
    if refusal:
        plan.refused = refusal
        return _finish(Answer(NOT_FOUND[language], [], plan.mode, model, sources=hits), plan, model, started, on_text)
    if generator is None:
        answer = extractive_answer(question, hits, language, config.extract_sentences, -1.0, ranked)
        return _finish(answer, plan, model, started, on_text)

    shown = hits if context_mode == "stuff" else _best_sources(hits, ranked, config.generate_sources)
    result = _generate(generator, build_messages(question, shown, language, instructions), config, on_text)
    text = _renumber(result.text.strip(), {n: hits.index(shown[n - 1]) + 1 for n in range(1, len(shown) + 1)})
    timings = {
        "ttft_s": round(result.ttft_s, 4),
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "generated_tokens": len(result.token_ids),
        "decode_tok_s": round(result.decode_tok_s, 2),
    }
    if is_refusal(text, language):
        if plan.answerable_p is None:
            plan.refused = "the model found no answer in the sources"
            return _finish(Answer(NOT_FOUND[language], [], context_mode, model, timings, hits), plan, model, started)
        # The calibrated check found that the best sentences answer the question; small models may
        # refuse although the right source was retrieved, so the extract is shown rather than a refusal.
        plan.fallback = "the model said the sources do not answer, but their best sentences match; showing an extract"
        return _fall_back(question, hits, ranked, language, config, result.text, timings, plan, model, started, on_text)

    # The answer's own words must come from the sentences that best match the question: small models
    # copy words from elsewhere in the sources (a neighbouring fact, a heading) and sound supported.
    evidence = " ".join(sentence_window(hits[s.number - 1].text, s.index) for s in ranked[:config.extract_sentences])
    plan.support = round(support(text, evidence, question), 3)
    citations = resolve_citations(text, hits) or support_citation(text, hits, ranked)
    unbacked = unbacked_facts(text, " ".join([evidence, *(c.text for c in citations)]), question)
    if not says_something(text, question):
        plan.fallback = "the generated answer only restated the question; showing an extract"
    elif unbacked:
        plan.fallback = (f"the generated answer states {', '.join(unbacked[:3])}, which the sentences it "
                         "cites do not; showing an extract")
    elif plan.support < config.min_support:
        plan.fallback = "the generated answer was not supported by the sources; showing an extract"
    if plan.fallback:
        return _fall_back(question, hits, ranked, language, config, result.text, timings, plan, model, started, on_text)
    return _finish(Answer(text, citations, context_mode, model, timings, hits), plan, model, started)


def _fall_back(question: str, hits: list[Hit], ranked: list[ScoredSentence], language: str,
               config: AnswerConfig, generated: str, timings: dict, plan: AnswerPlan, model: str,
               started: float, on_text: TextCallback | None) -> Answer:
    """The cited extract in place of a generated answer; what was streamed already stays, with the reason."""
    answer = extractive_answer(question, hits, language, config.extract_sentences, -1.0, ranked)
    answer.timings = timings
    if on_text:
        tail = "\n\n(" + plan.fallback + ")\n" + answer.text
        on_text(tail)
        answer.text = generated + tail
    return _finish(answer, plan, model, started)


def _best_sources(hits: list[Hit], ranked: list[ScoredSentence], limit: int) -> list[Hit]:
    """The hits holding the best-matching sentences, in retrieval order."""
    order: list[int] = []
    for sentence in ranked:
        if sentence.number not in order:
            order.append(sentence.number)
        if len(order) == limit:
            break
    return [hits[n - 1] for n in sorted(order)] or hits[:limit]


def _renumber(text: str, numbers: dict[int, int]) -> str:
    """Citations refer to the sources shown; rewrite them to the numbers of all sources."""
    if all(k == v for k, v in numbers.items()):
        return text

    def fix(match):
        inner = match.group(1)
        parts = [str(numbers.get(n, 0)) for n in parse_citation_numbers(match.group(0))]
        return match.group(0).replace(inner, ", ".join(parts)) if parts else match.group(0)

    return CITATION_MARK.sub(fix, text)


def _generate(generator: Generator, messages: list[dict], config: AnswerConfig,
              on_text: TextCallback | None):
    """Stream the answer; with first_line_only, stop at its first line break (what follows is filler)."""
    from ragglm.engine.generate import GenerationResult  # torch: imported only to generate

    result = GenerationResult([])
    stops = StopStringFilter(["\n"] if config.first_line_only else [], skip_leading_space=True)
    relay(generator.chat(messages, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                         stream=True, result=result), stops, on_text)
    result.text = stops.text
    return result


def _finish(answer: Answer, plan: AnswerPlan, model: str, started: float,
            on_text: TextCallback | None = None) -> Answer:
    answer.model = model
    # answers that never reached the generator still report the same timing keys
    answer.timings = {"ttft_s": 0.0, "cached_tokens": 0, **answer.timings,
                      "total_s": round(time.perf_counter() - started, 4)}
    answer.plan = plan
    if on_text:
        on_text(answer.text)
    return answer
