"""A real LangChain VectorStore as the dense store: ids map back, deletes follow, reload works."""

from __future__ import annotations

from langchain_core.vectorstores import InMemoryVectorStore

from ragglm.documents import Document, Page
from ragglm.index.langchain_store import EmbedderEmbeddings, LangChainDenseStore
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

TEXTS = {
    "filter.txt": "The AquaPure W3 filter lasts six months. Replace it when the light turns red.",
    "router.txt": "To reset the R7 router, hold the reset button for ten seconds.",
    "lock.txt": "门锁使用4节AA碱性电池供电，电池可以使用约10个月。",
}


def _store(embedder, vectorstore):
    store = IndexStore(embedder, dense_store=LangChainDenseStore(vectorstore))
    for source, text in TEXTS.items():
        store.add(source, source, Chunker().split(Document(source, [Page(None, text)])))
    return store


def test_vectorstore_as_dense_store(tmp_path, embedder):
    vectorstore = InMemoryVectorStore(EmbedderEmbeddings(embedder))
    store = _store(embedder, vectorstore)
    assert len(vectorstore.store) == len(store)
    assert store.search("how do I restart my router", 1, weight=1.0)[0].source == "router.txt"
    ranking = store.dense_ranking("how do I restart my router", 3)
    assert sorted(i for i, _ in ranking) == sorted(store.chunks)
    store.remove("router.txt")
    assert len(vectorstore.store) == len(store)
    assert all(h.source != "router.txt" for h in store.search("reset the router", 5, weight=1.0))

    store.save(tmp_path / "index")
    loaded = IndexStore.load(tmp_path / "index", embedder, dense_store=LangChainDenseStore(vectorstore))
    for query in ("filter replacement", "门锁电池"):
        assert [h.chunk for h in loaded.search(query, 2)] == [h.chunk for h in store.search(query, 2)]


def test_vectors_match_the_builtin_embedder(embedder):
    vectors = EmbedderEmbeddings(embedder).embed_documents(["门锁", "filter"])
    assert vectors == embedder.embed(["门锁", "filter"]).tolist()
