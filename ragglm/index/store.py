"""Chunks, their sparse and dense indexes and per-source content hashes, persisted to one folder.

Both indexes are keyed by the same chunk ids, and every add and remove goes through this class,
so they always hold the same chunks; `save` writes both into a staging folder and swaps it in.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ragglm.documents import Chunk, Hit
from ragglm.errors import IndexMismatchError
from ragglm.index.dense import APPROXIMATE_FROM, DenseIndex
from ragglm.index.fusion import dense_weight, fuse_scores
from ragglm.index.pages import rebuild_pages
from ragglm.index.sparse import SparseIndex
from ragglm.protocols import DenseStore, Embedder
from ragglm.text.language import detect_language

__all__ = ["IndexStore"]

_FORMAT = 2
CANDIDATES = 50  # per ranking, before fusion: deep enough that fusion can promote a chunk


class IndexStore:
    """Everything the knowledge base retrieves from. Chunk ids are stable across saves.

    dense_store: a DenseStore (see LangChainDenseStore) replaces the built-in FAISS index, for
    corpora that outgrow one machine. reranker: an optional CrossEncoderReranker applied to the
    fused candidates. The FAISS index is made when the first vectors arrive, so that opening a
    store does not load the embedder.
    """

    def __init__(self, embedder: Embedder, *, dense_store: DenseStore | None = None, reranker=None,
                 approximate_from: int = APPROXIMATE_FROM):
        self.embedder = embedder
        self.approximate_from = approximate_from
        self._dense: DenseIndex | None = None
        self.dense_store = dense_store
        self.sparse = SparseIndex()
        self.reranker = reranker
        self.chunks: dict[int, Chunk] = {}
        self.sources: dict[str, dict] = {}  # source -> {"hash": str, "ids": [chunk ids]}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def dense(self) -> DenseIndex | None:
        """The FAISS index, None when an external dense store holds the vectors."""
        if self.dense_store is not None:
            return None
        if self._dense is None:
            self._dense = DenseIndex(self.embedder.dimension, self.approximate_from)
        return self._dense

    def signature(self) -> tuple:
        """Changes whenever a source is added, changed or removed."""
        return tuple(sorted((source, entry.get("hash")) for source, entry in self.sources.items()))

    def whole_pages(self) -> list[Hit]:
        """One hit per (source, page) with the page's text, sources in name order."""
        return rebuild_pages(self.chunks[i] for source in sorted(self.sources)
                             for i in self.sources[source].get("ids", []) if i in self.chunks)

    def source_hash(self, source: str) -> str | None:
        entry = self.sources.get(source)
        return entry["hash"] if entry else None

    def add(self, source: str, content_hash: str, chunks: list[Chunk], progress: bool = False) -> None:
        """Replace whatever the store held for source with these chunks."""
        self.remove(source)
        ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        texts = [c.text for c in chunks]
        if chunks:
            if self.dense_store is not None:
                self.dense_store.add(ids, texts)
            else:
                self.dense.add(ids, self.embedder.embed(texts, progress=progress))
            self.sparse.add(ids, texts)
        for chunk_id, chunk in zip(ids.tolist(), chunks, strict=False):
            self.chunks[chunk_id] = chunk
        self.sources[source] = {"hash": content_hash, "ids": ids.tolist()}

    def remove(self, source: str) -> None:
        entry = self.sources.pop(source, None)
        if entry and entry["ids"]:
            ids = np.array(entry["ids"], dtype=np.int64)
            if self.dense_store is not None:
                self.dense_store.remove(ids)
            else:
                self.dense.remove(ids)
            self.sparse.remove(ids)
            for chunk_id in entry["ids"]:
                del self.chunks[chunk_id]

    def search(self, query: str, k: int, *, weight: float | None = None) -> list[Hit]:
        """Fused top-k; weight overrides the dense weight chosen for the embedder and language."""
        if not self.chunks or k < 1:
            return []
        if weight is None:
            weight = dense_weight(self.embedder.name, detect_language(query))
        depth = max(CANDIDATES, 2 * k)
        lexical = self.sparse.search(query, depth)
        dense = self.dense_ranking(query, depth) if weight > 0.0 or not lexical else []
        fused = fuse_scores(lexical, dense, weight, depth if self.reranker else k)
        hits = [Hit(self.chunks[i], score) for i, score in fused if i in self.chunks]
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits, k)
        return hits[:k]

    def dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        if self.dense_store is not None:
            return self.dense_store.search(query, k)
        return self.dense.search(self.embedder.embed([query])[0], k)

    def save(self, folder: Path) -> None:
        """Write to a sibling temporary folder, then swap it in: a crash leaves the old index."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            if self.dense_store is None:
                self.dense.save(staging / "dense.faiss")
            self.sparse.save(staging)
            meta = {
                "format": _FORMAT,
                "embedder": self.embedder.name,
                "dense": "faiss" if self.dense_store is None else "external",
                "next_id": self._next_id,
                "sources": self.sources,
                "chunks": {str(i): c.to_dict() for i, c in self.chunks.items()},
            }
            (staging / "index.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            _swap(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: Path, embedder: Embedder, *, dense_store: DenseStore | None = None,
             reranker=None) -> IndexStore:
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        if meta.get("embedder") != embedder.name:
            raise IndexMismatchError(
                f"{folder} was built with embedder {meta.get('embedder')!r}, not {embedder.name!r}; "
                "use the same embedder or rebuild the index in a new folder"
            )
        if meta.get("dense") == "external" and dense_store is None:
            raise IndexMismatchError(f"{folder} keeps its vectors in an external store; pass it as dense_store")
        store = cls(embedder, dense_store=dense_store, reranker=reranker)
        if dense_store is None:
            store._dense = DenseIndex.load(folder / "dense.faiss")
        store.chunks = {int(i): Chunk.from_dict(c) for i, c in meta["chunks"].items()}
        store.sources = meta["sources"]
        store._next_id = meta["next_id"]
        if dense_store is not None:
            dense_store.track(store.chunks)
        if SparseIndex.exists(folder):
            store.sparse = SparseIndex.load(folder)
        else:  # an older folder (no sparse index, or another tokenizer): rebuild from the texts
            ids = np.array(sorted(store.chunks), dtype=np.int64)
            store.sparse.add(ids, [store.chunks[i].text for i in ids.tolist()])
        return store

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / "index.json").is_file()


def _swap(staging: Path, folder: Path) -> None:
    """Replace folder by staging with renames only; the old copy is removed last."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)
