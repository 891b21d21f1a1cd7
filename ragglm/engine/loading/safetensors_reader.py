"""Read and write .safetensors files one tensor at a time with plain file reads and writes.

Memory-mapping a shard (as `safetensors.safe_open` does) leaves every page it has touched resident
in the process until the file is closed, so a 1.6 GB shard counts 1.6 GB towards peak RSS on top of
the tensors taken from it. Reading each tensor into its own buffer keeps only what the caller holds.
Writing likewise takes tensors from a stream, so they need not all be in memory at once (nor a
serialized copy of them, as `safetensors.torch.save_file` makes).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ragglm.engine.loading.safetensors_header import read_header
from ragglm.errors import ModelNotFoundError

__all__ = ["SafetensorsFile", "iter_safetensors", "write_safetensors"]

_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class SafetensorsFile:
    """keys() and get_tensor(name) over an open file; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close() / __exit__)
        try:
            size = os.fstat(self._file.fileno()).st_size
            self._data_start, self._entries, self.metadata = read_header(self._file, size, str(self.path))
        except BaseException:
            self._file.close()
            raise

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


def write_safetensors(path: str | Path, tensors: Iterable[tuple[str, torch.Tensor]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write (name, tensor) pairs as they come; each may be freed by the caller once written.

    The header, which lists every tensor, goes first in the file, so the data is written to a
    scratch file beside `path` and copied after the header once the stream is done.
    """
    path = Path(path)
    scratch = path.with_name(path.name + ".data")
    header: dict[str, dict] = {}
    offset = 0
    try:
        with open(scratch, "wb") as data:
            for name, tensor in tensors:
                if name in header:
                    raise ValueError(f"{path}: tensor {name!r} given twice")
                if tensor.dtype not in _NAMES:
                    raise ValueError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which safetensors "
                                     f"files here do not hold ({', '.join(map(str, _NAMES))} do)")
                raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                data.write(memoryview(raw.numpy()))
                header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                                "data_offsets": [offset, offset + raw.numel()]}
                offset += raw.numel()
                del tensor, raw
        if metadata:
            header = {"__metadata__": metadata, **header}
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
        with open(path, "wb") as out, open(scratch, "rb") as data:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            shutil.copyfileobj(data, out, 16 * 2**20)
    finally:
        scratch.unlink(missing_ok=True)
