"""Sparse and dense stay in step through add/replace/remove; a reloaded store answers the same."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from ragglm.documents import Document, Page
from ragglm.errors import IndexMismatchError
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

QUERIES = ["门锁电池能用多久？", "How long does the filter last?", "密码输错几次会锁定", "router reset button"]


def _dense_ids(store: IndexStore) -> list[int]:
    return sorted(faiss.vector_to_array(store.dense._index.id_map).tolist())


def _in_step(store: IndexStore) -> None:
    chunk_ids = sorted(store.chunks)
    assert _dense_ids(store) == chunk_ids
    assert store.sparse.ids().tolist() == chunk_ids
    assert sorted(i for entry in store.sources.values() for i in entry["ids"]) == chunk_ids


@pytest.fixture(scope="module")
def documents(manuals):
    text = (manuals / "smartlock-s2-guide.md").read_text(encoding="utf-8")
    english = ("The AquaPure W3 filter lasts six months. Replace it when the light turns red.\n\n"
               "To reset the R7 router, hold the reset button for ten seconds.")
    return {"lock.md": text, "notes.txt": english}


def _build(embedder, documents) -> IndexStore:
    store = IndexStore(embedder)
    chunker = Chunker(max_tokens=40)
    for source, text in documents.items():
        store.add(source, f"hash-{source}", chunker.split(Document(source, [Page(None, text)])))
    return store


def test_add_replace_remove_keep_sparse_and_dense_in_step(embedder, documents):
    store = _build(embedder, documents)
    _in_step(store)
    old_ids = store.sources["notes.txt"]["ids"]
    store.add("notes.txt", "hash-2", Chunker().split(Document("notes.txt", [Page(None, "Only one line.")])))
    _in_step(store)
    assert store.source_hash("notes.txt") == "hash-2"
    assert [store.chunks[i].text for i in store.sources["notes.txt"]["ids"]] == ["Only one line."]
    assert not set(old_ids) & set(store.chunks)
    store.remove("lock.md")
    _in_step(store)
    assert set(store.sources) == {"notes.txt"}
    assert all(h.source == "notes.txt" for h in store.search("门锁电池", 5))
    assert all(h.source == "notes.txt" for h in store.search("门锁电池", 5, weight=1.0))


def test_reloaded_store_answers_the_same(tmp_path, embedder, documents):
    store = _build(embedder, documents)
    store.remove("notes.txt")
    store.add("notes.txt", "h", Chunker().split(Document("notes.txt", [Page(2, documents["notes.txt"])])))
    store.save(tmp_path / "index")
    assert IndexStore.exists(tmp_path / "index")
    loaded = IndexStore.load(tmp_path / "index", embedder)
    _in_step(loaded)
    for query in QUERIES:
        for weight in (None, 0.5, 1.0):
            a, b = store.search(query, 4, weight=weight), loaded.search(query, 4, weight=weight)
            assert [(h.chunk, h.page) for h in a] == [(h.chunk, h.page) for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    # incremental changes after loading keep both indexes in step and get new ids
    loaded.add("extra.txt", "x", Chunker().split(Document("extra.txt", [Page(None, "新的说明文字。")])))
    _in_step(loaded)
    assert min(loaded.sources["extra.txt"]["ids"]) >= store._next_id


def test_chinese_query_with_english_only_embedder_follows_bm25(embedder, documents):
    store = _build(embedder, documents)
    hits = store.search("电池完全没电怎么开门", 3)
    assert "应急供电口" in hits[0].text
    lexical = store.sparse.search("电池完全没电怎么开门", 3)
    assert [store.chunks[i] for i, _ in lexical] == [h.chunk for h in hits]


def test_loading_with_another_embedder_is_refused(tmp_path, embedder, documents):
    _build(embedder, documents).save(tmp_path / "index")

    class Other:
        name, dimension = "other-model", embedder.dimension

    with pytest.raises(IndexMismatchError, match="other-model"):
        IndexStore.load(tmp_path / "index", Other())


def test_empty_store_returns_nothing(embedder):
    assert IndexStore(embedder).search("门锁", 5) == []
    assert np.array(IndexStore(embedder).sparse.ids()).size == 0


def test_folder_without_sparse_index_is_rebuilt_on_load(tmp_path, embedder, documents):
    store = _build(embedder, documents)
    store.save(tmp_path / "index")
    current = json.loads((tmp_path / "index" / "index.json").read_text(encoding="utf-8"))["current"]
    (tmp_path / "index" / current / "sparse.npz").unlink()
    loaded = IndexStore.load(tmp_path / "index", embedder)
    _in_step(loaded)
    for query in QUERIES:
        assert [h.chunk for h in loaded.search(query, 3)] == [h.chunk for h in store.search(query, 3)]
