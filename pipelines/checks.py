"""Checks on answers: is it a refusal, do the sources answer at all, does a generated answer say
anything the best sentences do not back."""

from __future__ import annotations

import re

from ragglm.documents import Citation, Hit
from ragglm.pipelines.answerability import answer_probability, support_features, support_model_for
from ragglm.pipelines.citations import best_sentence, content_words, strip_citation_marks
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.extract import ScoredSentence
from ragglm.pipelines.prompts import NOT_FOUND
from ragglm.protocols import Embedder

__all__ = ["is_refusal", "unanswerable", "says_something", "support_citation", "unbacked_facts"]

# The models' own ways of saying the sources do not tell, beside the fixed phrase.
_REFUSALS = {
    "zh": ("没有找到", "没有提到", "未提及", "无法回答", "没有相关"),
    "en": ("do not contain", "does not contain", "don't contain", "not mentioned", "no information",
           "not provided", "cannot answer", "not specified"),
}


def is_refusal(text: str, language: str | None = None) -> bool:
    """The fixed phrase, or a model's own way of saying the sources do not tell (any language when None)."""
    lowered = text.lower()
    for lang in (language,) if language else tuple(NOT_FOUND):
        if NOT_FOUND[lang].lower().rstrip(".。") in lowered or any(p in lowered for p in _REFUSALS[lang]):
            return True
    return False


def unanswerable(question: str, hits: list[Hit], ranked: list[ScoredSentence], language: str,
                 config: AnswerConfig, embedder: Embedder | None) -> tuple[str, float | None]:
    """(why the sources do not answer the question or "" when they may, the calibrated probability)."""
    if not ranked or ranked[0].score <= 0.0:
        return "no source sentence shares a word with the question", None
    calibrated = support_model_for(embedder.name, language) if embedder is not None else None
    if calibrated is not None and config.use_support_model:
        probability = answer_probability(support_features(question, ranked, hits, embedder), calibrated)
        if probability < calibrated.threshold:
            return "the best source sentences do not look like an answer to the question", probability
        return "", probability
    if ranked[0].score < config.min_relevance.get(language, 0.3):
        return "no source sentence matches the question well enough", None
    return "", None


def says_something(answer: str, question: str) -> bool:
    """Whether an answer says anything beyond the question's own words (a restatement answers nothing)."""
    return bool(content_words(strip_citation_marks(answer)) - content_words(question))


def support_citation(answer: str, hits: list[Hit], ranked: list[ScoredSentence]) -> list[Citation]:
    """An answer that cites nothing: attach the source whose best sentence carries its words."""
    wanted = content_words(answer)
    for sentence in ranked[:5]:
        if wanted and len(wanted & content_words(sentence.text)) / len(wanted) >= 0.5:
            hit = hits[sentence.number - 1]
            return [Citation(sentence.number, hit.source, hit.page, best_sentence(hit.text, answer), inferred=True)]
    return []


# Key facts: anything holding a digit (numbers with units, part and version codes, "D8C.S"), names in
# capitals or with underscores (registers, pins), file names. A small model that copies a neighbouring
# part number still shares most words with the page, so these are checked one by one.
_FACT = re.compile(r"[\w\-./]*\d[\w\-./]*|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\b[A-Z]{2,}[0-9A-Z]*\b|\b\w+\.[A-Za-z]{1,4}\b")


def unbacked_facts(answer: str, evidence: str, question: str = "") -> list[str]:
    """The key facts of an answer (numbers, codes, register and file names) that neither the evidence
    nor the question holds."""
    held = _folded(evidence) + " " + _folded(question)
    facts = dict.fromkeys(_folded(m.group(0)) for m in _FACT.finditer(strip_citation_marks(answer)))
    # whole tokens: "1" is not backed by "128"
    return [fact for fact in facts if fact and not re.search(rf"(?<![\w]){re.escape(fact)}(?![\w])", held)]


def _folded(text: str) -> str:
    return text.lower().replace(",", "").strip(".-/ ")
