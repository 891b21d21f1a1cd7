"""Dense (FAISS) retrieval over chunks, persisted to a folder."""

from ragglm.index.dense import DenseIndex
from ragglm.index.embedder import Embedder, resolve_embedder_path
from ragglm.index.store import IndexStore

__all__ = ["DenseIndex", "Embedder", "IndexStore", "resolve_embedder_path"]
