"""KV blocks on disk: one file per block, written atomically, verified before it is trusted.

A file is named `<parent key>-<key>.kv` and holds a JSON header (format version, model id, the block's
token ids, dtype, shape, a checksum of the payload) followed by the raw tensor bytes. Writers go
through a temporary file and `os.replace`, so a reader (in this process or another) sees either the
whole old file, the whole new one, or none. A file whose header, size, key, model or checksum does
not match is removed and counted in `rejected`; the caller recomputes the block and writes it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ragglm.processes import process_alive

__all__ = ["KVFileStore", "ROOT", "block_key", "default_disk_budget_bytes"]

log = logging.getLogger("ragglm.engine")

ROOT = b""  # key of the empty prefix
MAGIC = b"RAGGLMKV"
FORMAT_VERSION = 1
_ALIGN = 64  # payload offset alignment, so the bytes can be viewed as any dtype in place
_MAX_HEADER = 1 << 22
_STALE_TMP_S = 600.0  # a block is written in well under a second; older temporaries are abandoned
_TEMPORARY = re.compile(r"\.tmp-(\d+)-.*\.kv")


def block_key(parent: bytes, tokens: Sequence[int]) -> bytes:
    """16-byte key of the prefix that ends with this block (stable across processes and machines)."""
    digest = hashlib.blake2b(parent, digest_size=16)
    ids = array("q", tokens)  # 8-byte signed ints
    if sys.byteorder != "little":
        ids.byteswap()
    digest.update(ids.tobytes())
    return digest.digest()


def default_disk_budget_bytes(folder: Path, limit_bytes: int = 8 * 2**30) -> int:
    """RAGGLM_DISK_CACHE_MB if set, else limit_bytes (8 GiB for the per-user cache) or a quarter of the
    free disk, whichever is less."""
    configured = os.environ.get("RAGGLM_DISK_CACHE_MB")
    if configured:
        return int(float(configured) * 2**20)
    return min(limit_bytes, shutil.disk_usage(folder).free // 4)


class KVFileStore:
    """Files of KV blocks for one model (one folder per model fingerprint)."""

    def __init__(self, folder: str | Path, fingerprint: dict, layout: tuple[int, int, int],
                 dtype: torch.dtype, budget_bytes: int | None = None):
        self.folder = Path(folder)
        _make_private_folder(self.folder)
        _remove_abandoned_temporaries(self.folder)
        self.fingerprint = fingerprint
        self.model_id = self.fingerprint_id(fingerprint)
        self.layout = layout  # n_layers, n_kv_heads, head_dim
        self.dtype = dtype
        self.budget_bytes = default_disk_budget_bytes(self.folder) if budget_bytes is None else budget_bytes
        self.rejected = 0  # files found corrupt or stale (and removed)
        self.written = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragglm-kv-writer")
        self._pending: list[Future] = []
        self._pending_lock = threading.Lock()
        self._size: int | None = None  # bytes in the folder, counted at the first write
        model_file = self.folder / "model.json"
        if not model_file.exists():
            _atomic_write(self.folder, model_file, [json.dumps(fingerprint, indent=1).encode()])

    @staticmethod
    def fingerprint_id(fingerprint: dict) -> str:
        return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()

    def path(self, parent: bytes, key: bytes) -> Path:
        return self.folder / f"{_name(parent)}-{key.hex()}.kv"

    def contains(self, parent: bytes, key: bytes, tokens: Sequence[int]) -> bool:
        """True when the block's file exists and its header checks out (the payload is not read)."""
        header = self._header(self.path(parent, key), parent)
        return header is not None and tuple(header["tokens"]) == tuple(tokens)

    def children(self, parent: bytes) -> list[tuple[bytes, tuple[int, ...]]]:
        """(key, token ids) of the blocks stored after parent."""
        found = []
        for path in self.folder.glob(f"{_name(parent)}-*.kv"):
            header = self._header(path, parent)
            if header is not None:
                found.append((bytes.fromhex(header["key"]), tuple(header["tokens"])))
        return found

    def read(self, parent: bytes, key: bytes, tokens: Sequence[int]) -> Tensor | None:
        """The block's KV [L, 2, H_kv, n, D] on CPU, or None when absent, corrupt or stale."""
        path = self.path(parent, key)
        try:
            with open(path, "rb") as file:
                header = self._parse_header(file, os.fstat(file.fileno()).st_size, path, parent)
                if tuple(header["tokens"]) != tuple(tokens):
                    raise ValueError("its token ids differ from the prompt's")
                payload = bytearray(header["payload_bytes"])
                file.seek(header["payload_offset"])
                if file.readinto(payload) != len(payload):
                    raise ValueError("it is shorter than its header says")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._reject(path, exc)
            return None
        if _checksum(payload) != header["checksum"]:
            self._reject(path, ValueError("its checksum does not match its contents"))
            return None
        shape = header["shape"]
        count = shape[0] * shape[1] * shape[2] * shape[3] * shape[4]
        kv = torch.frombuffer(payload, dtype=self.dtype, count=count).reshape(shape)
        try:
            os.utime(path)  # recently used files survive pruning
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

    # -- internals -----------------------------------------------------------------------------

    def _write_now(self, parent: bytes, key: bytes, tokens: tuple[int, ...], kv: Tensor) -> None:
        try:
            raw = kv.detach().to("cpu").contiguous().view(torch.uint8).reshape(-1)
            nbytes = raw.numel()
            pad = -nbytes % 8
            if pad:
                raw = torch.cat((raw, torch.zeros(pad, dtype=torch.uint8)))
            header = {
                "version": FORMAT_VERSION, "model": self.model_id, "parent": parent.hex(), "key": key.hex(),
                "tokens": list(tokens), "dtype": str(self.dtype).removeprefix("torch."),
                "shape": list(kv.shape), "payload_bytes": raw.numel(), "checksum": _checksum(raw),
            }
            encoded = json.dumps(header).encode()
            offset = -(-(16 + len(encoded)) // _ALIGN) * _ALIGN
            header["payload_offset"] = offset
            encoded = json.dumps(header).encode()
            offset = -(-(16 + len(encoded)) // _ALIGN) * _ALIGN
            if offset != header["payload_offset"]:  # the offset's own digits moved the boundary
                header["payload_offset"] = offset
                encoded = json.dumps(header).encode()
            encoded = encoded.ljust(offset - 16)
            path = self.path(parent, key)
            _atomic_write(self.folder, path, [MAGIC, len(encoded).to_bytes(8, "little"), encoded,
                                               raw.numpy()])
            self.written += 1
            if self._size is None:
                self._size = sum(p.stat().st_size for p in self.folder.glob("*.kv"))
            else:
                self._size += offset + raw.numel()
            if self._size > self.budget_bytes:
                self._prune()
        except OSError as exc:
            log.warning("could not write the KV cache file for %s: %s", key.hex(), exc)

    def _prune(self) -> None:
        """Remove the least recently used files until the folder is under 90% of its budget."""
        now = time.time()
        entries = []
        for path in self.folder.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.name.startswith(".tmp-") and now - stat.st_mtime > _STALE_TMP_S:
                path.unlink(missing_ok=True)  # left by a writer that hung or died
            elif path.suffix == ".kv":
                entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= 0.9 * self.budget_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._size = total

    def _header(self, path: Path, parent: bytes) -> dict | None:
        try:
            with open(path, "rb") as file:
                return self._parse_header(file, os.fstat(file.fileno()).st_size, path, parent)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._reject(path, exc)
            return None

    def _parse_header(self, file, size: int, path: Path, parent: bytes) -> dict:
        """The header of an open block file, checked against its name, this model and its size."""
        prefix = file.read(16)
        if len(prefix) != 16 or prefix[:8] != MAGIC:
            raise ValueError("it is not a KV block file")
        length = int.from_bytes(prefix[8:], "little")
        if length > _MAX_HEADER:
            raise ValueError("its header length is implausible")
        header = json.loads(file.read(length))
        if header["version"] != FORMAT_VERSION:
            raise ValueError(f"it has format version {header['version']}, not {FORMAT_VERSION}")
        if header["model"] != self.model_id:
            raise ValueError("it was written for another model, quantization or dtype")
        tokens = header["tokens"]
        key = block_key(parent, tokens).hex()
        if header["parent"] != parent.hex() or header["key"] != key or path.name != f"{_name(parent)}-{key}.kv":
            raise ValueError("its token ids do not hash to its name")
        n_layers, n_kv_heads, head_dim = self.layout
        if header["shape"] != [n_layers, 2, n_kv_heads, len(tokens), head_dim]:
            raise ValueError(f"its shape {header['shape']} does not fit this model")
        if header["dtype"] != str(self.dtype).removeprefix("torch."):
            raise ValueError(f"it holds {header['dtype']}, not {self.dtype}")
        if header["payload_offset"] + header["payload_bytes"] != size:
            raise ValueError(f"it is {size} bytes, not the {header['payload_offset'] + header['payload_bytes']} its header says")
        return header

    def _reject(self, path: Path, reason: Exception) -> None:
        log.warning("ignoring KV cache file %s: %s; it will be rebuilt", path, reason)
        self.rejected += 1
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _name(key: bytes) -> str:
    return key.hex() if key else "root"


def _checksum(payload) -> int:
    """Wrapping 64-bit sum of the payload's 8-byte words: catches truncation, zeroed or flipped bytes."""
    words = payload.view(torch.int64) if isinstance(payload, Tensor) else torch.frombuffer(payload, dtype=torch.int64)
    return int(words.sum())


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
