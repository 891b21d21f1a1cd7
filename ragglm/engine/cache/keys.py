"""Keys of cached prefixes: one hash names a block and, through its parent, everything before it."""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Sequence

__all__ = ["ROOT", "block_key"]

ROOT = b""  # key of the empty prefix


def block_key(parent: bytes, tokens: Sequence[int]) -> bytes:
    """16-byte key of the prefix that ends with this block (stable across processes and machines)."""
    digest = hashlib.blake2b(parent, digest_size=16)
    ids = array("q", tokens)  # 8-byte signed ints
    if sys.byteorder != "little":
        ids.byteswap()
    digest.update(ids.tobytes())
    return digest.digest()
