"""Do the sources answer the question? A calibrated check over lexical and dense scores.

Questions the documents cannot answer often share as many words with the best passage as real ones
(SQuAD 2.0's unanswerable questions swap one entity, negate, or ask about a neighbouring fact), so
word overlap alone cannot tell them apart. The embedder's similarity between the question and the
best sentences separates them better; a small logistic model mixes both into the probability that
the best sentence answers the question. It is calibrated for one embedder family and language: other
embedders score on other scales, and there the plain overlap threshold applies instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["SupportModel", "SUPPORT_MODELS", "support_model_for", "support_features", "answer_probability"]

_NEGATION = re.compile(r"\b(not|n't|never|no|none|neither|nor)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SupportModel:
    """p(answerable) = sigmoid(bias + sum(weight * feature)); refuse below threshold."""

    embedder_family: str  # matched as a substring of the lower-cased embedder name
    language: str
    weights: dict
    bias: float
    threshold: float


# Fitted (logistic regression) on SQuAD 2.0 dev articles 1, 3, 5, 7 (Normans, Huguenot, 1973 oil
# crisis, Packet switching: 1,363 questions, 54% unanswerable, top-4 hybrid retrieval); the threshold
# refuses half of their unanswerable questions. ROC AUC 0.60 there, 0.76 on the other four articles.
SUPPORT_MODELS = [
    SupportModel("minilm", "en", {"overlap": 0.233, "negation": -0.827, "sentence_cosine": 0.314,
                                  "best_cosine": 0.59, "source_cosine": 1.447}, -1.79, 0.405),
]


def support_model_for(embedder_name: str, language: str) -> SupportModel | None:
    name = embedder_name.lower()
    for model in SUPPORT_MODELS:
        if model.embedder_family in name and model.language == language:
            return model
    return None


def support_features(question: str, ranked: list, hits: list, embedder, candidates: int = 5) -> dict:
    """Features of the best-ranked sentences (qa.ScoredSentence, best first) for answer_probability."""
    if not ranked:
        return {"overlap": 0.0, "negation": float(bool(_NEGATION.search(question))), "sentence_cosine": 0.0,
                "best_cosine": 0.0, "source_cosine": 0.0}
    top = ranked[0]
    texts = [question, top.text, hits[0].text]  # the best retrieved source, whole
    texts += [s.text for s in ranked[1:candidates]]
    vectors = embedder.embed(texts)  # unit length: inner product is cosine
    cosines = vectors[1:] @ vectors[0]
    return {
        "overlap": float(top.score),
        "negation": float(bool(_NEGATION.search(question))),
        "sentence_cosine": float(cosines[0]),
        "best_cosine": float(np.max(np.delete(cosines, 1))),
        "source_cosine": float(cosines[1]),
    }


def answer_probability(features: dict, model: SupportModel) -> float:
    z = model.bias + sum(weight * features[name] for name, weight in model.weights.items())
    return 1.0 / (1.0 + math.exp(-z))
