"""The seams between ragglm's parts: what the answering pipeline and the index expect of their collaborators.

Each Protocol names what a caller uses, no more; `Engine` and `RemoteGenerator` are Generators,
`IndexStore` is a Retriever, `Embedder` an Embedder, `LangChainDenseStore` a DenseStore.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Generator as Generator_
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragglm.documents import Hit

__all__ = ["Embedder", "DenseStore", "Retriever", "Generator", "TextCallback"]


@runtime_checkable
class Embedder(Protocol):
    """Unit-normalised float32 vectors, one row per text."""

    name: str

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


@runtime_checkable
class DenseStore(Protocol):
    """Vectors kept outside ragglm (any LangChain VectorStore through LangChainDenseStore)."""

    def add(self, ids: np.ndarray, texts: list[str]) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, query: str, k: int) -> list[tuple[int, float]]: ...

    def track(self, ids: Iterable[int]) -> None:
        """Learn the chunk ids a reloaded index already holds."""

    def __len__(self) -> int: ...


@runtime_checkable
class Retriever(Protocol):
    """Where the pipeline finds its sources."""

    def search(self, query: str, k: int) -> list[Hit]: ...

    def whole_pages(self) -> list[Hit]:
        """One hit per (source, page) with the page's whole text, for stuffing."""

    def signature(self) -> tuple:
        """Changes whenever a source is added, changed or removed."""


@runtime_checkable
class Generator(Protocol):
    """A chat model: the local Engine or a RemoteGenerator."""

    name: str
    languages: Sequence[str]  # languages it answers well in
    device: str  # "cpu", "cuda", ... or "remote"
    quant: str | None
    window: int  # context length in tokens
    parameter_count: int | None  # None when unknown (a remote model)
    lock: threading.RLock  # callers that share one generator take turns with it
    concurrent: bool  # True when the generator schedules concurrent calls itself (a remote server)

    def count_tokens(self, text: str) -> int: ...

    def cached_prompt_tokens(self, messages: list[dict]) -> int:
        """Leading tokens of this chat prompt whose KV is already cached (0 without a prefix cache)."""

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stream: bool = False, result: Any = None, use_prefix_cache: bool = True,
             **sampling: Any) -> Any | Generator_[str, None, None]:
        """A result, or with stream=True a generator of text pieces (closing it ends decoding) that
        fills `result`."""


TextCallback = Callable[[str], None]  # receives the answer's text as it is produced
