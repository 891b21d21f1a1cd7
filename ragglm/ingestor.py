"""Ingestor: the one way from files, folders and URLs to an index (KnowledgeBase.add, the CLI, uploads).

Sources whose content hash is unchanged are skipped, changed ones replaced, files gone from a folder
read again removed, unreadable ones reported; the caller decides when to save.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ragglm.connectors import collect, is_url, iter_jobs, parse_in_order, worker_count
from ragglm.connectors.directory import Collected, normalise_url
from ragglm.connectors.formats import how_read
from ragglm.connectors.ocr import ocr_mode
from ragglm.connectors.ocr_pages import PageBar
from ragglm.documents import Document
from ragglm.errors import SourceError
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

__all__ = ["IngestReport", "Ingestor"]

# Part of every content hash: a change to how sources are read invalidates what was indexed before.
READER_VERSION = "4"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)  # sources (re-)indexed
    unchanged: list[str] = field(default_factory=list)  # sources skipped: same content hash
    errors: list[SourceError] = field(default_factory=list)
    chunks: int = 0  # chunks embedded by this call
    removed: list[str] = field(default_factory=list)  # sources whose files are gone from a re-read folder
    notes: list[str] = field(default_factory=list)  # skipped hidden/binary files, pages without text
    pages: int = 0  # pages read by this call
    warnings: list[str] = field(default_factory=list)  # pages left out: OCR missing or failed
    read: dict[str, dict] = field(default_factory=dict)  # per source added: how it was read (formats.how_read)

    def to_dict(self) -> dict:
        return {"added": self.added, "unchanged": self.unchanged, "removed": self.removed,
                "chunks": self.chunks, "pages": self.pages, "errors": [str(e) for e in self.errors],
                "warnings": self.warnings, "notes": self.notes, "read": self.read}


class Ingestor:
    """Reads sources, chunks them and puts them in one IndexStore."""

    def __init__(self, store: IndexStore, chunker: Chunker, allow_private_urls: bool | None = None):
        self.store = store
        self.chunker = chunker
        self.allow_private_urls = allow_private_urls  # fetch intranet URLs (see fetch_url)

    def ingest(self, paths: Iterable[str | Path], *, include: Sequence[str] = (), exclude: Sequence[str] = (),
               workers: int | None = None, progress: bool = False) -> IngestReport:
        paths = list(paths)
        found = collect(paths, include, exclude)
        report = IngestReport(errors=list(found.errors), notes=list(found.notes))
        merged = self._drop_other_spellings(found)
        if merged:
            report.notes.append(f"{len(merged)} source(s) indexed before under another spelling are now kept "
                                f"once, under their resolved path or normalised URL: {', '.join(merged[:5])}")

        def unchanged(source: str, sha256: str) -> bool:
            return self.store.source_hash(source) == self.content_hash(sha256)

        total = len(found.files) + len(found.urls)
        jobs = iter_jobs(found, report.errors, unchanged, report.unchanged, self.allow_private_urls)
        pages_bar = PageBar(progress)  # pages of OCR, for scans that take a while
        with tqdm(total=total, desc="indexing", unit="file", disable=not progress or total < 2, leave=False) as bar:
            for done, (job, result) in enumerate(parse_in_order(jobs, worker_count(found, workers), pages_bar), 1):
                bar.n = done + len(report.unchanged)
                bar.refresh()
                if isinstance(result, SourceError):
                    report.errors.append(result)
                    continue
                report.warnings.extend(result.metadata.get("warnings", []))
                chunks = self.chunker.split(result)
                if not chunks:
                    report.errors.append(SourceError(
                        job.source, "no text could be read from it",
                        "an empty file has nothing to index; a scanned PDF needs its text layer (OCR it first)"))
                    continue
                self.store.add(result.source, self.content_hash(job.sha256), chunks)
                report.chunks += len(chunks)
                report.pages += len(result.pages)
                report.added.append(job.source)
                report.read[job.source] = how_read(result)
                report.notes.extend(result.metadata.get("notes", []))
        pages_bar.close()
        report.removed = merged + self._remove_missing(paths, found)
        return report

    def index(self, document: Document, content_hash: str) -> int:
        """Chunk one document and put it in the store in place of what its source held; returns its chunks."""
        chunks = self.chunker.split(document)
        self.store.add(document.source, content_hash, chunks)
        return len(chunks)

    def content_hash(self, sha256: str) -> str:
        """The bytes' hash with what else decides the chunks: a change to either re-indexes the source."""
        return (f"sha256:{sha256};reader={READER_VERSION};"
                f"chunk={self.chunker.max_tokens}/{self.chunker.overlap_sentences};ocr={ocr_mode()}")

    @staticmethod
    def text_hash(text: str, page: int | None) -> str:
        return hashlib.sha256(f"{page}\0{text}".encode()).hexdigest()

    def _drop_other_spellings(self, found: Collected) -> list[str]:
        """Sources stored under a spelling that is not canonical (a relative path, an unnormalised URL)
        whose canonical form is being read now or is stored already: knowledge bases written before
        sources were canonical can hold one file twice."""
        canonical = {str(f) for f in found.files} | set(found.urls) | set(self.store.sources)
        dropped = []
        for source in list(self.store.sources):
            spelled = normalise_url(source) if is_url(source) else str(Path(source).resolve())
            if spelled != source and spelled in canonical:
                self.store.remove(source)
                dropped.append(source)
        return dropped

    def _remove_missing(self, paths: list, found: Collected) -> list[str]:
        """Sources under a folder read again whose files are gone, and paths that no longer exist."""
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
