"""The secret key that signs KV block files, one per cache folder, private to the user.

A plain checksum can be recomputed by whoever edits a file; an HMAC needs this key, which lives in
the cache root with mode 0600 and is created on first use. A key file that is not a private regular
file of this user is replaced (every file signed with it is then rebuilt: they are a cache).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

__all__ = ["KEY_BYTES", "KEY_NAME", "load_or_create_key"]

log = logging.getLogger("ragglm.engine")

KEY_NAME = "kv-mac.key"
KEY_BYTES = 32
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def load_or_create_key(root: Path) -> bytes:
    """The key in root, created (or replaced, when unsafe) on first use.

    Where the folder cannot hold one, a key for this process only: its files are then rejected by
    later processes and rebuilt, which costs time but never trusts a file it cannot authenticate.
    """
    path = Path(root) / KEY_NAME
    try:
        return _read_private_key(path) or _install_new_key(path)
    except OSError as exc:
        log.warning("cannot keep a KV cache key in %s (%s); disk KV is signed for this process only", root, exc)
        return secrets.token_bytes(KEY_BYTES)


def _read_private_key(path: Path) -> bytes | None:
    """The key, or None when absent or not safe to trust (a link, shared, someone else's, wrong size)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:  # a symbolic link (ELOOP) or unreadable: replace it
        return None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not _private_regular_file(info) or info.st_size != KEY_BYTES:
            return None
        key = file.read(KEY_BYTES + 1)
    return key if len(key) == KEY_BYTES else None


def _private_regular_file(info: os.stat_result) -> bool:
    if not stat.S_ISREG(info.st_mode):
        return False
    if os.name != "posix":
        return True
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def _install_new_key(path: Path) -> bytes:
    """Write a fresh key beside path and move it into place; a key another process placed first wins."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")  # created 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)  # fails where a key exists, so a concurrent creator's key is kept
        except OSError:  # one exists, or the file system has no hard links
            if _read_private_key(path) is None:
                os.replace(temporary, path)  # an unsafe key is never trusted: ours replaces it
    finally:
        Path(temporary).unlink(missing_ok=True)
    key = _read_private_key(path)
    if key is None:
        raise OSError(f"{path} could not be made a private key file")
    return key
