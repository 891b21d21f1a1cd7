"""Chunks, their vectors and per-source content hashes, persisted to one folder atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ragglm.documents import Chunk, Hit
from ragglm.index.dense import DenseIndex
from ragglm.index.embedder import Embedder

__all__ = ["IndexStore"]

_FORMAT = 1


class IndexStore:
    """Everything the knowledge base retrieves from. Chunk ids are stable across saves."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.dense = DenseIndex(embedder.dimension)
        self.chunks: dict[int, Chunk] = {}
        self.sources: dict[str, dict] = {}  # source -> {"hash": str, "ids": [chunk ids]}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.chunks)

    def source_hash(self, source: str) -> str | None:
        entry = self.sources.get(source)
        return entry["hash"] if entry else None

    def add(self, source: str, content_hash: str, chunks: list[Chunk], progress: bool = False) -> None:
        """Replace whatever the store held for source with these chunks."""
        self.remove(source)
        ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        if chunks:
            self.dense.add(ids, self.embedder.embed([c.text for c in chunks], progress=progress))
        for chunk_id, chunk in zip(ids.tolist(), chunks):
            self.chunks[chunk_id] = chunk
        self.sources[source] = {"hash": content_hash, "ids": ids.tolist()}

    def remove(self, source: str) -> None:
        entry = self.sources.pop(source, None)
        if entry and entry["ids"]:
            self.dense.remove(np.array(entry["ids"]))
            for chunk_id in entry["ids"]:
                del self.chunks[chunk_id]

    def search(self, query: str, k: int) -> list[Hit]:
        vector = self.embedder.embed([query])[0]
        return [Hit(self.chunks[i], score) for i, score in self.dense.search(vector, k)]

    def save(self, folder: Path) -> None:
        """Write to a sibling temporary folder, then swap it in: a crash leaves the old index."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.dense.save(staging / "dense.faiss")
            meta = {
                "format": _FORMAT,
                "embedder": self.embedder.name,
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
    def load(cls, folder: Path, embedder: Embedder) -> IndexStore:
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        if meta.get("embedder") != embedder.name:
            raise ValueError(
                f"{folder} was built with embedder {meta.get('embedder')!r}, not {embedder.name!r}; "
                "use the same embedder or rebuild the index in a new folder"
            )
        store = cls(embedder)
        store.dense = DenseIndex.load(folder / "dense.faiss")
        store.chunks = {int(i): Chunk.from_dict(c) for i, c in meta["chunks"].items()}
        store.sources = meta["sources"]
        store._next_id = meta["next_id"]
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
