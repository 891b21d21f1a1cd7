"""The calibrated answerability check, with the packaged MiniLM embedder."""

import pytest

from ragglm.documents import Chunk, Hit
from ragglm.pipelines.answerability import (
    SupportModel,
    answer_probability,
    support_features,
    support_model_for,
)
from ragglm.pipelines.prompts import NOT_FOUND
from ragglm.pipelines.qa import AnswerConfig, answer_question, rank_sentences

MANUAL = ("The AquaPure W3 filter cartridge lasts six months. Replace it when the indicator turns red. "
          "Error code E2 means a leak in the inlet hose. The pump runs at three bar.")


def _hits() -> list[Hit]:
    return [Hit(Chunk(MANUAL, "aquapure.md", None, 0, len(MANUAL)), 1.0)]


def test_the_model_is_calibrated_for_minilm_in_english_only():
    assert support_model_for("all-MiniLM-L6-v2", "en") is not None
    assert support_model_for("BAAI/bge-small-zh-v1.5", "en") is None
    assert support_model_for("all-MiniLM-L6-v2", "zh") is None


def test_probability_is_the_logistic_of_the_weighted_features():
    model = SupportModel("x", "en", {"a": 2.0, "b": -1.0}, 0.5, 0.5)
    assert answer_probability({"a": 0.25, "b": 1.0}, model) == pytest.approx(0.5)
    assert answer_probability({"a": 1.0, "b": 0.0}, model) == pytest.approx(1 / (1 + 2.718281828 ** -2.5))


def test_an_answered_question_scores_above_one_the_manual_does_not_answer(embedder):
    hits = _hits()
    model = support_model_for(embedder.name, "en")
    asked = "How long does the filter cartridge last?"
    answered = answer_probability(support_features(asked, rank_sentences(asked, hits), hits, embedder), model)
    other = "How long does the warranty on the cartridge box not last?"
    unanswered = answer_probability(support_features(other, rank_sentences(other, hits), hits, embedder), model)
    assert answered > unanswered
    features = support_features(other, rank_sentences(other, hits), hits, embedder)
    assert features["negation"] == 1.0 and -1.0 <= features["sentence_cosine"] <= 1.0


def test_answer_question_refuses_below_the_threshold_and_extracts_above(embedder):
    hits = _hits()
    calibrated = AnswerConfig(use_support_model=True)
    kept = answer_question("How long does the filter cartridge last?", hits, None, embedder=embedder,
                           config=calibrated)
    assert kept.text.startswith("Extract from the documents:") and "six months" in kept.text
    assert kept.plan["answerable_p"] >= support_model_for(embedder.name, "en").threshold
    refused = answer_question("Which football club won the cup final in the pump league?", hits, None,
                              embedder=embedder, config=calibrated)
    assert refused.text == NOT_FOUND["en"] and refused.citations == []
    assert refused.plan["answerable_p"] < support_model_for(embedder.name, "en").threshold
    plain = answer_question("Which football club won the cup final in the pump league?", hits, None,
                            embedder=embedder)
    assert "answerable_p" not in plain.plan  # by default the overlap threshold decides
