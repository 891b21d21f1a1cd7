"""KnowledgeBase: add documents, search them, ask questions answered with citations."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ragglm.config import Settings
from ragglm.documents import Answer, Document, Hit, Page
from ragglm.errors import SourceError
from ragglm.index.embedder import Embedder
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

__all__ = ["KnowledgeBase", "IngestReport"]


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)  # sources (re-)indexed
    unchanged: list[str] = field(default_factory=list)  # sources skipped: same content hash
    errors: list[SourceError] = field(default_factory=list)
    chunks: int = 0  # chunks embedded by this call


class KnowledgeBase:
    """In memory with KnowledgeBase(), persisted to a folder with KnowledgeBase("./kb")."""

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None, *,
                 engine=None, **overrides):
        self.settings = settings or Settings.from_env(**overrides)
        self.path = Path(path) if path is not None else None
        self._engine = engine
        self.chunker = Chunker(self.settings.chunk_tokens, self.settings.chunk_overlap_sentences)
        embedder = Embedder(self.settings.embedder)
        index_folder = self._index_folder()
        if index_folder is not None and IndexStore.exists(index_folder):
            self.store = IndexStore.load(index_folder, embedder)
        else:
            self.store = IndexStore(embedder)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def sources(self) -> list[str]:
        return sorted(self.store.sources)

    @property
    def engine(self):
        """The generator, loaded on first use."""
        if self._engine is None:
            from ragglm.engine import Engine

            self._engine = Engine.from_pretrained(self.settings.model, quant=self.settings.quant,
                                                  device=self.settings.device)
        return self._engine

    def add(self, paths: str | Path | Iterable[str | Path], progress: bool = False) -> IngestReport:
        """Index files and folders; unchanged files are skipped, unreadable ones reported."""
        from ragglm.connectors import expand_paths, load_file

        if isinstance(paths, (str, Path)):
            paths = [paths]
        files, errors = expand_paths(paths)
        report = IngestReport(errors=errors)
        for file in _progress(files, progress, "reading"):
            source = str(file)
            data_hash = hashlib.sha256(file.read_bytes()).hexdigest()
            if self.store.source_hash(source) == data_hash:
                report.unchanged.append(source)
                continue
            try:
                document = load_file(file)
            except SourceError as exc:
                report.errors.append(exc)
                continue
            report.chunks += self._index(document, data_hash)
            report.added.append(source)
        if report.added:
            self.save()
        return report

    def add_text(self, text: str, source: str, page: int | None = None) -> int:
        """Index a piece of text under a source name; returns the number of chunks."""
        content_hash = hashlib.sha256(f"{page}\0{text}".encode()).hexdigest()
        count = self._index(Document(source, [Page(page, text)]), content_hash)
        self.save()
        return count

    def remove(self, source: str) -> None:
        self.store.remove(source)
        self.save()

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.store.search(query, k)

    def ask(self, question: str, k: int | None = None, mode: str = "auto",
            on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer with citations; on_text receives the answer as it is generated.

        mode: "auto" (stuff the whole documents when they fit and are quick to read or cached,
        else retrieve), "stuff", "retrieve" or "extractive" (quote the best sentences, no model).
        The answer's `plan` holds the decision and its numbers.
        """
        from ragglm.pipelines.answering import ask

        return ask(self, question, mode=mode, k=k, on_text=on_text)

    def chat(self, history: list[dict], k: int | None = None, mode: str = "auto",
             on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer the last user message of history ([{"role": ..., "content": ...}, ...]).

        A follow-up ("how do I reset it?") is rewritten into a standalone question first; the
        answer's plan["standalone_question"] shows it.
        """
        from ragglm.pipelines.answering import chat

        return chat(self, history, mode=mode, k=k, on_text=on_text)

    def save(self) -> None:
        folder = self._index_folder()
        if folder is not None:
            self.store.save(folder)

    def _index(self, document: Document, content_hash: str) -> int:
        chunks = self.chunker.split(document)
        self.store.add(document.source, content_hash, chunks)
        return len(chunks)

    def _index_folder(self) -> Path | None:
        return None if self.path is None else self.path / "index"


def _progress(items: list, enabled: bool, label: str):
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="file")
