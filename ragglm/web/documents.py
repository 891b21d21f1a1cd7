"""What the document list shows: one row per indexed source or stored file, with its indexing status."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from ragglm.index.pages import rebuild_pages

__all__ = ["display_name", "document_id", "document_rows", "find_source", "page_text"]


def document_id(source: str) -> str:
    """Stable across restarts, and safe in a URL path whatever the source's spelling."""
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def display_name(source: str, files: Path) -> str:
    """A stored upload by its name in the files folder; anything else (URL, other path) as it is."""
    try:
        return Path(source).relative_to(files.resolve()).as_posix()
    except ValueError:
        return source


def document_rows(library, active_jobs, last_read: dict | None = None) -> list[dict]:
    """last_read: per source, the job task that last read it, whose warnings the row carries."""
    kb, files = library.kb, library.files
    with kb.lock:
        sources = {source: list(entry.get("ids", [])) for source, entry in kb.store.sources.items()}
        pages = {source: {kb.store.chunks[i].page for i in ids if i in kb.store.chunks}
                 for source, ids in sources.items()}
    stored = {str(p.resolve()) for p in files.iterdir() if p.is_file() and not p.name.startswith(".")}
    pending = {}  # source -> (status, error) of the latest job that holds it
    for job in active_jobs:
        for task in job.tasks:
            if task.source:
                pending[task.source] = task.status
    rows = []
    for source in sorted(set(sources) | stored | set(pending), key=lambda s: display_name(s, files).lower()):
        ids = sources.get(source)
        status = pending.get(source) if pending.get(source) in ("queued", "indexing") else None
        status = status or ("indexed" if ids is not None else "not indexed")
        numbered = [p for p in pages.get(source, ()) if p is not None]
        rows.append({"id": document_id(source), "name": display_name(source, files), "source": source,
                     "type": _kind(source), "pages": len(numbered) or None, "chunks": len(ids or []),
                     **_file_facts(source), "status": status,
                     "warnings": list(getattr((last_read or {}).get(source), "warnings", []))})
    return rows


def find_source(library, doc_id: str) -> str | None:
    for row in document_rows(library, []):
        if row["id"] == doc_id:
            return row["source"]
    return None


def page_text(kb, source: str, page: int | None) -> str | None:
    """The page's whole text rebuilt from its chunks, for showing a cited passage in context."""
    with kb.lock:
        ids = kb.store.sources.get(source, {}).get("ids", [])
        chunks = [kb.store.chunks[i] for i in ids if i in kb.store.chunks and kb.store.chunks[i].page == page]
    rebuilt = rebuild_pages(chunks)
    return rebuilt[0].text if rebuilt else None


def _kind(source: str) -> str:
    if source.startswith(("http://", "https://")):
        return "url"
    return Path(source).suffix.lower().lstrip(".") or "file"


def _file_facts(source: str) -> dict:
    path = Path(source)
    if source.startswith(("http://", "https://")) or not path.is_file():
        return {"size": None, "added": None}
    stat = path.stat()
    added = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")
    return {"size": stat.st_size, "added": added}
