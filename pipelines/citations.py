"""Find [n] citations in an answer, keep those that point at given sources, quote the support."""

from __future__ import annotations

import re

from ragglm.documents import Citation, Hit
from ragglm.text.chunker import word_spans
from ragglm.text.language import is_cjk
from ragglm.text.sentences import split_sentences
from ragglm.text.stopwords import STOP_WORDS

__all__ = ["CITATION_MARK", "parse_citation_numbers", "strip_citation_marks", "resolve_citations", "content_words",
           "best_sentence", "support", "coverage", "stem"]

# [1] [1, 2] [1-3] 【2】 (2) [Source 1]; three digits at most so that "(1990)" stays a year.
CITATION_MARK = re.compile(
    r"[\[【(（]\s*(?:sources?\s*|资料\s*)?"
    r"(\d{1,3}(?:\s*(?:[-–~,，、]|and|和)\s*\d{1,3})*)\s*[\]】)）]",
    re.IGNORECASE,
)



def parse_citation_numbers(text: str) -> list[int]:
    """Source numbers in order of first use: [1], [1, 2], [1-3], 【2】, (2)."""
    numbers: list[int] = []
    for match in CITATION_MARK.finditer(text):
        for part in re.split(r"\s*(?:[,，、]|and|和)\s*", match.group(1), flags=re.IGNORECASE):
            bounds = [int(n) for n in re.split(r"\s*[-–~]\s*", part) if n]
            if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] < 20:
                bounds = list(range(bounds[0], bounds[1] + 1))
            for n in bounds:
                if n not in numbers:
                    numbers.append(n)
    return numbers


def strip_citation_marks(text: str) -> str:
    return re.sub(r"[ \t]+([.,;:!?。，；])", r"\1", CITATION_MARK.sub("", text)).strip()


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry meaning; Chinese text adds its character pairs for robustness."""
    lowered = text.lower()
    words = {lowered[s:e] for s, e in word_spans(lowered)}
    kept = {w for w in words if w not in STOP_WORDS and (len(w) > 1 or not w.isascii()) and any(c.isalnum() for c in w)}
    kept |= {stem(w) for w in kept if w.isascii()}
    cjk_run = "".join(c if is_cjk(c) else " " for c in lowered)
    for run in cjk_run.split():
        kept |= {run[i : i + 2] for i in range(len(run) - 1)}
    return kept


def stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def coverage(question: str, text: str) -> float:
    """Share of the question's content words found in text."""
    wanted = content_words(question)
    return len(wanted & content_words(text)) / len(wanted) if wanted else 0.0


def support(answer: str, text: str, question: str = "") -> float:
    """Share of the answer's own content words (those not echoed from the question) found in text."""
    claimed = content_words(strip_citation_marks(answer)) - content_words(question)
    if not claimed:
        return 1.0
    return len(claimed & content_words(text)) / len(claimed)


def best_sentence(text: str, reference: str) -> str:
    """The sentence of text sharing the most content words with reference."""
    wanted = content_words(reference)
    sentences = [text[s:e] for s, e in split_sentences(text)] or [text]
    return max(sentences, key=lambda s: len(content_words(s) & wanted))


def resolve_citations(answer: str, hits: list[Hit], min_support: float = 0.5) -> list[Citation]:
    """Citations to sources 1..len(hits); an uncited answer gets the source that clearly supports it."""
    citations = [
        Citation(n, hits[n - 1].source, hits[n - 1].page, best_sentence(hits[n - 1].text, answer))
        for n in parse_citation_numbers(answer)
        if 1 <= n <= len(hits)
    ]
    if citations or not hits:
        return citations
    scores = [support(answer, hit.text) for hit in hits]
    best = max(range(len(hits)), key=lambda i: (scores[i], -i))
    if scores[best] < min_support or not content_words(strip_citation_marks(answer)):
        return []
    hit = hits[best]
    return [Citation(best + 1, hit.source, hit.page, best_sentence(hit.text, answer), inferred=True)]
