"""Read .safetensors files one tensor at a time with plain file reads.

Memory-mapping a shard (as `safetensors.safe_open` does) leaves every page it has touched resident
in the process until the file is closed, so a 1.6 GB shard counts 1.6 GB towards peak RSS on top of
the tensors taken from it. Reading each tensor into its own buffer keeps only what the caller holds.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.errors import ModelNotFoundError

__all__ = ["SafetensorsFile", "iter_safetensors"]

_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 2**20


class SafetensorsFile:
    """keys() and get_tensor(name) over an open file; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close() / __exit__)
        try:
            (size,) = struct.unpack("<Q", self._file.read(8))
            if size > _MAX_HEADER:
                raise ModelNotFoundError(f"{self.path}: not a safetensors file (header of {size} bytes)")
            header = json.loads(self._file.read(size))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._file.close()
            raise ModelNotFoundError(f"{self.path}: not a readable safetensors file ({exc})") from exc
        self._data_start = 8 + size
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def keys(self) -> list[str]:
        """Names in the order their bytes lie in the file (reading them in turn reads the file forward)."""
        return sorted(self._entries, key=lambda name: self._entries[name]["data_offsets"][0])

    def get_tensor(self, name: str) -> torch.Tensor:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFoundError(f"{self.path}: no tensor named {name!r}")
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ModelNotFoundError(f"{self.path}: tensor {name!r} has dtype {entry['dtype']}, which is not "
                                     f"supported ({', '.join(_DTYPES)} are); convert the checkpoint to bf16")
        begin, end = entry["data_offsets"]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        self._file.seek(self._data_start + begin)
        view = memoryview(buffer.numpy())
        read = 0
        while read < len(view):
            got = self._file.readinto(view[read:])
            if not got:
                raise ModelNotFoundError(f"{self.path}: file ends inside tensor {name!r}; the download is incomplete")
            read += got
        return buffer.view(dtype).reshape(entry["shape"])


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one file, each read when asked for."""
    with SafetensorsFile(path) as f:
        for name in f.keys():
            yield name, f.get_tensor(name)
