"""Walk a GGUF file's header with every count and length checked against the bytes left.

The gguf package believes what a header says: an array length of 2**40 makes it loop 2**40 times,
and a tensor whose offset lies past the end becomes an empty view that fails later, far from the
cause. This walk reads the same layout (v2 and v3: magic, version, tensor count, metadata count,
the metadata, the tensor descriptions, then aligned data) from a memory map, and refuses a file as
soon as a stated size cannot fit in what remains, so it never does more work than the file's size
allows and nothing is read from a file that has failed it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from ragglm.errors import ModelNotFoundError

__all__ = ["GGUFLayout", "check_gguf"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 4  # arrays of arrays; real files use one level

# metadata value types: (struct code, size); strings (8) and arrays (9) are variable
_SCALARS = {0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
            6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8)}
_STRING, _ARRAY = 8, 9
_MIN_SIZE = {**{kind: size for kind, (_, size) in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}

_FIX = "the download is incomplete or the file is damaged or crafted; download or convert the model again"


@dataclass
class GGUFLayout:
    version: int
    tensor_count: int
    metadata_count: int
    data_start: int
    parameter_count: int = 0  # elements of all tensors: the model's size without reading a weight
    languages: tuple[str, ...] | None = None  # general.languages, when the file says


class _Cursor:
    """Reads from the map, each read first checked against the bytes left."""

    def __init__(self, data, name: str):
        self.data, self.name, self.at, self.order = data, name, 0, "<"

    def fail(self, problem: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"{self.name}: not a valid GGUF file: {problem}; {_FIX}")

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def need(self, size: int, what: str) -> None:
        if size > self.left:
            raise self.fail(f"{what} needs {size} bytes at offset {self.at}, but only {self.left} remain")

    def unpack(self, code: str, size: int, what: str):
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + code, self.data, self.at)
        self.at += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def string(self, what: str) -> str:
        length = self.u64(f"the length of {what}")
        self.need(length, what)
        raw = bytes(self.data[self.at:self.at + length])
        self.at += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} at offset {self.at - length} is not UTF-8") from exc

    def count(self, what: str, each: int) -> int:
        """A stated number of items, each at least `each` bytes, that must fit in the rest of the file."""
        n = self.u64(what)
        if n * each > self.left:
            raise self.fail(f"{what} is {n}, but {self.left} bytes remain (room for at most {self.left // each})")
        return n


def check_gguf(path: Path, quant_sizes: dict[int, tuple[int, int]]) -> GGUFLayout:
    """The file's layout once every part of it is within the file.

    quant_sizes maps each GGML tensor type to (elements per block, bytes per block).
    """
    with open(path, "rb") as file:
        if file.seek(0, 2) == 0:
            raise ModelNotFoundError(f"{path}: not a valid GGUF file: it is empty; {_FIX}")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk(_Cursor(data, str(path)), quant_sizes)


def _walk(cursor: _Cursor, quant_sizes) -> GGUFLayout:
    cursor.need(4, "the magic number")
    if bytes(cursor.data[:4]) != _MAGIC:
        raise cursor.fail("it does not start with GGUF")
    cursor.at = 4
    version = _version(cursor)
    tensor_count = cursor.count("the tensor count", 8 + 4 + 4 + 8)
    metadata_count = cursor.count("the metadata count", 8 + 4 + 1)
    alignment, languages = _metadata(cursor, metadata_count)
    tensors = [_tensor(cursor, quant_sizes) for _ in range(tensor_count)]
    data_start = -(-cursor.at // alignment) * alignment
    _check_tensor_data(cursor, [t[:3] for t in tensors], data_start)
    return GGUFLayout(version, tensor_count, metadata_count, data_start, sum(t[3] for t in tensors), languages)


def _version(cursor: _Cursor) -> int:
    version = cursor.u32("the version")
    if version & 0xFFFF == 0:  # written on a big-endian machine
        cursor.order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in _VERSIONS:
        raise cursor.fail(f"version {version} is not one that can be read ({', '.join(map(str, _VERSIONS))} are)")
    return version


def _metadata(cursor: _Cursor, count: int) -> tuple[int, tuple[str, ...] | None]:
    """Walk the metadata; the data alignment it sets (general.alignment), or the default, and
    general.languages when present."""
    alignment, seen, languages = _DEFAULT_ALIGNMENT, set(), None
    for _ in range(count):
        key = cursor.string("a metadata key")
        if key in seen:
            raise cursor.fail(f"metadata key {key!r} appears twice")
        seen.add(key)
        kind = cursor.u32(f"the type of {key!r}")
        if key == "general.languages" and kind == _ARRAY:
            languages = _strings(cursor, key)
            continue
        value = _value(cursor, kind, key, 0)
        if key == "general.alignment":
            if kind != 4 or value == 0 or value & (value - 1):
                raise cursor.fail(f"general.alignment is {value!r}, not a power of two")
            alignment = value
    return alignment, languages


def _strings(cursor: _Cursor, key: str) -> tuple[str, ...] | None:
    """An array's strings; None (and the array skipped) when it holds something else."""
    at = cursor.at
    if cursor.u32(f"the item type of {key!r}") != _STRING:
        cursor.at = at
        _array(cursor, key, 0)
        return None
    n = cursor.count(f"the length of array {key!r}", _MIN_SIZE[_STRING])
    return tuple(cursor.string(f"an item of {key!r}") for _ in range(n))


def _value(cursor: _Cursor, kind: int, key: str, depth: int):
    """The value of a scalar (others are skipped: only general.alignment is needed)."""
    if kind in _SCALARS:
        return cursor.unpack(*_SCALARS[kind], f"the value of {key!r}")
    if kind == _STRING:
        cursor.string(f"the value of {key!r}")
        return None
    if kind == _ARRAY:
        if depth >= _MAX_NESTING:
            raise cursor.fail(f"metadata {key!r} nests arrays more than {_MAX_NESTING} deep")
        _array(cursor, key, depth)
        return None
    raise cursor.fail(f"metadata {key!r} has value type {kind}, which GGUF does not define")


def _array(cursor: _Cursor, key: str, depth: int) -> None:
    item = cursor.u32(f"the item type of {key!r}")
    if item not in _MIN_SIZE:
        raise cursor.fail(f"metadata {key!r} is an array of type {item}, which GGUF does not define")
    n = cursor.count(f"the length of array {key!r}", _MIN_SIZE[item])
    if item in _SCALARS:  # fixed-size items: skip them all at once
        cursor.at += n * _SCALARS[item][1]
        return
    for _ in range(n):  # each item takes at least 8 bytes, so this loop is bounded by the file size
        _value(cursor, item, key, depth + 1)


def _tensor(cursor: _Cursor, quant_sizes) -> tuple[str, int, int, int]:
    """(name, offset, size in bytes, elements) of one tensor description."""
    name = cursor.string("a tensor name")
    n_dims = cursor.u32(f"the dimension count of tensor {name!r}")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise cursor.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {_MAX_DIMS} are allowed)")
    dims = [cursor.u64(f"a dimension of tensor {name!r}") for _ in range(n_dims)]
    kind = cursor.u32(f"the type of tensor {name!r}")
    if kind not in quant_sizes:
        raise cursor.fail(f"tensor {name!r} has type {kind}, which is not a known GGML type")
    block, block_bytes = quant_sizes[kind]
    if dims[0] % block:
        raise cursor.fail(f"tensor {name!r} has a row of {dims[0]} elements, not a multiple of its block of {block}")
    elements = 1
    for size in dims:
        elements *= size
    offset = cursor.u64(f"the data offset of tensor {name!r}")
    return name, offset, elements // block * block_bytes, elements


def _check_tensor_data(cursor: _Cursor, tensors: list[tuple[str, int, int]], data_start: int) -> None:
    data_size = len(cursor.data) - data_start
    if data_size < 0:
        raise cursor.fail("the file ends before its tensor data starts")
    names, previous_end, previous = set(), 0, None
    for name, offset, size in sorted(tensors, key=lambda t: t[1]):
        if name in names:
            raise cursor.fail(f"tensor {name!r} is described twice")
        names.add(name)
        if offset + size > data_size:
            raise cursor.fail(f"tensor {name!r} lies at bytes {offset}..{offset + size} of a data section "
                              f"of {data_size} bytes")
        if size and offset < previous_end:
            raise cursor.fail(f"tensors {previous!r} and {name!r} share bytes")
        if size:
            previous_end, previous = offset + size, name
