"""Find [n] citations in an answer, keep those that point at given sources, quote the support."""

from __future__ import annotations

import re

from ragglm.documents import Citation, Hit
from ragglm.text.chunker import word_spans
from ragglm.text.sentences import split_sentences

__all__ = ["parse_citation_numbers", "resolve_citations", "content_words", "best_sentence"]

_MARK = re.compile(r"[\[【]\s*(\d+(?:\s*[-–,，、]\s*\d+)*)\s*[\]】]")
_STOP = set(
    "the a an of to in on and or is are was were be for with as by at it this that from which what how "
    "do does can not no yes you your its their there".split()
) | set("的 了 是 在 和 与 或 及 我 你 他 它 这 那 吗 呢 什么 如何 怎么 多少 哪".split())


def parse_citation_numbers(text: str) -> list[int]:
    """Source numbers in order of first use: [1], [1, 2], [1-3], 【2】."""
    numbers: list[int] = []
    for match in _MARK.finditer(text):
        for part in re.split(r"\s*[,，、]\s*", match.group(1)):
            bounds = [int(n) for n in re.split(r"\s*[-–]\s*", part)]
            for n in range(bounds[0], bounds[-1] + 1) if len(bounds) == 2 and bounds[1] - bounds[0] < 20 else bounds:
                if n not in numbers:
                    numbers.append(n)
    return numbers


def content_words(text: str) -> set[str]:
    words = (text[s:e].lower() for s, e in word_spans(text))
    return {w for w in words if w not in _STOP and (len(w) > 1 or not w.isascii()) and any(c.isalnum() for c in w)}


def best_sentence(text: str, reference: str) -> str:
    """The sentence of text sharing the most content words with reference."""
    wanted = content_words(reference)
    sentences = [text[s:e] for s, e in split_sentences(text)] or [text]
    return max(sentences, key=lambda s: len(content_words(s) & wanted))


def resolve_citations(answer: str, hits: list[Hit]) -> list[Citation]:
    """Citations to sources 1..len(hits); an uncited answer is matched to its best-overlapping source."""
    citations = [
        Citation(n, hits[n - 1].source, hits[n - 1].page, best_sentence(hits[n - 1].text, answer))
        for n in parse_citation_numbers(answer)
        if 1 <= n <= len(hits)
    ]
    if citations or not hits:
        return citations
    wanted = content_words(answer)
    overlaps = [len(content_words(hit.text) & wanted) for hit in hits]
    best = max(range(len(hits)), key=lambda i: (overlaps[i], -i))
    if overlaps[best] == 0:
        return []
    hit = hits[best]
    return [Citation(best + 1, hit.source, hit.page, best_sentence(hit.text, answer), inferred=True)]
