"""Optional cross-encoder reranking of fused candidates (e.g. BAAI/bge-reranker-base when present)."""

from __future__ import annotations

from functools import lru_cache

from ragglm.documents import Hit
from ragglm.errors import ModelNotFoundError

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker:
    """Scores (query, chunk) pairs jointly; slower than fusion, so it only sees the fused top-N."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32):
        self.name = name
        self.batch_size = batch_size
        self._model = _load(name, device)

    def rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        if not hits:
            return []
        scores = self._model.predict([(query, hit.text) for hit in hits], batch_size=self.batch_size,
                                     show_progress_bar=False)
        order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))
        return [Hit(hits[i].chunk, float(scores[i])) for i in order[:k]]


@lru_cache(maxsize=2)
def _load(name: str, device: str):
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(name, device=device)
    except OSError as exc:
        raise ModelNotFoundError(
            f"reranker {name!r} could not be loaded ({exc.__class__.__name__}); "
            "pass a local cross-encoder folder with --reranker, or leave it unset"
        ) from exc
