"""Check a .safetensors header against its file before any tensor is read.

Every size a header states is believed by the reader (it allocates a buffer of `end - begin` bytes
for each tensor), so a crafted or damaged header must be refused here, while only the header has
been read: offsets outside the file, sizes that disagree with shape and dtype, tensors that share
bytes, a header too large to be one.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

from ragglm.errors import ModelNotFoundError

__all__ = ["MAX_HEADER_BYTES", "ITEM_SIZES", "read_header"]

# far above any real checkpoint's (a 2,000-tensor model's header is about 300 kB), and a bound on
# what a crafted length can make us read and parse
MAX_HEADER_BYTES = 100 * 2**20

# every dtype the safetensors format defines, with its bytes per element, whether or not this
# engine computes in it: sizes are checked for all of them
ITEM_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}

_FIX = "the download is incomplete or the file is damaged or crafted; download or convert the model again"


def read_header(file: BinaryIO, file_size: int, name: str) -> tuple[int, dict, dict]:
    """(where the data starts, {tensor: entry}, metadata) of the open file, every entry checked."""
    length = _header_length(file, file_size, name)
    header = _parse(file.read(length), name)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _bad(name, "its __metadata__ is not an object")
    data_size = file_size - 8 - length
    spans = [(*_checked_entry(tensor, entry, data_size, name), tensor) for tensor, entry in header.items()]
    _check_disjoint(spans, name)
    return 8 + length, header, metadata


def _bad(name: str, problem: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"{name}: not a valid safetensors file: {problem}; {_FIX}")


def _header_length(file: BinaryIO, file_size: int, name: str) -> int:
    prefix = file.read(8)
    if len(prefix) < 8:
        raise _bad(name, f"it is {file_size} bytes long, too short for a header")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise _bad(name, f"its header claims {length} bytes (at most {MAX_HEADER_BYTES} are read)")
    if length > file_size - 8:
        raise _bad(name, f"its header claims {length} bytes but the file has {file_size - 8} after the length")
    return length


def _parse(raw: bytes, name: str) -> dict:
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(name, f"its header is not JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(header, dict):
        raise _bad(name, "its header is not a JSON object")
    return header


def _is_count(value) -> bool:
    # bool is an int subclass, and true/false are not sizes
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_entry(tensor: str, entry, data_size: int, name: str) -> tuple[int, int]:
    """(begin, end) of one tensor's bytes, relative to the data start, once its entry is consistent."""
    if not isinstance(entry, dict):
        raise _bad(name, f"tensor {tensor!r} is described by {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEM_SIZES:
        raise _bad(name, f"tensor {tensor!r} has dtype {dtype!r}, which safetensors does not define")
    if not isinstance(shape, list) or not all(map(_is_count, shape)):
        raise _bad(name, f"tensor {tensor!r} has shape {shape!r}, not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise _bad(name, f"tensor {tensor!r} has data_offsets {offsets!r}, not [begin, end]")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise _bad(name, f"tensor {tensor!r} lies at bytes {begin}..{end} of a data section of {data_size} bytes")
    expected = ITEM_SIZES[dtype]
    for size in shape:
        expected *= size
    if expected != end - begin:
        raise _bad(name, f"tensor {tensor!r} of shape {shape} and dtype {dtype} needs {expected} bytes, "
                         f"but its offsets span {end - begin}")
    return begin, end


def _check_disjoint(spans: list[tuple[int, int, str]], name: str) -> None:
    previous_end, previous = 0, None
    for begin, end, tensor in sorted(spans):
        if begin == end:
            continue  # an empty tensor occupies no bytes, wherever it points
        if begin < previous_end:
            raise _bad(name, f"tensors {previous!r} and {tensor!r} share bytes")
        previous_end, previous = end, tensor
