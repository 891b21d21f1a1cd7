"""The calibrated answerability check, with the packaged MiniLM embedder."""

import pytest

from ragglm.documents import Chunk, Hit
from ragglm.pipelines.answerability import (
    SupportModel,
    answer_probability,
    support_features,
    support_model_for,
)
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.extract import rank_sentences
from ragglm.pipelines.prompts import NOT_FOUND
from ragglm.pipelines.qa import answer_question

MANUAL = ("The AquaPure W3 filter cartridge lasts six months. Replace it when the indicator turns red. "
          "Error code E2 means a leak in the inlet hose. The pump runs at three bar.")


def _hits() -> list[Hit]:
    return [Hit(Chunk(MANUAL, "aquapure.md", None, 0, len(MANUAL)), 1.0)]


@pytest.fixture(scope="module")
def manuals_index(manuals):
    from ragglm.knowledge_base import KnowledgeBase

    knowledge_base = KnowledgeBase()
    knowledge_base.add(manuals)
    return knowledge_base


@pytest.mark.parametrize("question, answered", [
    ("How long does the filter cartridge last?", "12 months"),
    ("What does error code E2 mean?", "leak"),
    ("How many devices can connect at once?", "128"),
    ("How do I replace the cartridge?", "quarter turn"),
])
def test_plain_manual_questions_are_answered(manuals_index, question, answered):
    hits = manuals_index.search(question, 4)
    answer = answer_question(question, hits, None, "en", config=AnswerConfig(),
                             embedder=manuals_index.store.embedder)
    assert answered in answer.text and answer.citations, answer.plan
    assert answer.plan.answerable_p >= support_model_for(manuals_index.store.embedder.name, "en").threshold


@pytest.mark.parametrize("question", [
    "What does error code E7 mean?",  # a SQuAD 2.0-style swap: the manual lists E1 to E3
    "Which football club won the 1998 championship final?",
])
def test_questions_the_manuals_do_not_answer_are_refused(manuals_index, question):
    hits = manuals_index.search(question, 4)
    answer = answer_question(question, hits, None, "en", config=AnswerConfig(),
                             embedder=manuals_index.store.embedder)
    assert answer.text == NOT_FOUND["en"] and answer.citations == []


def test_models_are_calibrated_for_minilm_in_english_and_chinese_only():
    assert support_model_for("all-MiniLM-L6-v2", "en") is not None
    assert support_model_for("all-MiniLM-L6-v2", "zh").language == "zh"
    assert support_model_for("BAAI/bge-small-zh-v1.5", "en") is None
    assert support_model_for("BAAI/bge-small-zh-v1.5", "zh") is None


@pytest.mark.parametrize("question, answered", [
    ("门锁最多可以保存多少个指纹？", "100"),
    ("连续输错密码几次后门锁会锁定？", "5 次"),
])
def test_chinese_questions_the_manual_answers_are_kept(manuals_index, question, answered):
    answer = manuals_index.ask(question, mode="extractive")
    assert answered in answer.text and answer.citations, answer.plan
    assert answer.citations[0].source.endswith("smartlock-s2-guide.md")
    # the Chinese model decided, not the overlap threshold
    assert answer.plan.answerable_p >= support_model_for(manuals_index.store.embedder.name, "zh").threshold


@pytest.mark.parametrize("question", [
    "门锁的最大发射功率是多少dBm？",  # the guide never gives a radio power
    "人脸识别最多能保存多少张人脸？",  # it stores fingerprints, codes and cards, no faces
])
def test_chinese_questions_the_manual_does_not_answer_are_refused(manuals_index, question):
    answer = manuals_index.ask(question, mode="extractive")
    assert answer.text == NOT_FOUND["zh"] and answer.citations == []
    assert answer.plan.answerable_p is not None and answer.plan.refused


def test_chinese_names_numbers_and_answer_kinds(embedder):
    text = "门锁使用 4 节 AA 碱性电池供电。门锁主体保修 3 年，电子部件保修 2 年。"
    hits = [Hit(Chunk(text, "lock.md", None, 0, len(text)), 1.0)]

    def features(question):
        return support_features(question, rank_sentences(question, hits, language="zh"), hits, embedder)

    assert features("门锁的最大发射功率是多少dBm？")["missing_names"] == 1.0
    battery = features("门锁使用几节 AA 电池？")
    assert battery["missing_names"] == 0.0 and battery["kind_missing"] == 0.0
    assert features("哪些门锁不是用电池供电的？")["negation"] == 1.0
    assert 0.0 < battery["char_coverage"] <= 1.0
    plain = "门锁支持指纹和密码开锁。"
    hits = [Hit(Chunk(plain, "lock.md", None, 0, len(plain)), 1.0)]
    assert features("门锁支持多少种开锁方式？")["kind_missing"] == 1.0  # an amount asked, none given


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
    kept = answer_question("How long does the filter cartridge last?", hits, None, "en", embedder=embedder,
                           config=calibrated)
    assert kept.text.startswith("Extract from the documents:") and "six months" in kept.text
    assert kept.plan.answerable_p >= support_model_for(embedder.name, "en").threshold
    refused = answer_question("Which football club won the cup final in the pump league?", hits, None, "en",
                              embedder=embedder, config=calibrated)
    assert refused.text == NOT_FOUND["en"] and refused.citations == []
    assert refused.plan.answerable_p < support_model_for(embedder.name, "en").threshold
    plain = answer_question("Which football club won the cup final in the pump league?", hits, None, "en",
                            embedder=embedder, config=AnswerConfig(use_support_model=False))
    assert plain.plan.answerable_p is None  # switched off, the overlap threshold decides


def test_features_read_the_window_around_the_best_sentence_not_the_whole_chunk(embedder):
    filler = " ".join(f"Chapter {n} of the guide covers the garden shed, the bicycle rack and the patio." for n in range(12))
    short = _hits()
    long = [Hit(Chunk(MANUAL + " " + filler, "aquapure.md", None, 0, len(MANUAL) + 1 + len(filler)), 1.0)]
    asked = "How long does the filter cartridge last?"
    features = [support_features(asked, rank_sentences(asked, hits), hits, embedder) for hits in (short, long)]
    assert features[0]["window_cosine"] == pytest.approx(features[1]["window_cosine"], abs=1e-5)
    assert features[0]["sentence_cosine"] == pytest.approx(features[1]["sentence_cosine"], abs=1e-5)


def test_names_numbers_and_answer_kinds_missing_from_the_window(embedder):
    hits = _hits()
    swapped = "What does error code E7 mean?"
    features = support_features(swapped, rank_sentences(swapped, hits), hits, embedder)
    assert features["missing_names"] == 1.0 and features["missing_names_anywhere"] == 1.0
    kept = "What does error code E2 mean?"
    assert support_features(kept, rank_sentences(kept, hits), hits, embedder)["missing_names"] == 0.0
    when = "When was the inlet hose replaced?"
    for text, missing in [("The technician replaced the inlet hose and tested the pump.", 1.0),
                          ("The technician replaced the inlet hose in March and tested the pump.", 0.0)]:
        hit = [Hit(Chunk(text, "log.md", None, 0, len(text)), 1.0)]
        assert support_features(when, rank_sentences(when, hit), hit, embedder)["kind_missing"] == missing
    long = "How long does the filter cartridge last?"
    long_features = support_features(long, rank_sentences(long, hits), hits, embedder)
    assert long_features["kind_missing"] == 0.0  # "six months" is an amount
    assert long_features["coverage"] == pytest.approx(3 / 4)  # filter, cartridge, last; not "long"
