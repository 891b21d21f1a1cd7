"""Prompt, generate, check and cite: the answering step behind KnowledgeBase.ask."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ragglm.documents import Answer, Citation, Hit
from ragglm.pipelines.answerability import (
    answer_probability,
    sentence_window,
    support_features,
    support_model_for,
)
from ragglm.pipelines.citations import (
    best_sentence,
    content_words,
    parse_citation_numbers,
    resolve_citations,
    strip_citation_marks,
    support,
)
from ragglm.pipelines.prompts import EXTRACT_NOTE, NOT_FOUND, build_messages
from ragglm.text.language import detect_language, is_cjk
from ragglm.text.sentences import split_sentences

__all__ = ["AnswerConfig", "answer_question", "extractive_answer", "rank_sentences", "is_refusal_text"]


@dataclass
class AnswerConfig:
    max_new_tokens: int = 160
    temperature: float = 0.0
    # Weighted share of the question's words that the best source sentence must hold; below it the
    # documents are taken not to answer, and nothing is generated. Chinese matches single characters
    # too, which lowers what a real answer scores; tuned on SQuAD 2.0 and CMRC 2018 dev questions.
    min_relevance: dict = field(default_factory=lambda: {"en": 0.3, "zh": 0.15})
    # Share of a generated answer's own words that must occur in the sources; below it the answer is
    # replaced by a cited extract rather than shown unsupported.
    min_support: float = 0.75
    # A small model given a long context guesses more: it sees at most this many sources.
    generate_sources: int = 2
    extract_sentences: int = 3
    first_line_only: bool = True  # small models ramble on after the answer
    # Decide refusals with the calibrated support model where one fits the embedder and language
    # (answerability.py: its features read sentences, not whole chunks, so manuals score like the
    # Wikipedia paragraphs it was fitted on); elsewhere min_relevance decides.
    use_support_model: bool = True
    # In auto mode a local generator under a billion parameters answers by cited extract: on SQuAD 2.0
    # SmolLM2-135M's generated answers hold the gold answer less often than the extract does.
    small_model_extracts: bool = True


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
    (re.compile(r"多少|几[个名位次种条座年]|多[大高长重远]|how many|how much|what percentage", re.I),
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
    for number, hit in enumerate(hits, 1):
        spans = split_sentences(hit.text)
        words = [_match_terms(hit.text[start:end]) for start, end in spans]
        for j, (start, end) in enumerate(spans):
            around = (words[j - 1] if j > 0 else set()) | (words[j + 1] if j + 1 < len(words) else set())
            sentences.append((number, j, (start, end), hit.text[start:end], words[j], around))
    if not wanted or not sentences:
        return []
    frequency = {w: sum(w in words for *_, words, _ in sentences) for w in wanted}
    weight = {w: math.log(1 + (len(sentences) + 1) / (frequency[w] + 0.5)) for w in wanted}
    total = sum(weight.values())
    kinds = [answer for asked, answer in _ANSWER_TYPES if asked.search(question)]
    scored = []
    for number, j, span, text, words, around in sentences:
        own = sum(weight[w] for w in wanted & words)
        nearby = sum(weight[w] for w in (wanted & around) - words)
        score = (own + context_weight * nearby) / total - 0.01 * (number - 1)
        if kinds and own and all(kind.search(text) for kind in kinds):
            score += ANSWER_TYPE_BONUS
        scored.append(ScoredSentence(score, number, text, j, span))
    scored.sort(key=lambda s: -s.score)
    return scored


def _match_terms(text: str) -> set[str]:
    """Content words, plus single Chinese characters: questions often rephrase a word by one character."""
    return content_words(text) | {c for c in text if is_cjk(c) and c not in _CJK_STOP}


_CJK_STOP = set("的了是在和与或及我你他它这那吗呢什么如何怎么多少哪谁为有被把个中也就都而之其")


def extractive_answer(question: str, hits: list[Hit], language: str | None = None,
                      max_sentences: int = 3, min_relevance: float = 0.0,
                      ranked: list[ScoredSentence] | None = None) -> Answer:
    """The sentences that best match the question, each cited; the refusal phrase when none does."""
    language = language or detect_language(question)
    ranked = rank_sentences(question, hits, language=language) if ranked is None else ranked
    if not ranked or ranked[0].score <= max(0.0, min_relevance):
        return Answer(NOT_FOUND[language], [], "extractive", "", sources=hits)
    picked = [ranked[0]]
    for s in ranked[1:]:
        if len(picked) == max_sentences or s.score < 0.5 * ranked[0].score:
            break
        if all(s.text != p.text for p in picked):  # overlapping chunks repeat their edge sentences
            picked.append(s)
    lines, citations = [], []
    for number, text in _passages(picked, hits):
        lines.append(" ".join(text.split()) + f" [{number}]")
        if all(c.id != number for c in citations):
            hit = hits[number - 1]
            citations.append(Citation(number, hit.source, hit.page, " ".join(text.split())))
    return Answer(EXTRACT_NOTE[language] + "\n" + "\n".join(lines), citations, "extractive", "", sources=hits)


def _passages(picked: list[ScoredSentence], hits: list[Hit]) -> list[tuple[int, str]]:
    """Picked sentences in reading order; neighbours in one source join into one passage, so that an
    answer running over a sentence break ("Andrew W. Mellon") is quoted whole."""
    passages: list[tuple[int, str]] = []
    previous = None
    for s in sorted(picked, key=lambda s: (s.number, s.index)):
        if previous is not None and previous.number == s.number and previous.index == s.index - 1:
            text = hits[s.number - 1].text
            passages[-1] = (s.number, passages[-1][1] + text[previous.span[1]:s.span[1]])
        else:
            passages.append((s.number, s.text))
        previous = s
    return passages


def is_refusal_text(text: str, language: str) -> bool:
    """The fixed phrase, or the model's own ways of saying the sources do not tell."""
    lowered = text.lower()
    if NOT_FOUND[language].lower().rstrip(".。") in lowered:
        return True
    if language == "zh":
        return any(p in text for p in ("没有找到", "没有提到", "未提及", "无法回答", "没有相关"))
    return any(p in lowered for p in ("do not contain", "does not contain", "don't contain", "not mentioned",
                                      "no information", "not provided", "cannot answer", "not specified"))


def answer_question(question: str, hits: list[Hit], engine, max_new_tokens: int = 160,
                    temperature: float = 0.0, on_text: Callable[[str], None] | None = None,
                    mode: str = "auto", config: AnswerConfig | None = None, context_mode: str = "retrieve",
                    language: str | None = None, embedder=None) -> Answer:
    """Answer from hits with the engine, checked against them; extractive where the engine cannot.

    embedder: the knowledge base's embedder; where a support model is calibrated for it and the
    question's language, it decides whether the sources answer at all (see answerability.py).
    """
    config = config or AnswerConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    started = time.perf_counter()
    language = language or detect_language(question)
    model = engine.name if engine is not None else ""
    ranked = rank_sentences(question, hits, language=language)
    checks = {"relevance": round(ranked[0].score, 3) if ranked else 0.0}
    refusal = _unanswerable(question, hits, ranked, language, config, embedder, checks)
    if mode == "extractive" or engine is None or language not in engine.languages:
        if refusal:
            answer = Answer(NOT_FOUND[language], [], "extractive", "", sources=hits)
            checks["refused"] = refusal
        else:
            answer = extractive_answer(question, hits, language, config.extract_sentences, -1.0, ranked)
        return _finish(answer, model, started, on_text, checks)
    if refusal:
        answer = Answer(NOT_FOUND[language], [], context_mode, model, sources=hits)
        checks["refused"] = refusal
        return _finish(answer, model, started, on_text, checks)

    shown = hits if context_mode == "stuff" else _best_sources(hits, ranked, config.generate_sources)
    result = _generate(engine, build_messages(question, shown, language), config, on_text)
    text = result.text.strip()
    numbers = {n: hits.index(shown[n - 1]) + 1 for n in range(1, len(shown) + 1)}
    text = _renumber(text, numbers)
    timings = {
        "ttft_s": round(result.ttft_s, 4),
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "generated_tokens": len(result.token_ids),
        "decode_tok_s": round(result.decode_tok_s, 2),
    }

    if is_refusal_text(text, language):
        if "answerable_p" not in checks:
            answer = Answer(NOT_FOUND[language], [], context_mode, model, timings, hits)
            checks["refused"] = "the model found no answer in the sources"
            return _finish(answer, model, started, None, checks)
        # The calibrated check found that the best sentences answer the question; small models may
        # refuse although the right source was retrieved, so the extract is shown rather than a refusal.
        answer = extractive_answer(question, hits, language, config.extract_sentences, -1.0, ranked)
        answer.timings = timings
        checks["fallback"] = "the model said the sources do not answer, but their best sentences match; showing an extract"
        if on_text:
            tail = "\n\n(" + checks["fallback"] + ")\n" + answer.text
            on_text(tail)
            answer.text = result.text + tail
        return _finish(answer, model, started, None, checks)

    # The answer's own words must come from the sentences that best match the question: small models
    # copy words from elsewhere in the sources (a neighbouring fact, a heading) and sound supported.
    evidence = " ".join(sentence_window(hits[s.number - 1].text, s.index) for s in ranked[:config.extract_sentences])
    checks["support"] = round(support(text, evidence, question), 3)
    restated = not _claims(text, question)
    if checks["support"] < config.min_support or restated:
        # Unsupported by the best-matching sentences, or saying nothing new: show what the documents say.
        answer = extractive_answer(question, hits, language, config.extract_sentences, -1.0, ranked)
        answer.timings = timings
        checks["fallback"] = ("the generated answer only restated the question; showing an extract" if restated
                              else "the generated answer was not supported by the sources; showing an extract")
        if on_text:
            # the generated words were already shown: the answer is all that was streamed, notice included
            tail = "\n\n(" + checks["fallback"] + ")\n" + answer.text
            on_text(tail)
            answer.text = result.text + tail
        return _finish(answer, model, started, None, checks)
    citations = resolve_citations(text, hits)
    if not citations:
        citations = _support_citation(text, hits, ranked)
    answer = Answer(text, citations, context_mode, model, timings, hits)
    return _finish(answer, model, started, None, checks)


def _unanswerable(question: str, hits: list[Hit], ranked: list[ScoredSentence], language: str,
                  config: AnswerConfig, embedder, checks: dict) -> str:
    """Why the sources do not answer the question, or "" when they may."""
    if not ranked or ranked[0].score <= 0.0:
        return "no source sentence shares a word with the question"
    calibrated = support_model_for(embedder.name, language) if embedder is not None else None
    if calibrated is not None and config.use_support_model:
        features = support_features(question, ranked, hits, embedder)
        probability = answer_probability(features, calibrated)
        checks["answerable_p"] = round(probability, 3)
        if probability < calibrated.threshold:
            return "the best source sentences do not look like an answer to the question"
        return ""
    if ranked[0].score < config.min_relevance.get(language, 0.3):
        return "no source sentence matches the question well enough"
    return ""


def _claims(text: str, question: str) -> bool:
    """Whether an answer says anything beyond the question's own words (a restatement answers nothing)."""
    return bool(content_words(strip_citation_marks(text)) - content_words(question))


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
    from ragglm.pipelines.citations import _MARK

    def fix(match):
        inner = match.group(1)
        parts = [str(numbers.get(n, 0)) for n in parse_citation_numbers(match.group(0))]
        return match.group(0).replace(inner, ", ".join(parts)) if parts else match.group(0)

    return _MARK.sub(fix, text)


def _support_citation(text: str, hits: list[Hit], ranked: list[ScoredSentence]) -> list[Citation]:
    """An answer that cites nothing: attach the source whose best sentence carries its words."""
    wanted = content_words(text)
    for sentence in ranked[:5]:
        if wanted and len(wanted & content_words(sentence.text)) / len(wanted) >= 0.5:
            hit = hits[sentence.number - 1]
            return [Citation(sentence.number, hit.source, hit.page, best_sentence(hit.text, text), inferred=True)]
    return []


def _generate(engine, messages: list[dict], config: AnswerConfig, on_text):
    """Stream the answer; with first_line_only, stop at its first line break (what follows is filler)."""
    from ragglm.engine.generate import GenerationResult

    result = GenerationResult([])
    stream = engine.chat(messages, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                         stream=True, result=result)
    text = ""
    for piece in stream:
        candidate = text + piece
        start = len(candidate) - len(candidate.lstrip())
        cut = candidate.find("\n", start) if config.first_line_only and candidate.strip() else -1
        if cut != -1:
            candidate = candidate[:cut]
        if on_text and len(candidate) > len(text):
            on_text(candidate[len(text):])
        text = candidate
        if cut != -1:
            close = getattr(stream, "close", None)
            if close:
                close()  # stops decoding: the generator is not resumed
            break
    result.text = text
    return result


def _finish(answer: Answer, model: str, started: float, on_text, checks: dict | None = None) -> Answer:
    answer.model = model
    # answers that never reached the generator still report the same timing keys
    answer.timings = {"ttft_s": 0.0, "cached_tokens": 0, **answer.timings,
                      "total_s": round(time.perf_counter() - started, 4)}
    answer.plan = {**answer.plan, **(checks or {})}
    if on_text:
        on_text(answer.text)
    return answer
