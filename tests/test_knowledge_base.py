"""KnowledgeBase: add, search, persist and reload, skip unchanged files."""

import shutil

import pytest
from langchain_core.vectorstores import InMemoryVectorStore

from ragglm import KnowledgeBase
from ragglm.errors import IndexMismatchError
from ragglm.index.embedder import Embedder, resolve_embedder_path
from ragglm.index.langchain_store import EmbedderEmbeddings, LangChainDenseStore


def test_search_finds_the_right_page(manuals):
    kb = KnowledgeBase()
    report = kb.add(manuals)
    assert not report.errors and len(report.added) == 3
    hits = kb.search("What does error code E2 mean?", k=3)
    assert hits[0].source.endswith("aquapure-w3-manual.pdf") and hits[0].page == 4
    assert "leak" in hits[0].text
    assert hits[0].score >= hits[-1].score


def test_persisted_index_reloads_and_skips_unchanged(manuals, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(manuals, docs)
    kb = KnowledgeBase(tmp_path / "kb")
    first = kb.add(docs)
    assert first.chunks > 0 and len(first.added) == 3

    reloaded = KnowledgeBase(tmp_path / "kb")
    assert len(reloaded) == len(kb)
    query = "门锁电池可以用多久？"
    assert [h.chunk for h in reloaded.search(query, 3)] == [h.chunk for h in kb.search(query, 3)]

    (docs / "smartlock-s2-guide.md").write_text("# 门锁\n\n电池可以使用约 12 个月。", encoding="utf-8")
    second = reloaded.add(docs)
    assert second.added == [str(docs / "smartlock-s2-guide.md")]
    assert len(second.unchanged) == 2
    assert "12 个月" in reloaded.search(query, 1)[0].text


def test_add_text_cites_the_given_source():
    kb = KnowledgeBase()
    kb.add_text("The staff canteen opens at 11:30 on weekdays.", source="handbook.txt", page=7)
    hit = kb.search("When does the canteen open?", k=1)[0]
    assert (hit.source, hit.page) == ("handbook.txt", 7)
    answer = kb.ask("When does the canteen open?", mode="extractive")
    assert answer.mode == "extractive"
    assert answer.citations[0].source == "handbook.txt" and answer.citations[0].page == 7
    assert "11:30" in answer.text


def test_an_embedder_passed_in_is_the_one_the_index_is_built_and_reopened_with(tmp_path):
    packaged = resolve_embedder_path("all-MiniLM-L6-v2")
    kb = KnowledgeBase(tmp_path / "kb", embedder=Embedder(packaged))
    kb.add_text("The staff canteen opens at 11:30 on weekdays.", source="handbook.txt")
    with pytest.raises(IndexMismatchError, match="canteen|embedder"):
        KnowledgeBase(tmp_path / "kb")  # the default embedder's name differs from the folder's
    reopened = KnowledgeBase(tmp_path / "kb", embedder=Embedder(packaged))
    assert reopened.search("When does the canteen open?", 1)[0].source == "handbook.txt"


class InterruptibleEmbedder(Embedder):
    """The packaged embedder; once armed, embedding raises as if the user pressed Ctrl-C."""

    armed = False

    def embed(self, texts, *args, **kwargs):
        if self.armed and texts:
            raise KeyboardInterrupt
        return super().embed(texts, *args, **kwargs)


class CountingReranker:
    """Keeps the fused order; counts the searches it was asked to rerank."""

    calls = 0

    def rerank(self, query, hits, k):
        self.calls += 1
        return hits[:k]


def test_a_failed_add_keeps_the_dense_store_and_reranker(tmp_path):
    embedder = InterruptibleEmbedder()
    dense_store = LangChainDenseStore(InMemoryVectorStore(EmbedderEmbeddings(embedder)))
    reranker = CountingReranker()
    kb = KnowledgeBase(tmp_path / "kb", embedder=embedder, dense_store=dense_store, reranker=reranker)
    kb.add_text("The staff canteen opens at 11:30 on weekdays.", source="handbook.txt")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "lift.md").write_text("# Lift\n\nThe lift is serviced in May.", encoding="utf-8")
    embedder.armed = True
    with pytest.raises(KeyboardInterrupt):
        kb.add(tmp_path / "more")
    embedder.armed = False
    assert kb.store.dense_store is dense_store and kb.store.reranker is reranker
    assert kb.sources == ["handbook.txt"]
    assert kb.search("canteen", 1)[0].source == "handbook.txt" and reranker.calls == 1


def test_opening_a_knowledge_base_does_not_load_the_embedder(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb")
    report = kb.add(tmp_path / "nowhere")
    assert [e.problem for e in report.errors] == ["no such file or folder"]
    assert "_model" not in vars(kb.store.embedder)
