"""A model's size and languages come from its file's header, and an answer by extract never loads it."""

from __future__ import annotations

from ragglm import KnowledgeBase
from ragglm.engine.loading.model_card import read_model_card


def test_the_card_of_the_packaged_model_matches_the_loaded_engine(smollm2):
    card = read_model_card("smollm2")
    assert card.name == smollm2.name and card.languages == smollm2.languages
    assert abs(card.parameter_count - smollm2.parameter_count) / smollm2.parameter_count < 0.01


def test_sources_a_header_does_not_describe_have_no_card(tmp_path):
    assert read_model_card(tmp_path) is None  # a folder: its generator loads as before
    assert read_model_card(tmp_path / "missing.gguf") is None
    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    assert read_model_card(tmp_path / "bad.gguf") is None


def test_auto_mode_answers_a_small_model_by_extract_without_loading_it(embedder, manuals):
    knowledge_base = KnowledgeBase(embedder=embedder, model="smollm2", top_k=2)
    knowledge_base.add(manuals)
    answer = knowledge_base.ask("How long does the filter cartridge last?")
    assert "under a billion parameters" in answer.plan.reason and answer.model == "smollm2"
    assert knowledge_base._generator is None  # the model was never loaded
