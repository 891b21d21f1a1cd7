"""Do the sources answer the question? A calibrated check over lexical and dense scores.

Questions the documents cannot answer often share as many words with the best passage as real ones
(SQuAD 2.0's unanswerable questions swap one entity, negate, or ask about a neighbouring fact), so
word overlap alone cannot tell them apart. A small logistic model mixes signals that do: the
embedder's similarity between the question and its best-matching sentences, the question's words,
names and numbers that the passage around the best sentence lacks, and whether that passage holds
the kind of thing the question asks for (a date for "when", a number for "how many"). Every feature
looks at sentences, never at whole chunks, so long multi-topic chunks (a manual's page) score like
short paragraphs. Each model is calibrated for one embedder family and language (MiniLM in English and in
Chinese): other embedders score on other scales, and there the plain overlap threshold applies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ragglm.pipelines.citations import content_words, stem
from ragglm.pipelines.units import answer_units
from ragglm.text.language import detect_language, is_cjk

__all__ = ["SupportModel", "SUPPORT_MODELS", "support_model_for", "support_features", "answer_probability",
           "sentence_window", "FEATURES"]

_NEGATION = re.compile(r"\b(not|n't|never|no|none|neither|nor)\b", re.IGNORECASE)
_NAME = re.compile(r"\b[A-Z][\w'’-]*|\b\w*\d\w*")  # capitalised words and anything holding a digit
_NUMBER = re.compile(r"\d+")
# What a question asks for, and what a sentence answering it must hold.
_ANSWER_KINDS = [
    (re.compile(r"\bwhen\b|what year|what century|what decade|which year", re.I),
     re.compile(r"\d|century|centuries|decade|\b(january|february|march|april|may|june|july|august|september|"
                r"october|november|december|spring|summer|autumn|winter|today|yesterday|daily|weekly|monthly|"
                r"year|month|week|day|hour|minute|after|before|during|until)\b", re.I)),
    (re.compile(r"how many|how much|what percentage|how long|how often|how old|how far|how large|how big", re.I),
     re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
                r"dozen|hundred|thousand|million|billion|half|once|twice|several|few|many|every|each)\b", re.I)),
]

# Chinese has no capitals and no spaces: its names are Latin words, numbers, 《titles》 and quoted terms.
_NEGATION_ZH = re.compile(r"不是|不能|不会|不可|不属于|不包括|没有|并非|未|除了")
_NAME_ZH = re.compile(r"[A-Za-z0-9][\w.+-]*|《[^》]+》|“[^”]+”|「[^」]+」")
# Question words: they name what is asked, not what the passage must share with the question.
_QUESTION_ZH = re.compile(r"为什么|为何|什么时候|什么|多少|哪一|哪些|哪个|哪里|哪儿|哪|谁|几|怎么样|怎么|怎样|如何|是否|请问|吗|呢")
_ANSWER_KINDS_ZH = [
    (re.compile(r"什么时候|何时|哪一?年|哪个年代|哪天|几月|几号|日期|什么时间"),
     re.compile(r"\d|[年月日]|世纪|时期|年代|朝|春|夏|秋|冬|之前|之后|期间")),
    (re.compile(r"多少|几[个名位次种条座年天岁件人只台分秒小周月度倍]|多[大高长重远久宽深]"),
     re.compile(r"\d|[一二三四五六七八九十百千万亿两半双]|[%％]")),
    (re.compile(r"为什么|为何|原因"), re.compile(r"因为|由于|因此|所以|导致|原因|为了|以免|以防")),
]

FEATURES = ("overlap", "negation", "sentence_cosine", "window_cosine", "best_cosine", "coverage",
            "missing_names", "missing_names_anywhere", "kind_missing", "char_coverage")


@dataclass(frozen=True)
class SupportModel:
    """p(answerable) = sigmoid(bias + sum(weight * feature)); refuse below threshold."""

    embedder_family: str  # matched as a substring of the lower-cased embedder name
    language: str
    weights: dict
    bias: float
    threshold: float


# Fitted (L2-penalised logistic regression, benchmarks/answerability.py --fit) on SQuAD 2.0 dev
# articles 1, 3, 5, 7 (Normans, Huguenot, 1973 oil crisis, Packet switching: 1,260 questions, top-4
# hybrid retrieval); the threshold refuses 49% of their unanswerable questions. ROC AUC 0.61 there and
# 0.76 on articles 2, 4, 6, 8, where extracts gated by it hold the answer for 75.8% of answerable
# questions, cite correctly 95.1%, refuse 54.4% of unanswerable ones and 18.4% of answerable ones
# (all eight: 67.7%, 91.6%, 51.7%, 24.3%). Of 18 plain questions about the example manuals it refuses
# one ("How much free space is needed above the unit?", p = 0.398), and all 5 they do not answer.
# window_cosine is computed but unused: with it the manual questions scored lower at no gain.
SUPPORT_MODELS = [
    SupportModel("minilm", "en", {"overlap": 0.076, "negation": -0.873, "sentence_cosine": 0.652,
                                  "best_cosine": 1.37, "coverage": -0.128, "missing_names": -0.583,
                                  "missing_names_anywhere": 0.218, "kind_missing": -1.21}, -1.376, 0.405),
    # Chinese (benchmarks/answerability.py --zh --fit): MiniLM barely reads Chinese, so the word-pair
    # and character coverage carry it. Unanswerable pairs are made from CMRC 2018 trial (the question
    # against its passage with the answer's sentences cut out, or against the other passages) and
    # DuReader (the other questions' documents, its answer document less the answer paragraph).
    # Fitted on even-numbered passages and questions (1,365 pairs); the threshold refuses 9% of their
    # answerable ones. On the odd-numbered (1,319 pairs): ROC AUC 0.90, 72.5% of unanswerable refused
    # (43.1% of cut passages, 87.2% of other passages), 9.1% of answerable. The Chinese example
    # manual: all 12 plain questions kept (lowest p = 0.384), 7 of 8 it does not answer refused.
    SupportModel("minilm", "zh", {"overlap": 1.901, "negation": 0.342, "sentence_cosine": 1.687,
                                  "best_cosine": 0.733, "coverage": 3.281, "char_coverage": 2.726,
                                  "missing_names": 0.145, "missing_names_anywhere": -0.791,
                                  "kind_missing": 0.017}, -6.135, 0.265),
]


def support_model_for(embedder_name: str, language: str) -> SupportModel | None:
    name = embedder_name.lower()
    for model in SUPPORT_MODELS:
        if model.embedder_family in name and model.language == language:
            return model
    return None


def support_features(question: str, ranked: list, hits: list, embedder, candidates: int = 5,
                     language: str | None = None) -> dict:
    """Features of the best-ranked sentences (qa.ScoredSentence, best first) for answer_probability.

    overlap: the best sentence's match score (qa.rank_sentences); negation: the question negates;
    sentence/window/best_cosine: the embedder's cosine between the question and the best sentence,
    that sentence with its neighbours, and the best of the top candidates; coverage: share of the
    question's content words found in that window (char_coverage: of its Chinese characters);
    missing_names: share of the question's names and numbers absent from the window
    (missing_names_anywhere: from every source given); kind_missing: the question asks for a date,
    an amount (or, in Chinese, a cause) and the window holds none. language: of the question
    (detected when None); it picks the cues for negation, names and answer kinds.
    """
    chinese = (language or detect_language(question)) == "zh"
    negation = float(bool((_NEGATION_ZH if chinese else _NEGATION).search(question)))
    if not ranked:
        return {name: 0.0 for name in FEATURES} | {"negation": negation, "missing_names": 1.0,
                                                    "missing_names_anywhere": 1.0, "kind_missing": 1.0}
    top = ranked[0]
    window = sentence_window(hits[top.number - 1].text, top.index)
    texts = [question, top.text, window] + [s.text for s in ranked[1:candidates]]
    vectors = embedder.embed(texts)  # unit length: inner product is cosine
    cosines = vectors[1:] @ vectors[0]
    asked = _terms(_QUESTION_ZH.sub(" ", question) if chinese else question)
    missing = _missing_names_zh if chinese else _missing_names
    kinds = _ANSWER_KINDS_ZH if chinese else _ANSWER_KINDS
    return {
        "overlap": float(min(top.score, 1.0)),
        "negation": negation,
        "sentence_cosine": float(cosines[0]),
        "window_cosine": float(cosines[1]),
        "best_cosine": float(np.max(np.delete(cosines, 1))),
        "coverage": len(asked & _terms(window)) / len(asked) if asked else 0.0,
        "missing_names": missing(question, window),
        "missing_names_anywhere": missing(question, " ".join(hit.text for hit in hits)),
        "kind_missing": float(any(asks.search(question) and not holds.search(window) for asks, holds in kinds)),
        "char_coverage": _char_coverage(question, window),
    }


def answer_probability(features: dict, model: SupportModel) -> float:
    z = model.bias + sum(weight * features[name] for name, weight in model.weights.items())
    return 1.0 / (1.0 + math.exp(-z))


def sentence_window(text: str, index: int) -> str:
    """The sentence at index in text with its neighbours: a question often names its subject in one
    sentence and asks about the next."""
    spans = answer_units(text)
    if not spans:
        return text
    index = min(max(index, 0), len(spans) - 1)
    return text[spans[max(0, index - 1)][0]:spans[min(len(spans) - 1, index + 1)][1]]


def _terms(text: str) -> set[str]:
    """Content words folded to one form each (content_words holds a word and its stem)."""
    return {stem(w) if w.isascii() else w for w in content_words(text)}


def _missing_names(question: str, text: str) -> float:
    """Share of the question's names and numbers (past its first word) that text does not hold."""
    first = question.split(maxsplit=1)
    rest = first[1] if len(first) > 1 else ""
    names = {m.group(0).lower().strip("'’-") for m in _NAME.finditer(rest)}
    names = {n for n in names if n and n not in _QUESTION_WORDS}
    if not names:
        return 0.0
    lowered = text.lower()
    return sum(not re.search(r"(?<!\w)" + re.escape(n), lowered) for n in names) / len(names)


def _missing_names_zh(question: str, text: str) -> float:
    """Share of a Chinese question's Latin words, numbers, titles and quoted terms that text lacks."""
    names = {m.group(0).lower().strip("《》“”「」.-") for m in _NAME_ZH.finditer(question)}
    names.discard("")
    if not names:
        return 0.0
    lowered = text.lower()
    return sum(n not in lowered for n in names) / len(names)


def _char_coverage(question: str, text: str) -> float:
    """Share of the question's Chinese characters (question words left out) that text holds: Chinese
    questions rephrase a passage's words by a character, which word pairs miss."""
    chars = {c for c in _QUESTION_ZH.sub("", question) if is_cjk(c) and c not in _CJK_FILLER}
    return sum(c in text for c in chars) / len(chars) if chars else 0.0


# Characters so common that sharing them says nothing.
_CJK_FILLER = set("的了是在有和与及或也都就而之其这那个一不为以")
_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "i"}
