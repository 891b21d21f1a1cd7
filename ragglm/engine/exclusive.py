"""One lock per engine (or knowledge base): a model's KV cache serves one generation at a time."""

from __future__ import annotations

import threading
import weakref

__all__ = ["exclusive"]

_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def exclusive(owner) -> threading.RLock:
    """The lock every user of `owner` takes around generation; re-entrant within a thread."""
    with _guard:
        lock = _locks.get(owner)
        if lock is None:
            lock = _locks[owner] = threading.RLock()
        return lock
