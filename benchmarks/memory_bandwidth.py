"""Memory read bandwidth measured in the calling process: the floor under batch-1 decode, which
reads every weight once a token."""

from __future__ import annotations

import time

import torch

__all__ = ["read_bandwidth_gb_s"]


def read_bandwidth_gb_s(size_bytes: int = 1 << 30) -> float:
    """Best of several full reads of a buffer much larger than the caches."""
    buffer = torch.ones(size_bytes // 4)
    buffer.sum()
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        buffer.sum()
        best = max(best, size_bytes / (time.perf_counter() - started) / 1e9)
    del buffer
    return best
