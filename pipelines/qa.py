"""Retrieve, prompt, generate and cite: the answering pipeline behind KnowledgeBase.ask."""

from __future__ import annotations

import time
from collections.abc import Callable

from ragglm.documents import Answer, Citation, Hit
from ragglm.pipelines.citations import best_sentence, content_words, resolve_citations
from ragglm.pipelines.prompts import NOT_FOUND, build_messages
from ragglm.text.language import detect_language
from ragglm.text.sentences import split_sentences

__all__ = ["answer_question", "extractive_answer"]

_EXTRACT_NOTE = {"en": "Extract from the documents:", "zh": "以下摘自文档："}


def answer_question(question: str, hits: list[Hit], engine, max_new_tokens: int = 160,
                    temperature: float = 0.0, on_text: Callable[[str], None] | None = None,
                    mode: str = "auto") -> Answer:
    """Answer from hits with the engine; extractive when the engine does not speak the language."""
    started = time.perf_counter()
    language = detect_language(question)
    if not hits:
        return Answer(NOT_FOUND[language], [], "retrieve", engine.name if engine else "", {"total_s": 0.0})
    if mode == "extractive" or engine is None or language not in engine.languages:
        answer = extractive_answer(question, hits, language)
        answer.model = engine.name if engine else ""
        answer.timings = {"ttft_s": 0.0, "total_s": time.perf_counter() - started}
        if on_text:
            on_text(answer.text)
        return answer
    messages = build_messages(question, hits, language)
    if on_text is None:
        result = engine.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature)
    else:
        from ragglm.engine.generate import GenerationResult

        result = GenerationResult([])
        for piece in engine.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                 stream=True, result=result):
            on_text(piece)
    text = result.text.strip()
    citations = [] if NOT_FOUND[language] in text else resolve_citations(text, hits)
    timings = {
        "ttft_s": round(result.ttft_s, 4),
        "total_s": round(time.perf_counter() - started, 4),
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "generated_tokens": len(result.token_ids),
        "decode_tok_s": round(result.decode_tok_s, 2),
    }
    return Answer(text, citations, "retrieve", engine.name, timings, hits)


def extractive_answer(question: str, hits: list[Hit], language: str, max_sentences: int = 2) -> Answer:
    """The sentences sharing the most content words with the question, each cited."""
    wanted = content_words(question)
    scored = []
    for number, hit in enumerate(hits, 1):
        for start, end in split_sentences(hit.text):
            sentence = hit.text[start:end]
            overlap = len(content_words(sentence) & wanted)
            scored.append((overlap, -number, sentence, number))
    scored.sort(reverse=True)
    picked = [s for s in scored if s[0] > 0][:max_sentences]
    if not picked:
        return Answer(NOT_FOUND[language], [], "extractive", "", sources=hits)
    lines = [" ".join(sentence.split()) + f" [{number}]" for _, _, sentence, number in picked]
    citations: list[Citation] = []
    for _, _, sentence, number in picked:
        if all(c.id != number for c in citations):
            hit = hits[number - 1]
            citations.append(Citation(number, hit.source, hit.page, best_sentence(sentence, question)))
    return Answer(_EXTRACT_NOTE[language] + "\n" + "\n".join(lines), citations, "extractive", "", sources=hits)
