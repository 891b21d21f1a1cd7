"""KV blocks on disk: one file per block, written atomically, checked in full before it is used.

A file is named `<parent key>-<key>.kv`; its layout and checks are in kv_file.py (a header signed
with the cache's secret key, the raw KV, a MAC over both). Writers go through a temporary file and
`os.replace`, so a reader (in this process or another) sees either the whole old file, the whole new
one, or none. A file that fails any check is removed and counted in `rejected`; the caller recomputes
the block and writes it again. Nothing a file holds can make a reader raise.

The folders of every model under one cache root share one byte budget: the least recently used
files go first once the root holds more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.cache.keys import ROOT, block_key
from ragglm.engine.cache.kv_file import (
    MAGIC,
    BlockSpec,
    InvalidBlockFile,
    encode_block,
    read_block,
    read_header,
)
from ragglm.engine.cache.mac_key import load_or_create_key
from ragglm.processes import process_alive

__all__ = ["KVFileStore", "ROOT", "block_key", "default_disk_budget_bytes"]

log = logging.getLogger("ragglm.engine")

_STALE_TMP_S = 600.0  # a block is written in well under a second; older temporaries are abandoned
_TEMPORARY = re.compile(r"\.tmp-(\d+)-.*\.kv")
_BLOCK_FILE = re.compile(r"(root|[0-9a-f]{32})-[0-9a-f]{32}\.kv")
_MODEL_FILE = "model.json"
_FORMAT_FILE = ".format"
_RESCAN_SHARE = 0.05  # other processes write too: recount the root after writing this share of the budget
_PRUNE_TO = 0.9  # of the budget, so that pruning does not run again at the next write
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def default_disk_budget_bytes(folder: Path, limit_bytes: int = 8 * 2**30) -> int:
    """RAGGLM_DISK_CACHE_MB if set, else limit_bytes (8 GiB for the per-user cache) or a quarter of the
    free disk, whichever is less."""
    configured = os.environ.get("RAGGLM_DISK_CACHE_MB")
    if configured:
        return max(0, int(float(configured) * 2**20))
    return min(limit_bytes, shutil.disk_usage(folder).free // 4)


class KVFileStore:
    """Files of KV blocks for one model (one folder per model fingerprint, under a shared root)."""

    def __init__(self, folder: str | Path, fingerprint: dict, layout: tuple[int, int, int],
                 dtype: torch.dtype, budget_bytes: int | None = None, *, block_size: int | None = None,
                 vocab_size: int | None = None, root: str | Path | None = None):
        self.folder = Path(folder)
        self.root = self.folder.parent if root is None else Path(root)
        _make_private_folder(self.folder)
        _remove_abandoned_temporaries(self.folder)
        self.fingerprint = fingerprint
        self.model_id = self.fingerprint_id(fingerprint)
        self.layout = layout  # n_layers, n_kv_heads, head_dim
        self.dtype = dtype
        vocab_size = vocab_size if vocab_size is not None else fingerprint.get("args", {}).get("vocab_size")
        self.spec = BlockSpec(self.model_id, tuple(layout), dtype, load_or_create_key(self.root),
                              vocab_size, block_size)
        self.budget_bytes = default_disk_budget_bytes(self.folder) if budget_bytes is None else budget_bytes
        self.rejected = 0  # files that failed a check (and were removed)
        self.written = 0
        self.pruned = 0  # files removed to keep the root within its budget
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragglm-kv-writer")
        self._pending: list[Future] = []
        self._pending_lock = threading.Lock()
        self._size: int | None = None  # bytes of block files under the root at the last count
        self._written_since_count = 0
        _discard_older_formats(self.folder)
        model_file = self.folder / _MODEL_FILE
        if not model_file.exists():
            _atomic_write(self.folder, model_file, [json.dumps(fingerprint, indent=1).encode()])
        self._writer.submit(self._account, 0)  # a lowered budget applies before the first write

    @staticmethod
    def fingerprint_id(fingerprint: dict) -> str:
        return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()

    def path(self, parent: bytes, key: bytes) -> Path:
        return self.folder / f"{_name(parent)}-{key.hex()}.kv"

    def contains(self, parent: bytes, key: bytes, tokens: Sequence[int]) -> bool:
        """True when the block's file exists and its signed header checks out (the payload is read,
        and checked, only by read)."""
        found = self._checked(parent, key, lambda file, size: self._header_matches(file, size, parent, key, tokens))
        return bool(found)

    def read(self, parent: bytes, key: bytes, tokens: Sequence[int]) -> Tensor | None:
        """The block's KV [L, 2, H_kv, n, D] on CPU, or None when absent or failing any check."""
        kv = self._checked(parent, key, lambda file, size: read_block(file, size, self.spec, parent, key,
                                                                       tuple(tokens)))
        if kv is not None:
            try:
                os.utime(self.path(parent, key))  # recently used files survive pruning
            except OSError:
                pass
        return kv

    def write(self, parent: bytes, key: bytes, tokens: Sequence[int], kv: Tensor) -> Future:
        """Write the block in the background; kv must not be modified afterwards."""
        future = self._writer.submit(self._write_now, parent, key, tuple(tokens), kv)
        with self._pending_lock:
            self._pending = [f for f in self._pending if not f.done()] + [future]
        return future

    def flush(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    # -- reading -------------------------------------------------------------------------------

    def _checked(self, parent: bytes, key: bytes, check):
        """check(file, size) on the block's file; None when absent, or removed when it fails."""
        path = self.path(parent, key)
        try:
            with _open_regular(path) as file:
                return check(file, os.fstat(file.fileno()).st_size)
        except FileNotFoundError:
            return None
        except Exception as exc:  # whatever a crafted file provokes, it is a bad file, not a crash
            self._reject(path, exc)
            return None

    def _header_matches(self, file, size: int, parent: bytes, key: bytes, tokens: Sequence[int]) -> bool:
        header, _, _ = read_header(file, size, self.spec, parent, key)
        if tuple(header["tokens"]) != tuple(tokens):
            raise InvalidBlockFile("its token ids differ from the prompt's")
        return True

    def _reject(self, path: Path, reason: Exception) -> None:
        log.warning("ignoring KV cache file %s: %s; it will be rebuilt", path, reason)
        self.rejected += 1
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass

    # -- writing and the budget ----------------------------------------------------------------

    def _write_now(self, parent: bytes, key: bytes, tokens: tuple[int, ...], kv: Tensor) -> None:
        try:
            parts = encode_block(self.spec, parent, key, tokens, kv)
            nbytes = sum(len(part) for part in parts)
            if nbytes > self.budget_bytes:
                return  # one block would already exceed the budget
            _atomic_write(self.folder, self.path(parent, key), parts)
            self.written += 1
            self._account(nbytes)
        except InvalidBlockFile as exc:
            log.warning("not caching the KV of block %s: %s", key.hex(), exc)
        except OSError as exc:
            log.warning("could not write the KV cache file for %s: %s", key.hex(), exc)

    def _account(self, nbytes: int) -> None:
        """Count a written file; recount the root when other writers may have added files, and prune."""
        self._written_since_count += nbytes
        estimate = None if self._size is None else self._size + self._written_since_count
        if estimate is not None and estimate <= self.budget_bytes \
                and self._written_since_count < _RESCAN_SHARE * self.budget_bytes:
            return
        entries = _block_files(self.root)
        self._size = sum(size for _, size, _ in entries)
        self._written_since_count = 0
        if self._size > self.budget_bytes:
            self._prune(entries)

    def _prune(self, entries: list[tuple[float, int, Path]]) -> None:
        """Remove the least recently used files until the root is under 90% of its budget."""
        total = self._size
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= _PRUNE_TO * self.budget_bytes:
                break
            try:
                path.unlink()
            except FileNotFoundError:  # pruned meanwhile by another process
                pass
            except OSError:
                continue
            total -= size
            self.pruned += 1
        self._size = total


def _name(key: bytes) -> str:
    return key.hex() if key else "root"


def _open_regular(path: Path):
    """The file open for reading; a link, folder or pipe planted under a block's name is refused
    (opening a pipe without O_NONBLOCK would wait forever)."""
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InvalidBlockFile("it is not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _block_files(root: Path) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of the block files of every model folder under root; temporaries of
    writers that hung or died are removed on the way. Only folders with a model.json are looked at,
    and only files named like blocks: root may be a folder the user keeps other things in."""
    entries = []
    now = time.time()
    for folder in _model_folders(root):
        for path in folder.iterdir():
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.name.startswith(".tmp-") and now - info.st_mtime > _STALE_TMP_S:
                path.unlink(missing_ok=True)
            elif _BLOCK_FILE.fullmatch(path.name) and stat.S_ISREG(info.st_mode):
                entries.append((info.st_mtime, info.st_size, path))
    return entries


def _model_folders(root: Path) -> list[Path]:
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    return [child for child in children
            if not child.is_symlink() and child.is_dir() and (child / _MODEL_FILE).is_file()]


def _discard_older_formats(folder: Path) -> None:
    """Remove block files of earlier formats once per folder (they would never be read again: their
    MAC is missing, so lookups reject them one by one, and pruning would count them meanwhile)."""
    marker = folder / _FORMAT_FILE
    try:
        if marker.read_bytes() == MAGIC:
            return
    except OSError:
        pass
    for path in folder.iterdir():
        if _BLOCK_FILE.fullmatch(path.name) and not _has_magic(path):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a folder under a block's name: reads reject it, pruning skips it
                continue
    try:
        _atomic_write(folder, marker, [MAGIC])
    except OSError:
        pass


def _has_magic(path: Path) -> bool:
    try:
        with _open_regular(path) as file:
            return file.read(len(MAGIC)) == MAGIC
    except (OSError, InvalidBlockFile):
        return False


def _atomic_write(folder: Path, path: Path, parts: list) -> None:
    """Write parts to a temporary file beside path, then rename it over path in one step."""
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=".kv")
    try:
        with os.fdopen(descriptor, "wb") as file:
            for part in parts:
                file.write(part)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _make_private_folder(folder: Path) -> None:
    """Create folder and any missing parents readable by this user only: the blocks hold prompt text."""
    missing = []
    for level in (folder, *folder.parents):
        if level.is_dir():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:  # created meanwhile by another process, which chose its mode
            continue
        os.chmod(level, 0o700)  # mkdir's mode passes through the umask, which may strip even the owner's bits


def _remove_abandoned_temporaries(folder: Path) -> None:
    """Remove temporary files of writers that died (or hung) before renaming them into place."""
    for path in folder.glob(".tmp-*.kv"):
        try:
            if _abandoned(path):
                path.unlink(missing_ok=True)
        except OSError:  # gone already, or not ours to remove: it costs disk space, not correctness
            continue


def _abandoned(temporary: Path) -> bool:
    """Old enough that no writer can still be busy with it, or named after a process that has ended."""
    if time.time() - temporary.stat().st_mtime > _STALE_TMP_S:
        return True
    match = _TEMPORARY.fullmatch(temporary.name)  # names without a pid come from older versions
    pid = int(match.group(1)) if match else os.getpid()
    return pid != os.getpid() and not process_alive(pid)
