"""The store of a knowledge base as an Ingestor on a background thread sees it.

Parsing runs outside the knowledge base's lock; embedding runs in small batches, each under the lock
(the embedder is shared with the answers, which embed their questions); each change to the store
is one step under the lock, so an answer sees a source whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["LockedStore"]

BATCH = 32  # texts embedded per turn of the lock: an answer waits for one batch at most


class LockedStore:
    def __init__(self, kb, force: Iterable[str] = ()):
        self.kb = kb
        self.force = set(force)  # sources to index again even when their content hash is unchanged

    @property
    def sources(self) -> dict:
        with self.kb.lock:
            return dict(self.kb.store.sources)

    def source_hash(self, source: str) -> str | None:
        if source in self.force:
            return None
        with self.kb.lock:
            return self.kb.store.source_hash(source)

    def remove(self, source: str) -> None:
        with self.kb.lock:
            self.kb.store.remove(source)

    def add(self, source: str, content_hash: str, chunks: list, progress: bool = False) -> None:
        texts = [chunk.text for chunk in chunks]
        vectors = self._embed(texts)
        with self.kb.lock:
            self.kb.store.add(source, content_hash, chunks, vectors=vectors)

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        """The vectors for texts, or None when an external dense store embeds them itself."""
        with self.kb.lock:
            store = self.kb.store
            if not texts or store.dense_store is not None:
                return None
        parts = []
        for start in range(0, len(texts), BATCH):
            with self.kb.lock:
                parts.append(store.embedder.embed(texts[start:start + BATCH]))
        return np.concatenate(parts)

