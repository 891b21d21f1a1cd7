"""KnowledgeBase: add documents, search them, ask questions answered with citations."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragglm.config import Settings
from ragglm.documents import Answer, Document, Hit, Page
from ragglm.errors import SourceError
from ragglm.index.embedder import Embedder
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

__all__ = ["KnowledgeBase", "IngestReport"]


# Part of every content hash: a change to how sources are read invalidates what was indexed before.
_READER_VERSION = "2"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)  # sources (re-)indexed
    unchanged: list[str] = field(default_factory=list)  # sources skipped: same content hash
    errors: list[SourceError] = field(default_factory=list)
    chunks: int = 0  # chunks embedded by this call
    removed: list[str] = field(default_factory=list)  # sources whose files are gone from a re-read folder
    notes: list[str] = field(default_factory=list)  # skipped hidden/binary files, pages without text
    pages: int = 0  # pages read by this call

    def to_dict(self) -> dict:
        return {"added": self.added, "unchanged": self.unchanged, "removed": self.removed,
                "chunks": self.chunks, "pages": self.pages, "errors": [str(e) for e in self.errors],
                "notes": self.notes}


class KnowledgeBase:
    """In memory with KnowledgeBase(), persisted to a folder with KnowledgeBase("./kb")."""

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None, *,
                 engine=None, dense_store=None, **overrides):
        """dense_store: a LangChainDenseStore (any LangChain VectorStore) in place of local FAISS."""
        self.settings = settings or Settings.from_env(**overrides)
        self.path = Path(path) if path is not None else None
        self._engine = engine
        self.chunker = Chunker(self.settings.chunk_tokens, self.settings.chunk_overlap_sentences)
        embedder = Embedder(self.settings.embedder)
        reranker = None
        if self.settings.reranker:
            from ragglm.index.reranker import CrossEncoderReranker

            reranker = CrossEncoderReranker(self.settings.reranker, device=self.settings.device)
        index_folder = self._index_folder()
        if index_folder is not None and IndexStore.exists(index_folder):
            self.store = IndexStore.load(index_folder, embedder, dense_store=dense_store, reranker=reranker)
        else:
            self.store = IndexStore(embedder, dense_store=dense_store, reranker=reranker)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def sources(self) -> list[str]:
        return sorted(self.store.sources)

    @property
    def engine(self):
        """The generator, loaded on first use."""
        if self._engine is None:
            from ragglm.engine.factory import load_generator

            self._engine = load_generator(self.settings.model, quant=self.settings.quant,
                                          device=self.settings.device, cache_dir=self._kv_cache_folder(),
                                          compile=self.settings.compile)
        return self._engine

    def add(self, paths: str | Path | Iterable[str | Path], progress: bool = False, *,
            include: Sequence[str] = (), exclude: Sequence[str] = (),
            workers: int | None = None) -> IngestReport:
        """Index files, folders and http(s) URLs, all or nothing.

        Unchanged sources (same content hash) are skipped, changed ones replaced, files deleted from
        a folder read again are removed, unreadable ones reported. If anything raises (Ctrl-C
        included) the index is left as it was before the call, in memory and on disk.
        """
        from ragglm.connectors import collect

        if isinstance(paths, (str, Path)):
            paths = [paths]
        paths = list(paths)
        found = collect(paths, include, exclude)
        report = IngestReport(errors=list(found.errors), notes=list(found.notes))
        snapshot = self._snapshot()
        try:
            self._ingest(found, report, progress, workers)
            report.removed = self._remove_missing(paths, found)
            if report.added or report.removed:
                self.save()
        except BaseException:
            self._restore(snapshot)
            raise
        finally:
            if snapshot is not None and snapshot != self._index_folder():
                shutil.rmtree(snapshot.parent, ignore_errors=True)
        return report

    def _ingest(self, found, report: IngestReport, progress: bool, workers: int | None) -> None:
        from tqdm import tqdm

        from ragglm.connectors.parallel import available_cores, parse_in_order

        jobs, heavy = self._changed_jobs(found, report)
        if workers is None:
            workers = min(available_cores(), heavy) if heavy >= 2 else 1  # processes pay off for slow files
        total = len(jobs) + len(report.unchanged)
        with tqdm(total=total, initial=len(report.unchanged), desc="indexing", unit="file",
                  disable=not progress or total < 2, leave=False) as bar:
            for job, result in parse_in_order(self._loaded(jobs, report), workers):
                bar.update(1)
                if isinstance(result, SourceError):
                    report.errors.append(result)
                    continue
                report.chunks += self._index(result, job.content_hash)
                report.pages += len(result.pages)
                report.added.append(job.source)
                report.notes.extend(result.metadata.get("notes", []))

    def _loaded(self, jobs, report: IngestReport):
        """Each job with its file read just before it is parsed, so a large folder is never all in memory."""
        for job in jobs:
            if job.content_type is None:
                try:
                    job.data = Path(job.source).read_bytes()
                except OSError as exc:
                    report.errors.append(SourceError(job.source, f"could not be read ({exc.strerror or exc})",
                                                     "check the path and its permissions"))
                    continue
                # hashed again from the bytes parsed, in case the file changed since it was first hashed
                job.content_hash = self._content_hash(hashlib.sha256(job.data).hexdigest())
            yield job

    def _changed_jobs(self, found, report: IngestReport):
        """Jobs for sources whose content hash changed; files are read again only when parsed."""
        from ragglm.connectors import fetch_url
        from ragglm.connectors.parallel import ParseJob

        jobs, heavy = [], 0  # heavy: files that are slow to parse
        for file in found.files:
            try:
                content_hash = self._content_hash(_file_digest(file))
            except OSError as exc:
                report.errors.append(SourceError(str(file), f"could not be read ({exc.strerror or exc})",
                                                 "check the path and its permissions"))
                continue
            if self.store.source_hash(str(file)) == content_hash:
                report.unchanged.append(str(file))
                continue
            heavy += file.suffix.lower() in (".pdf", ".docx")
            jobs.append(ParseJob(str(file), b"", None, content_hash))
        for url in found.urls:
            try:
                fetched = fetch_url(url, self._fetch_timeout())
            except SourceError as exc:
                report.errors.append(exc)
                continue
            content_hash = self._content_hash(hashlib.sha256(fetched.data).hexdigest())
            if self.store.source_hash(url) == content_hash:
                report.unchanged.append(url)
                continue
            jobs.append(ParseJob(url, fetched.data, fetched.content_type or "text/html", content_hash))
        return jobs, heavy

    def _fetch_timeout(self) -> float:
        from ragglm.connectors.fetch import DEFAULT_TIMEOUT_S

        return float(os.environ.get("RAGGLM_FETCH_TIMEOUT", DEFAULT_TIMEOUT_S))

    def _content_hash(self, digest: str) -> str:
        return (f"sha256:{digest};reader={_READER_VERSION};"
                f"chunk={self.settings.chunk_tokens}/{self.settings.chunk_overlap_sentences}")

    def _remove_missing(self, paths: list, found) -> list[str]:
        """Sources under a folder read again whose files are gone, and paths that no longer exist."""
        from ragglm.connectors import is_url

        present = {os.path.abspath(f) for f in found.files}
        roots = [os.path.abspath(folder) for folder in found.folders]
        roots += [os.path.abspath(p) for p in paths if not is_url(str(p)) and not Path(p).exists()]
        removed = []
        for source in list(self.store.sources):
            if is_url(source):
                continue
            absolute = os.path.abspath(source)
            if absolute in present:
                continue
            if any(absolute == root or absolute.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
                self.store.remove(source)
                removed.append(source)
        return removed

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

    def _restore(self, snapshot: Path | None) -> None:
        embedder = self.store.embedder
        self.store = IndexStore.load(snapshot, embedder) if snapshot is not None else IndexStore(embedder)

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
        """Top-k chunks by BM25 and dense scores fused with language-aware weights."""
        if not query.strip():
            return []
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

    def _kv_cache_folder(self) -> Path:
        """Where the KV of stuffed documents is kept for the next process."""
        from ragglm.engine.cache.prefix_cache import default_kv_cache_dir

        return default_kv_cache_dir() if self.path is None else self.path / "kv-cache"


def _file_digest(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
