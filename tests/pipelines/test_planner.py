"""The planner's decision on real folders, with the packaged SmolLM2 and its measured prefill rate."""

from pathlib import Path

import pytest

from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.answering import AnswerPipeline
from ragglm.pipelines.planner import PlannerConfig, plan_context, prefill_rate


def test_plan_numbers_add_up():
    plan = plan_context(3000, 20, 8192, prefill_tok_s=250.0, cached=1000,
                        config=PlannerConfig(answer_tokens=160, prompt_overhead_tokens=96, time_budget_s=10))
    assert plan.budget_tokens == 8192 - 20 - 160 - 96
    assert plan.estimated_prefill_s == pytest.approx((3000 - 1000) / 250.0)
    assert plan.mode == "stuff"
    assert plan_context(9000, 20, 8192, 250.0).mode == "retrieve"  # does not fit, cached or not
    assert plan_context(9000, 20, 8192, 250.0, cached=9000).mode == "retrieve"
    assert plan_context(5000, 20, 8192, 250.0, config=PlannerConfig(time_budget_s=10)).mode == "retrieve"
    assert plan_context(5000, 20, 8192, 250.0, cached=5000, config=PlannerConfig(time_budget_s=10)).mode == "stuff"
    assert plan_context(100, 20, 8192, 250.0, config=PlannerConfig(), forced="retrieve").mode == "retrieve"


class PrefixCachingEngine:
    """The packaged engine, as seen by a generator whose prefix cache already holds this many tokens."""

    def __init__(self, engine, cached: int):
        self._engine = engine
        self.cached = cached

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def cached_prompt_tokens(self, messages: list[dict]) -> int:
        return min(self.cached, len(self._engine.chat_ids(messages)))


def choose_context(kb: KnowledgeBase, question: str, generator, mode: str = "auto", planner=None):
    return AnswerPipeline(kb.store, lambda: generator).choose_context(question, generator, mode, planner)


def _folder(tmp_path: Path, name: str, paragraphs: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(paragraphs):
        (folder / f"part{i}.md").write_text(
            f"# Pump model P{i}\n\nThe pump P{i} delivers {10 + i} litres per minute at {i % 7 + 1} bar. "
            f"Its seal kit S{i} must be replaced every {i % 11 + 2} months; order it from the service desk.\n",
            encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner")
    small = KnowledgeBase()
    small.add(_folder(root, "small", 2))
    large = KnowledgeBase()
    large.add(_folder(root, "large", 30))
    return small, large


@pytest.mark.slow
def test_stuff_small_retrieve_large_stuff_again_when_cached(folders, smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGGLM_CACHE_DIR", str(tmp_path))
    small, large = folders
    question = "How often must the seal kit of pump P3 be replaced?"
    # The session engine's own prefix cache may hold the shared system prompt from earlier tests.
    cold = PrefixCachingEngine(smollm2, cached=0)
    rate = prefill_rate(smollm2)
    small_plan, small_hits = choose_context(small, question, cold, planner=PlannerConfig(time_budget_s=1e9))
    large_probe, _ = choose_context(large, question, cold, planner=PlannerConfig(time_budget_s=1e9))
    assert small_plan.document_tokens < large_probe.document_tokens < large_probe.budget_tokens
    # A time budget between the two documents' prefill times, on this machine's measured rate.
    budget = (small_plan.document_tokens + large_probe.document_tokens) / 2 / rate
    planner = PlannerConfig(time_budget_s=budget)

    small_plan, small_hits = choose_context(small, question, cold, planner=planner)
    assert small_plan.mode == "stuff" and len(small_hits) == 2
    assert small_plan.estimated_prefill_s == pytest.approx(small_plan.document_tokens / rate, rel=0.01)

    large_plan, large_hits = choose_context(large, question, cold, planner=planner)
    assert large_plan.mode == "retrieve" and large_plan.cached_tokens == 0
    assert 0 < len(large_hits) <= planner.retrieve_k
    assert any("P3" in hit.text for hit in large_hits)

    cached_engine = PrefixCachingEngine(smollm2, cached=10**6)
    cached_plan, cached_hits = choose_context(large, question, cached_engine, planner=planner)
    assert cached_plan.mode == "stuff"
    assert cached_plan.cached_tokens == cached_plan.document_tokens
    assert cached_plan.estimated_prefill_s == 0
    assert len(cached_hits) == 30


@pytest.mark.slow
def test_forced_stuff_does_not_overflow_the_window(folders, smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGGLM_CACHE_DIR", str(tmp_path))
    _, large = folders
    planner = PlannerConfig(answer_tokens=smollm2.args.max_seq_len - 200)  # leaves too little room
    plan, hits = choose_context(large, "What does pump P4 deliver?", smollm2, mode="stuff", planner=planner)
    assert plan.mode == "retrieve" and "do not fit" in plan.reason
