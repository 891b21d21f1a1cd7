"""Extractive answers: rank the sources' sentences against the question and quote the best, cited."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ragglm.documents import Answer, Citation, Hit
from ragglm.pipelines.citations import content_words
from ragglm.pipelines.prompts import EXTRACT_NOTE, NOT_FOUND
from ragglm.pipelines.units import answer_units, table_header
from ragglm.text.language import detect_language, is_cjk
from ragglm.text.stopwords import STOP_WORDS

__all__ = ["ScoredSentence", "rank_sentences", "extractive_answer"]


@dataclass
class ScoredSentence:
    score: float  # idf-weighted share of the question's words found in the sentence (0..1)
    number: int  # 1-based source number
    text: str
    index: int = 0  # position among its source's sentences
    span: tuple[int, int] = (0, 0)  # characters of its source's text


# Words the question shares with a sentence's neighbours count at this weight: a question often names
# its subject in one sentence and asks about the next. Chinese passages carry the subject further
# (measured on CMRC 2018 even-numbered passages: 0.7 > 0.5 > 0.3; SQuAD 2.0 prefers 0.5).
CONTEXT_WEIGHT = {"en": 0.5, "zh": 0.7}
# A sentence holding what the question asks for (a date for "when", a number for "how many", a
# cause for "why") ranks this much higher; measured +0.5 to +1 point of containment on both sets.
ANSWER_TYPE_BONUS = 0.1
_ANSWER_TYPES = [
    (re.compile(r"什么时候|何时|哪一?年|哪个年代|日期|\bwhen\b|what year|what century|what decade", re.I),
     re.compile(r"\d|[年月日]|世纪|century|centuries|decade|\b(january|february|march|april|may|june|july|"
                r"august|september|october|november|december)\b", re.I)),
    (re.compile(r"多少|几[个名位次种条座年]|多[大高长重远久]|how many|how much|how long|what percentage", re.I),
     re.compile(r"\d|[一二三四五六七八九十百千万亿两]|\b(one|two|three|four|five|six|seven|eight|nine|ten|"
                r"dozen|hundred|thousand|million|billion)\b", re.I)),
    (re.compile(r"为什么|为何|原因|\bwhy\b", re.I), re.compile(r"因为|由于|因此|所以|导致|原因|because|due to|since", re.I)),
]


def rank_sentences(question: str, hits: list[Hit], context_weight: float | None = None,
                   language: str | None = None) -> list[ScoredSentence]:
    """Every sentence of the hits, best match to the question first; rarer words weigh more."""
    if context_weight is None:
        context_weight = CONTEXT_WEIGHT.get(language or detect_language(question), 0.5)
    wanted = _match_terms(question)
    sentences = []
    headings: set[tuple[int, int]] = set()  # (source, unit): context for their neighbours, never quoted alone
    for number, hit in enumerate(hits, 1):
        spans = answer_units(hit.text)
        words = [_match_terms(hit.text[start:end]) for start, end in spans]
        for j, (start, end) in enumerate(spans):
            around = (words[j - 1] if j > 0 else set()) | (words[j + 1] if j + 1 < len(words) else set())
            sentences.append((number, j, (start, end), hit.text[start:end], words[j], around))
        headings.update((number, j) for j, (start, end) in enumerate(spans)
                        if _is_heading(hit.text[start:end], hit.chunk.heading))
    if not wanted or not sentences:
        return []
    frequency = {w: sum(w in words for *_, words, _ in sentences) for w in wanted}
    weight = {w: math.log(1 + (len(sentences) + 1) / (frequency[w] + 0.5)) for w in wanted}
    total = sum(weight.values())
    kinds = [answer for asked, answer in _ANSWER_TYPES if asked.search(question)]
    scored = []
    for number, j, span, text, words, around in sentences:
        if (number, j) in headings:
            continue
        own = sum(weight[w] for w in wanted & words)
        nearby = sum(weight[w] for w in (wanted & around) - words)
        score = (own + context_weight * nearby) / total - 0.01 * (number - 1)
        if kinds and own and all(kind.search(text) for kind in kinds):
            score += ANSWER_TYPE_BONUS
        scored.append(ScoredSentence(score, number, text, j, span))
    scored.sort(key=lambda s: -s.score)
    return scored


def _is_heading(unit: str, chunk_heading: str | None) -> bool:
    """A Markdown heading line, or the heading the chunker carried into the chunk's text."""
    line = unit.strip()
    return "\n" not in line and (line.startswith("#") or (chunk_heading is not None and line == chunk_heading.strip()))


def _match_terms(text: str) -> set[str]:
    """Content words, plus single Chinese characters: questions often rephrase a word by one character."""
    return content_words(text) | {c for c in text if is_cjk(c) and c not in _CJK_STOP}


_CJK_STOP = {w for w in STOP_WORDS if len(w) == 1 and is_cjk(w)}


# An extract says what the documents say in about a sentence or two: more is read less and leads less
# often with the answer (measured on the example manuals and SQuAD/CMRC passages).
EXTRACT_CHARS = 160


def extractive_answer(question: str, hits: list[Hit], language: str | None = None,
                      max_sentences: int = 3, min_relevance: float = 0.0,
                      ranked: list[ScoredSentence] | None = None) -> Answer:
    """The sentence that best matches the question first, then close seconds from the same document
    while the extract stays short; each passage cited, citations numbered from [1] in order."""
    language = language or detect_language(question)
    ranked = rank_sentences(question, hits, language=language) if ranked is None else ranked
    if not ranked or ranked[0].score <= max(0.0, min_relevance):
        return Answer(NOT_FOUND[language], [], "extractive", "", sources=hits)
    best = ranked[0]
    picked, length = [best], len(best.text)
    # a table row answers alone: other rows of the table are noise beside it
    seconds = [] if table_header(hits[best.number - 1].text, best.span) else ranked[1:]
    for s in seconds:
        if len(picked) == max_sentences or s.score < 0.5 * best.score:
            break
        same_document = hits[s.number - 1].source == hits[best.number - 1].source
        if same_document and all(s.text != p.text for p in picked) and length + len(s.text) <= EXTRACT_CHARS:
            picked.append(s)  # overlapping chunks repeat their edge sentences: a repeat is skipped
            length += len(s.text)
    passages = _passages(picked, hits, best)
    passages.sort(key=lambda passage: passage[2] != best.span or passage[0] != best.number)
    order = list(dict.fromkeys(number for number, _, _ in passages))  # source numbers, first cited first
    lines, citations = [], []
    for number, quoted, _ in passages:
        lines.append(f"{quoted} [{order.index(number) + 1}]")
        if len(citations) < order.index(number) + 1:
            hit = hits[number - 1]
            citations.append(Citation(order.index(number) + 1, hit.source, hit.page, quoted))
    sources = [hits[n - 1] for n in order] + [hit for n, hit in enumerate(hits, 1) if n not in order]
    return Answer(EXTRACT_NOTE[language] + "\n" + "\n".join(lines), citations, "extractive", "", sources=sources)


def _passages(picked: list[ScoredSentence], hits: list[Hit], best: ScoredSentence
              ) -> list[tuple[int, str, tuple[int, int]]]:
    """(source number, text, span of the first sentence) in reading order; a sentence joins the one
    before it in its source into one passage, so that an answer running over a sentence break
    ("Andrew W. Mellon") is quoted whole, on one line, except the best, which starts its own; a table
    row comes on a second line under its table's header."""
    passages: list[tuple[int, str, tuple[int, int]]] = []
    previous = None
    for s in sorted(picked, key=lambda s: (s.number, s.index)):
        text = hits[s.number - 1].text
        header = table_header(text, s.span)
        if header:
            passages.append((s.number, _one_line(header) + "\n" + _one_line(s.text), s.span))
        elif previous is not None and previous.number == s.number and previous.index == s.index - 1 \
                and s is not best and not passages[-1][1].count("\n"):
            number, quoted, first = passages[-1]
            passages[-1] = (number, _one_line(quoted + text[previous.span[1]:s.span[1]]), first)
        else:
            passages.append((s.number, _one_line(s.text), s.span))
        previous = s
    return passages


def _one_line(text: str) -> str:
    return " ".join(text.split())
