"""KnowledgeBase: add documents, search them, ask questions answered with citations."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from ragglm.config import Settings
from ragglm.documents import Answer, Document, Hit, Page
from ragglm.index.embedder import Embedder
from ragglm.index.store import IndexStore
from ragglm.ingestor import Ingestor, IngestReport
from ragglm.paths import kv_cache_dir
from ragglm.pipelines.answering import AnswerPipeline
from ragglm.pipelines.config import AnswerConfig
from ragglm.protocols import DenseStore, Generator, TextCallback
from ragglm.protocols import Embedder as EmbedderProtocol
from ragglm.text.chunker import Chunker

__all__ = ["KnowledgeBase"]


# A knowledge base's own KV folder holds its documents' prefixes; questions' tails beyond that are
# re-computed cheaply, so it stays small beside the index (RAGGLM_DISK_CACHE_MB overrides it).
KB_KV_CACHE_MB = 512


class KnowledgeBase:
    """In memory with KnowledgeBase(), persisted to a folder with KnowledgeBase("./kb").

    Collaborators may be passed in: generator (an Engine or RemoteGenerator; else the `model`
    setting loads on first use), embedder (else the `embedder` setting, loaded when first needed),
    dense_store (any LangChain VectorStore through LangChainDenseStore, in place of local FAISS)
    and reranker (else the `reranker` setting).
    """

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None, *,
                 generator: Generator | None = None, embedder: EmbedderProtocol | None = None,
                 dense_store: DenseStore | None = None, reranker=None, **overrides):
        self.settings = settings or Settings.from_env(**overrides)
        self.lock = threading.RLock()  # held by callers that share this knowledge base across threads
        self.path = Path(path) if path is not None else None
        self._generator = generator
        self.chunker = Chunker(self.settings.chunk_tokens, self.settings.chunk_overlap_sentences)
        self._embedder = embedder or Embedder(self.settings.embedder)
        self._dense_store = dense_store
        if reranker is None and self.settings.reranker:
            from ragglm.index.reranker import (
                CrossEncoderReranker,  # sentence-transformers: only when asked for
            )

            reranker = CrossEncoderReranker(self.settings.reranker, device=self.settings.device)
        self._reranker = reranker
        config = AnswerConfig(max_new_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature,
                              top_k=self.settings.top_k)
        self._store = self._open_store(self._index_folder())
        self.pipeline = AnswerPipeline(self._store, self._generator_for_answering, self._embedder, config)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def store(self) -> IndexStore:
        """The index searched and answered from; setting it points the answering pipeline at it too."""
        return self._store

    @store.setter
    def store(self, store: IndexStore) -> None:
        self._store = store
        self.pipeline.retriever = store

    @property
    def sources(self) -> list[str]:
        return sorted(self.store.sources)

    @property
    def generator(self) -> Generator:
        """The generator, loaded on first use."""
        if self._generator is None:
            from ragglm.engine.factory import (
                load_generator,  # torch: imported only when a model is needed
            )

            self._generator = load_generator(self.settings.model, quant=self.settings.quant,
                                             device=self.settings.device, cache_dir=self._kv_cache_folder(),
                                             compile=self.settings.compile,
                                             disk_cache_limit_mb=None if self.path is None else KB_KV_CACHE_MB,
                                             adapter=self.settings.adapter)
        return self._generator

    def _generator_for_answering(self) -> Generator:
        """The generator; before it is loaded, a stand-in read from the model file's header (see
        DeferredGenerator), so that a question answered by extract never loads the model. A device
        other than the CPU loads it at once, so that a missing GPU is reported whatever the answer."""
        if self._generator is None and not self.settings.adapter and self.settings.device == "cpu":
            from ragglm.engine.loading.model_card import (  # the engine imports torch: only extracting needs none
                DeferredGenerator,
                read_model_card,
            )

            if getattr(self, "_card", None) is None:
                self._card = read_model_card(self.settings.model)
            if self._card is not None:
                return DeferredGenerator(self._card, lambda: self.generator)
        return self.generator

    def add(self, paths: str | Path | Iterable[str | Path], progress: bool = False, *,
            include: Sequence[str] = (), exclude: Sequence[str] = (),
            workers: int | None = None) -> IngestReport:
        """Index files, folders and http(s) URLs, all or nothing.

        Unchanged sources (same content hash) are skipped, changed ones replaced, files deleted from
        a folder read again are removed, unreadable ones reported. If anything raises (Ctrl-C
        included) the index is left as it was before the call, in memory and on disk.
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        snapshot = self._snapshot()
        try:
            ingestor = Ingestor(self.store, self.chunker, self.settings.allow_private_urls)
            report = ingestor.ingest(paths, include=include, exclude=exclude, workers=workers, progress=progress)
            if report.added or report.removed:
                self.save()
        except BaseException:
            self.store = self._open_store(snapshot)
            raise
        finally:
            if snapshot is not None and snapshot != self._index_folder():
                shutil.rmtree(snapshot.parent, ignore_errors=True)
        return report

    def add_text(self, text: str, source: str, page: int | None = None, *, save: bool = True) -> int:
        """Index a piece of text under a source name (skipped when unchanged); returns its chunks.

        save=False leaves saving to the caller, for many texts in a row."""
        content_hash = Ingestor.text_hash(text, page)
        if self.store.source_hash(source) == content_hash:
            return len(self.store.sources[source]["ids"])
        count = Ingestor(self.store, self.chunker).index(Document(source, [Page(page, text)]), content_hash)
        if save:
            self.save()
        return count

    def remove(self, source: str) -> None:
        self.store.remove(source)
        self.save()

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Top-k chunks by BM25 and dense scores fused with language-aware weights."""
        if not query.strip():
            return []
        return self.store.search(query, k)

    def ask(self, question: str, k: int | None = None, mode: str = "auto",
            on_text: TextCallback | None = None, *, max_new_tokens: int | None = None,
            temperature: float | None = None, instructions: str | None = None) -> Answer:
        """Answer with citations; on_text receives the answer as it is generated.

        mode: "auto" (stuff the whole documents when they fit and are quick to read or cached,
        else retrieve), "stuff", "retrieve" or "extractive" (quote the best sentences, no model).
        The answer's `plan` holds the decision and its numbers. max_new_tokens and temperature
        override the settings for this call only. instructions (tone, language, length: what an API
        system message says) are given to the model after the grounding rules, which win; an extract
        or a refusal cannot follow them, and plan.instructions says what became of them.
        """
        return self.pipeline.ask(question, mode=mode, k=k, on_text=on_text, max_new_tokens=max_new_tokens,
                                 temperature=temperature, instructions=instructions)

    def chat(self, history: list[dict], k: int | None = None, mode: str = "auto",
             on_text: TextCallback | None = None, *, max_new_tokens: int | None = None,
             temperature: float | None = None, instructions: str | None = None) -> Answer:
        """Answer the last user message of history ([{"role": ..., "content": ...}, ...]).

        A follow-up ("how do I reset it?") is rewritten into a standalone question first; the
        answer's plan.standalone_question shows it.
        """
        return self.pipeline.chat(history, mode=mode, k=k, on_text=on_text, max_new_tokens=max_new_tokens,
                                  temperature=temperature, instructions=instructions)

    def reload(self) -> None:
        """Back to the last saved index (a knowledge base in memory has none and keeps what it holds)."""
        if self.path is not None:
            with self.lock:
                self.store = self._open_store(self._index_folder())

    def save(self) -> None:
        folder = self._index_folder()
        if folder is not None:
            self.store.save(folder)

    def _open_store(self, folder: Path | None) -> IndexStore:
        """The saved index in folder (or an empty one), with every collaborator this knowledge base has."""
        collaborators = {"dense_store": self._dense_store, "reranker": self._reranker}
        if folder is not None and IndexStore.exists(folder):
            return IndexStore.load(folder, self._embedder, **collaborators)
        return IndexStore(self._embedder, **collaborators)

    def _snapshot(self) -> Path | None:
        """Where the state before an ingestion can be reloaded from: the saved index, or a copy."""
        folder = self._index_folder()
        if folder is not None:
            return folder if IndexStore.exists(folder) else None
        if len(self.store) == 0 and not self.store.sources:
            return None
        copy = Path(tempfile.mkdtemp(prefix="ragglm-kb-")) / "index"
        self.store.save(copy)
        return copy

    def _index_folder(self) -> Path | None:
        return None if self.path is None else self.path / "index"

    def _kv_cache_folder(self) -> Path:
        """Where the KV of stuffed documents is kept for the next process."""
        return kv_cache_dir() if self.path is None else self.path / "kv-cache"
