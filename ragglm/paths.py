"""Where ragglm keeps what it can rebuild: KV files, compiled kernels, measured rates."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "kv_cache_dir"]


def cache_root() -> Path:
    """$RAGGLM_CACHE_DIR, else $XDG_CACHE_HOME/ragglm, else ~/.cache/ragglm."""
    base = os.environ.get("RAGGLM_CACHE_DIR")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ragglm"


def kv_cache_dir() -> Path:
    """The prefix KV cache of processes that have no knowledge-base folder of their own."""
    return cache_root() / "kv"
