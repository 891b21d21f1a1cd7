"""Chunks, their sparse and dense indexes and per-source content hashes, persisted to one folder.

Both indexes are keyed by the same chunk ids, and every add and remove goes through this class,
so they always hold the same chunks. `save` writes both into a new version folder and then
replaces the one pointer file that names the current version, so a reader or a crash sees either
the old index or the new one, never a mix or none.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ragglm.documents import Chunk, Hit
from ragglm.errors import IndexMismatchError
from ragglm.index.dense import APPROXIMATE_FROM, DenseIndex
from ragglm.index.fusion import dense_weight, fuse_scores
from ragglm.index.pages import rebuild_pages
from ragglm.index.sparse import SparseIndex
from ragglm.processes import process_alive
from ragglm.protocols import DenseStore, Embedder
from ragglm.text.language import detect_language

try:
    import fcntl
except ImportError:  # Windows: saves in one folder are then serialized only within a process
    fcntl = None

__all__ = ["IndexStore"]

_FORMAT = 2
CANDIDATES = 50  # per ranking, before fusion: deep enough that fusion can promote a chunk


class IndexStore:
    """Everything the knowledge base retrieves from. Chunk ids are stable across saves.

    dense_store: a DenseStore (see LangChainDenseStore) replaces the built-in FAISS index, for
    corpora that outgrow one machine. reranker: an optional CrossEncoderReranker applied to the
    fused candidates. The FAISS index is made when the first vectors arrive, so that opening a
    store does not load the embedder.
    """

    def __init__(self, embedder: Embedder, *, dense_store: DenseStore | None = None, reranker=None,
                 approximate_from: int = APPROXIMATE_FROM):
        self.embedder = embedder
        self.approximate_from = approximate_from
        self._dense: DenseIndex | None = None
        self.dense_store = dense_store
        self.sparse = SparseIndex()
        self.reranker = reranker
        self.chunks: dict[int, Chunk] = {}
        self.sources: dict[str, dict] = {}  # source -> {"hash": str, "ids": [chunk ids]}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def dense(self) -> DenseIndex | None:
        """The FAISS index, None when an external dense store holds the vectors."""
        if self.dense_store is not None:
            return None
        if self._dense is None:
            self._dense = DenseIndex(self.embedder.dimension, self.approximate_from)
        return self._dense

    def signature(self) -> tuple:
        """Changes whenever a source is added, changed or removed."""
        return tuple(sorted((source, entry.get("hash")) for source, entry in self.sources.items()))

    def whole_pages(self) -> list[Hit]:
        """One hit per (source, page) with the page's text, sources in name order."""
        return rebuild_pages(self.chunks[i] for source in sorted(self.sources)
                             for i in self.sources[source].get("ids", []) if i in self.chunks)

    def source_hash(self, source: str) -> str | None:
        entry = self.sources.get(source)
        return entry["hash"] if entry else None

    def add(self, source: str, content_hash: str, chunks: list[Chunk], progress: bool = False,
            vectors: np.ndarray | None = None) -> None:
        """Replace whatever the store held for source with these chunks; vectors, when given, are
        their embeddings already computed (an external dense store embeds for itself)."""
        self.remove(source)
        ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        texts = [c.text for c in chunks]
        if chunks:
            if self.dense_store is not None:
                self.dense_store.add(ids, texts)
            else:
                if vectors is None:
                    vectors = self.embedder.embed(texts, progress=progress)
                self.dense.add(ids, vectors)
            self.sparse.add(ids, texts)
        for chunk_id, chunk in zip(ids.tolist(), chunks, strict=False):
            self.chunks[chunk_id] = chunk
        self.sources[source] = {"hash": content_hash, "ids": ids.tolist()}

    def remove(self, source: str) -> None:
        entry = self.sources.pop(source, None)
        if entry and entry["ids"]:
            ids = np.array(entry["ids"], dtype=np.int64)
            if self.dense_store is not None:
                self.dense_store.remove(ids)
            else:
                self.dense.remove(ids)
            self.sparse.remove(ids)
            for chunk_id in entry["ids"]:
                del self.chunks[chunk_id]

    def search(self, query: str, k: int, *, weight: float | None = None) -> list[Hit]:
        """Fused top-k; weight overrides the dense weight chosen for the embedder and language."""
        if not self.chunks or k < 1:
            return []
        if weight is None:
            weight = dense_weight(self.embedder.name, detect_language(query))
        depth = max(CANDIDATES, 2 * k)
        lexical = self.sparse.search(query, depth)
        dense = self.dense_ranking(query, depth) if weight > 0.0 or not lexical else []
        fused = fuse_scores(lexical, dense, weight, depth if self.reranker else k)
        hits = [Hit(self.chunks[i], score) for i, score in fused if i in self.chunks]
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits, k)
        return hits[:k]

    def dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        if self.dense_store is not None:
            return self.dense_store.search(query, k)
        return self.dense.search(self.embedder.embed([query])[0], k)

    def save(self, folder: Path) -> None:
        """Write a new version beside the current one, then switch the pointer to it in one rename.

        A crash at any point leaves the pointer naming either the old version or the new one; the
        unused one is removed by the next save or load.
        """
        folder = Path(folder)
        _make_folder(folder)
        version = _version_name(_next_generation(folder))
        with _claimed(folder / version) as target:
            try:
                target.mkdir()
                self._write_version(target)
                _sync_version(target)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            with _folder_lock(folder) as locked:
                _publish(folder, version)
                if locked:
                    _tidy(folder)

    def _write_version(self, target: Path) -> None:
        if self.dense_store is None:
            self.dense.save(target / "dense.faiss")
        self.sparse.save(target)
        meta = {
            "format": _FORMAT,
            "embedder": self.embedder.name,
            "dense": "faiss" if self.dense_store is None else "external",
            "next_id": self._next_id,
            "sources": self.sources,
            "chunks": {str(i): c.to_dict() for i, c in self.chunks.items()},
        }
        (target / _META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, embedder: Embedder, *, dense_store: DenseStore | None = None,
             reranker=None) -> IndexStore:
        folder = Path(folder)
        for attempt in range(_LOAD_ATTEMPTS):
            version = _pointed(folder)
            try:
                store = cls._load_version(folder, _version_folder(folder, version), embedder,
                                          dense_store=dense_store, reranker=reranker)
                break
            except Exception:
                # a writer may have replaced and removed this version while it was being read
                if attempt + 1 == _LOAD_ATTEMPTS or _pointed(folder) == version:
                    raise
        with _folder_lock(folder, wait=False) as locked:
            if locked:
                _tidy(folder)
        return store

    @classmethod
    def _load_version(cls, folder: Path, files: Path, embedder: Embedder, *, dense_store: DenseStore | None,
                      reranker) -> IndexStore:
        meta = json.loads((files / _META).read_text(encoding="utf-8"))
        if meta.get("embedder") != embedder.name:
            raise IndexMismatchError(
                f"{folder} was built with embedder {meta.get('embedder')!r}, not {embedder.name!r}; "
                "use the same embedder or rebuild the index in a new folder"
            )
        if meta.get("dense") == "external" and dense_store is None:
            raise IndexMismatchError(f"{folder} keeps its vectors in an external store; pass it as dense_store")
        store = cls(embedder, dense_store=dense_store, reranker=reranker)
        if dense_store is None:
            store._dense = DenseIndex.load(files / "dense.faiss")
        store.chunks = {int(i): Chunk.from_dict(c) for i, c in meta["chunks"].items()}
        store.sources = meta["sources"]
        store._next_id = meta["next_id"]
        if SparseIndex.exists(files):
            store.sparse = SparseIndex.load(files)
        else:  # an older folder (no sparse index, or another tokenizer): rebuild from the texts
            ids = np.array(sorted(store.chunks), dtype=np.int64)
            store.sparse.add(ids, [store.chunks[i].text for i in ids.tolist()])
        if dense_store is not None:
            dense_store.track(store.chunks)
        return store

    @staticmethod
    def exists(folder: Path) -> bool:
        folder = Path(folder)
        try:
            return (_version_folder(folder, _pointed(folder)) / _META).is_file()
        except (OSError, ValueError):
            return False


# -- versions on disk ------------------------------------------------------------------------------
#
# folder/index.json   the pointer {"format": 3, "current": "<version>"}, replaced with os.replace;
#                     in folders written before versions existed it is the metadata itself
# folder/<version>/   index.json, dense.faiss, sparse.json, sparse.npz of one save
# folder/.lock        serializes switching the pointer and removing versions, across processes
#
# A version or temporary pointer not named by the pointer is removed once no live process can be
# writing it: its name carries the writer's pid.

_META = "index.json"
_POINTER_FORMAT = 3
_LOCK = ".lock"
_LEGACY_FILES = ("dense.faiss", "sparse.json", "sparse.npz")
_STALE_S = 3600.0  # a writer this old is taken for dead even if its pid is in use again
_LOAD_ATTEMPTS = 3
_VERSION = re.compile(r"v(\d+)-(\d+)-[0-9a-f]+")
_TEMPORARY = re.compile(r"\.index\.json\.(\d+)-[0-9a-f]+\.tmp")

_writing: set[str] = set()  # names of the versions this process is writing now
_writing_lock = threading.Lock()
_switching = threading.Lock()  # the lock file's stand-in between threads where there is no flock


def _version_name(generation: int) -> str:
    return f"v{generation:06d}-{os.getpid()}-{secrets.token_hex(4)}"


def _next_generation(folder: Path) -> int:
    """One more than the current version's; generations only order the folders for people."""
    try:
        match = _VERSION.fullmatch(_pointed(folder) or "")
    except ValueError:  # an unreadable pointer must not stop the save that replaces it
        match = None
    return int(match.group(1)) + 1 if match else 1


def _pointed(folder: Path) -> str | None:
    """The current version's name; "" when folder holds the files itself; None when there is no index."""
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if "current" not in meta:
        return ""
    if not isinstance(meta["current"], str) or not _VERSION.fullmatch(meta["current"]):
        raise ValueError(f"{folder / _META} names no version of an index: {meta['current']!r}")
    return meta["current"]


def _version_folder(folder: Path, version: str | None) -> Path:
    if version is None:
        raise FileNotFoundError(f"no index in {folder}: {folder / _META} is missing")
    return folder / version


@contextmanager
def _claimed(target: Path):
    """Mark target as being written by this process, so that tidying in another thread spares it."""
    with _writing_lock:
        _writing.add(target.name)
    try:
        yield target
    finally:
        with _writing_lock:
            _writing.discard(target.name)


@contextmanager
def _folder_lock(folder: Path, *, wait: bool = True):
    """Hold folder's lock file; yields False when it is busy (wait=False) or cannot be opened."""
    if not _switching.acquire(blocking=wait):
        yield False
        return
    try:
        descriptor = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: nothing can be switched or removed there anyway
        _switching.release()
        yield False
        return
    try:
        yield _acquire(descriptor, wait)
    finally:
        os.close(descriptor)  # closing releases the lock
        _switching.release()


def _acquire(descriptor: int, wait: bool) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _make_folder(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _fsync_directory(folder.parent)


def _publish(folder: Path, version: str) -> None:
    """Point folder's index.json at version, durably, with a single rename."""
    pointer = json.dumps({"format": _POINTER_FORMAT, "current": version}).encode()
    temporary = folder / f".{_META}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(pointer)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, folder / _META)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(folder)


def _sync_version(target: Path) -> None:
    """Make the version's files and its entry in the parent durable before the pointer names it."""
    for path in target.iterdir():
        _fsync_path(path, os.O_RDONLY)
    _fsync_directory(target)
    _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    if os.name != "nt":  # directories cannot be opened on Windows; its renames are durable anyway
        _fsync_path(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _tidy(folder: Path) -> None:
    """Remove what no save will use again: older versions, abandoned ones, files of the old layout."""
    try:
        current = _pointed(folder)
    except (OSError, ValueError):
        return
    if not current:  # no index, or one in the old layout that the next save converts
        return
    for entry in folder.iterdir():
        if entry.name in _LEGACY_FILES or (entry.name != current and _abandoned(entry)):
            _remove(entry)
    _tidy_old_staging(folder)


def _abandoned(entry: Path) -> bool:
    """True for a version or temporary pointer that no live process is still writing."""
    match = _VERSION.fullmatch(entry.name) or _TEMPORARY.fullmatch(entry.name)
    if match is None:
        return False
    pid = int(match.group(match.lastindex))
    if pid == os.getpid():
        with _writing_lock:
            return entry.name not in _writing
    return not process_alive(pid) or _age(entry) > _STALE_S


def _tidy_old_staging(folder: Path) -> None:
    """Staging and retired folders that saves before versions existed left beside folder."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(old-\d+|[a-z0-9_]{{8}})")
    for entry in folder.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and _age(entry) > _STALE_S:
            _remove(entry)



def _age(entry: Path) -> float:
    try:
        return time.time() - entry.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(entry: Path) -> None:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    except OSError:  # tidying is best effort; the next save or load tries again
        pass
