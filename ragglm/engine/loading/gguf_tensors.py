"""A GGUF file's tensors read one at a time from a memory map, each tensor's pages dropped once read.

The data section is mapped read-only; a tensor is a view of its raw blocks. Touched pages of a
file mapping count towards the process's resident size until it is unmapped, so a whole model
read through one map would be counted twice (the map, and the engine's own copy). `release`
hands each tensor's pages back with MADV_DONTNEED once its conversion is done: they stay in the
page cache, outside this process's resident set.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GGUFTensor", "GGUFData", "open_gguf_data"]

_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    kind: int  # GGMLQuantizationType value
    shape: tuple[int, ...]  # outermost first, as torch lists it ([out, in] for a linear weight)
    start: int  # absolute byte offset in the file
    nbytes: int

    @property
    def rows(self) -> int:
        rows = 1
        for size in self.shape[:-1]:
            rows *= size
        return rows


class GGUFData:
    """Raw bytes of the tensors of one mapped file."""

    def __init__(self, data: mmap.mmap):
        self._data = data

    def raw(self, tensor: GGUFTensor) -> np.ndarray:
        """uint8 [rows, bytes per row]: a view of the map (valid until the file is closed)."""
        flat = np.frombuffer(self._data, dtype=np.uint8, count=tensor.nbytes, offset=tensor.start)
        return flat.reshape(tensor.rows, -1)

    def release(self, tensor: GGUFTensor) -> None:
        """Drop the tensor's whole pages from this process's resident set (a no-op where unsupported)."""
        first = -(-tensor.start // _PAGE) * _PAGE
        end = (tensor.start + tensor.nbytes) // _PAGE * _PAGE
        if end > first and hasattr(self._data, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._data.madvise(mmap.MADV_DONTNEED, first, end - first)


@contextmanager
def open_gguf_data(path: Path) -> Iterator[GGUFData]:
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            data.madvise(mmap.MADV_SEQUENTIAL)
        view = GGUFData(data)
        try:
            yield view
        finally:
            del view
