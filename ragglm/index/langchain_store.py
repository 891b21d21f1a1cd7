"""Any LangChain VectorStore (Milvus, Elasticsearch, Qdrant, FAISS, ...) as the dense store.

For corpora that outgrow one machine: the vectors live in the external store, while chunk
texts, the BM25 index and fusion stay in ragglm. Each vector carries the chunk id both as the
store's document id and in its metadata, so deletes and hits map back to ragglm chunks.
"""

from __future__ import annotations

import numpy as np
from langchain_core.embeddings import Embeddings

from ragglm.index.embedder import Embedder

__all__ = ["LangChainDenseStore", "EmbedderEmbeddings"]

_ID_KEY = "ragglm_chunk_id"


class EmbedderEmbeddings(Embeddings):
    """ragglm's sentence-transformers embedder behind LangChain's Embeddings interface."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0].tolist()


class LangChainDenseStore:
    """Adapts a VectorStore to the dense seam of IndexStore: add, remove, search, len.

    The store's relevance scores are used as they come (higher is better after
    `similarity_search_with_relevance_scores`), else a score from the rank; fusion min-max
    normalises either.
    """

    def __init__(self, vectorstore):
        self.vectorstore = vectorstore
        self._ids: set[int] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def track(self, ids) -> None:
        """Chunk ids already in the external store (after loading a saved knowledge base)."""
        self._ids.update(int(i) for i in ids)

    def add(self, ids: np.ndarray, texts: list[str]) -> None:
        ids = [int(i) for i in np.asarray(ids).tolist()]
        self.vectorstore.add_texts(list(texts), metadatas=[{_ID_KEY: i} for i in ids],
                                   ids=[str(i) for i in ids])
        self._ids.update(ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids).tolist()]
        if ids:
            self.vectorstore.delete(ids=[str(i) for i in ids])
            self._ids.difference_update(ids)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        if not self._ids:
            return []
        k = min(k, len(self._ids))
        try:
            pairs = self.vectorstore.similarity_search_with_relevance_scores(query, k=k)
        except NotImplementedError:
            # the store cannot say whether its scores are distances or similarities: rank decides
            documents = self.vectorstore.similarity_search(query, k=k)
            pairs = [(document, 1.0 - rank / k) for rank, document in enumerate(documents)]
        ranking = []
        for document, score in pairs:
            chunk_id = document.metadata.get(_ID_KEY)
            if chunk_id is not None and int(chunk_id) in self._ids:
                ranking.append((int(chunk_id), float(score)))
        return ranking
