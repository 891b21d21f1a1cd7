"""One KV block file: its layout, and every check it passes before its KV is used.

Layout (format 2):

    "RAGGLMK2" | header length (8 bytes, little-endian) | header MAC (32) | header (JSON)
    | zero padding to a multiple of 64 | payload (the KV, raw) | block MAC (32)

The header names the format version, the model, the parent and own key, the block's token ids, the
dtype, the shape [L, 2, H_kv, n, D] and the payload's offset and size. Both MACs are HMAC-SHA256 with
the cache's secret key (see mac_key.py): the header MAC covers the length and header, so a header is
authenticated before it is parsed; the block MAC covers length, header and payload. Editing a file
therefore needs the key; a recomputed plain checksum is not enough. A signed file is still checked in
full (header size and nesting, field types, token ids inside the vocabulary and the block, shape and
dtype of this model, payload size exactly that of the shape, finite values), so that a file signed by
a buggy writer cannot crash a reader either. Any failure raises InvalidBlockFile.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import BinaryIO

import torch
from torch import Tensor

from ragglm.engine.cache.keys import block_key

__all__ = ["BlockSpec", "FORMAT_VERSION", "InvalidBlockFile", "MAGIC", "OLD_MAGICS", "encode_block",
           "read_block", "read_header"]

MAGIC = b"RAGGLMK2"
OLD_MAGICS = (b"RAGGLMKV",)  # format 1: a plain checksum, not a MAC; such files are discarded
FORMAT_VERSION = 2
MAC_BYTES = 32
_PREFIX = 16  # magic and header length
_ALIGN = 64  # payload offset alignment, so the bytes can be viewed as any dtype in place
_MAX_HEADER = 1 << 16  # a block of 4,096 token ids fits; a larger header is not ours
_MAX_BLOCK_TOKENS = 4096
_MAX_NESTING = 2  # an object holding lists
_TOKEN_LIMIT = 2**63  # block_key packs ids as signed 8-byte integers
_FIELDS = {"version", "model", "parent", "key", "tokens", "dtype", "shape", "payload_offset", "payload_bytes"}
_HEADER_CONTEXT = b"ragglm kv header\0"
_BLOCK_CONTEXT = b"ragglm kv block\0"


class InvalidBlockFile(ValueError):
    """The file is not a block of this model and key, or not whole; the message says why."""


@dataclass(frozen=True)
class BlockSpec:
    """What every block file of one store must match."""

    model_id: str
    layout: tuple[int, int, int]  # n_layers, n_kv_heads, head_dim
    dtype: torch.dtype
    secret: bytes
    vocab_size: int | None = None
    block_size: int | None = None  # None: any length up to _MAX_BLOCK_TOKENS

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def shape(self, n_tokens: int) -> list[int]:
        n_layers, n_kv_heads, head_dim = self.layout
        return [n_layers, 2, n_kv_heads, n_tokens, head_dim]

    def payload_bytes(self, n_tokens: int) -> int:
        return math.prod(self.shape(n_tokens)) * torch.empty((), dtype=self.dtype).element_size()

    def file_bytes(self, header_length: int, n_tokens: int) -> int:
        return _payload_offset(header_length) + self.payload_bytes(n_tokens) + MAC_BYTES


def encode_block(spec: BlockSpec, parent: bytes, key: bytes, tokens: tuple[int, ...], kv: Tensor) -> list:
    """The parts of the block's file, in order; refuses KV that a reader would reject."""
    _check_tokens(spec, list(tokens))
    if list(kv.shape) != spec.shape(len(tokens)) or kv.dtype != spec.dtype:
        raise InvalidBlockFile(f"KV of shape {list(kv.shape)} and {kv.dtype} does not fit this model")
    raw = kv.detach().to("cpu").contiguous()
    if not bool(torch.isfinite(raw).all()):
        raise InvalidBlockFile("the KV holds infinite or NaN values")
    payload = raw.view(torch.uint8).reshape(-1).numpy().tobytes()
    header = _header_bytes(spec, parent, key, tokens)
    prefix = MAGIC + len(header).to_bytes(8, "little")
    padding = bytes(_payload_offset(len(header)) - _PREFIX - MAC_BYTES - len(header))
    return [prefix, _header_mac(spec.secret, prefix, header), header, padding, payload,
            _block_mac(spec.secret, prefix, header, payload)]


def read_header(file: BinaryIO, size: int, spec: BlockSpec, parent: bytes, key: bytes) -> tuple[dict, bytes, bytes]:
    """(header, prefix, header bytes) of an open block file, authenticated and checked against spec."""
    prefix = _read_exactly(file, _PREFIX)
    if prefix[:8] in OLD_MAGICS:
        raise InvalidBlockFile("it was written by an older version of the cache")
    if prefix[:8] != MAGIC:
        raise InvalidBlockFile("it is not a KV block file")
    length = int.from_bytes(prefix[8:], "little")
    if not 0 < length <= _MAX_HEADER:
        raise InvalidBlockFile(f"its header length {length} is implausible")
    mac = _read_exactly(file, MAC_BYTES)
    encoded = _read_exactly(file, length)
    if not hmac.compare_digest(mac, _header_mac(spec.secret, prefix, encoded)):
        raise InvalidBlockFile("its header is not signed with this cache's key")
    header = _parse(encoded)
    _check_header(header, spec, parent, key)
    expected = spec.file_bytes(length, len(header["tokens"]))
    if header["payload_offset"] != _payload_offset(length) or size != expected:
        raise InvalidBlockFile(f"it is {size} bytes, not the {expected} its shape needs")
    return header, prefix, encoded


def read_block(file: BinaryIO, size: int, spec: BlockSpec, parent: bytes, key: bytes,
               tokens: tuple[int, ...]) -> Tensor:
    """The block's KV [L, 2, H_kv, n, D] from an open file, after every check."""
    header, prefix, encoded = read_header(file, size, spec, parent, key)
    if tuple(header["tokens"]) != tuple(tokens):
        raise InvalidBlockFile("its token ids differ from the prompt's")
    file.seek(header["payload_offset"])
    payload = bytearray(header["payload_bytes"])  # a size checked against the shape, not trusted
    if file.readinto(payload) != len(payload):
        raise InvalidBlockFile("it is shorter than its shape needs")
    mac = _read_exactly(file, MAC_BYTES)
    if not hmac.compare_digest(mac, _block_mac(spec.secret, prefix, encoded, payload)):
        raise InvalidBlockFile("its contents are not signed with this cache's key")
    kv = torch.frombuffer(payload, dtype=spec.dtype).reshape(header["shape"])
    if not bool(torch.isfinite(kv).all()):
        raise InvalidBlockFile("its KV holds infinite or NaN values")
    return kv


# -- encoding --------------------------------------------------------------------------------------

def _header_bytes(spec: BlockSpec, parent: bytes, key: bytes, tokens: tuple[int, ...]) -> bytes:
    header = {
        "version": FORMAT_VERSION, "model": spec.model_id, "parent": parent.hex(), "key": key.hex(),
        "tokens": list(tokens), "dtype": spec.dtype_name, "shape": spec.shape(len(tokens)),
        "payload_bytes": spec.payload_bytes(len(tokens)), "payload_offset": 0,
    }
    # The offset depends on the header's length, which depends on the offset's digits: settle it.
    for _ in range(3):
        encoded = json.dumps(header, separators=(",", ":")).encode()
        if header["payload_offset"] == _payload_offset(len(encoded)):
            return encoded
        header["payload_offset"] = _payload_offset(len(encoded))
    raise AssertionError("the payload offset did not settle")


def _payload_offset(header_length: int) -> int:
    return -(-(_PREFIX + MAC_BYTES + header_length) // _ALIGN) * _ALIGN


def _header_mac(secret: bytes, prefix: bytes, header: bytes) -> bytes:
    return hmac.new(secret, _HEADER_CONTEXT + prefix + header, hashlib.sha256).digest()


def _block_mac(secret: bytes, prefix: bytes, header: bytes, payload) -> bytes:
    mac = hmac.new(secret, _BLOCK_CONTEXT + prefix + header, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


# -- checks ----------------------------------------------------------------------------------------

def _read_exactly(file: BinaryIO, n: int) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise InvalidBlockFile("it is shorter than its layout needs")
    return data


def _parse(encoded: bytes) -> dict:
    """JSON of a bounded nesting depth (checked before parsing: deep nesting exhausts the stack)."""
    if _nesting_depth(encoded) > _MAX_NESTING:
        raise InvalidBlockFile("its header is nested too deeply")
    try:
        header = json.loads(encoded.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBlockFile(f"its header is not JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidBlockFile(f"its header holds an implausible number: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidBlockFile("its header is not a JSON object")
    return header


def _nesting_depth(encoded: bytes, limit: int = _MAX_NESTING) -> int:
    """Deepest nesting of arrays and objects, counting no further than limit + 1."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in encoded:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise InvalidBlockFile(f"its header holds {name}")


def _check_header(header: dict, spec: BlockSpec, parent: bytes, key: bytes) -> None:
    if set(header) != _FIELDS:
        raise InvalidBlockFile(f"its header has the fields {sorted(header)}")
    if header["version"] != FORMAT_VERSION:
        raise InvalidBlockFile(f"it has format version {header['version']!r}, not {FORMAT_VERSION}")
    if header["model"] != spec.model_id:
        raise InvalidBlockFile("it was written for another model, quantization or dtype")
    if header["dtype"] != spec.dtype_name:
        raise InvalidBlockFile(f"it holds {header['dtype']!r}, not {spec.dtype_name}")
    tokens = header["tokens"]
    _check_tokens(spec, tokens)
    if header["parent"] != parent.hex() or header["key"] != key.hex() or block_key(parent, tokens) != key:
        raise InvalidBlockFile("its token ids do not hash to its name")
    if header["shape"] != spec.shape(len(tokens)):
        raise InvalidBlockFile(f"its shape {header['shape']!r} does not fit this model")
    sizes = (header["payload_offset"], header["payload_bytes"])
    if not all(map(_is_int, sizes)) or sizes[1] != spec.payload_bytes(len(tokens)):
        raise InvalidBlockFile("its payload size does not match its shape and dtype")


def _check_tokens(spec: BlockSpec, tokens) -> None:
    if not isinstance(tokens, list):
        raise InvalidBlockFile("its token ids are not a list")
    wanted = spec.block_size
    if (wanted is not None and len(tokens) != wanted) or not 0 < len(tokens) <= _MAX_BLOCK_TOKENS:
        raise InvalidBlockFile(f"it holds {len(tokens)} tokens, not a block of {wanted or 'at most 4096'}")
    limit = _TOKEN_LIMIT if spec.vocab_size is None else spec.vocab_size
    if not all(_is_int(token) and 0 <= token < limit for token in tokens):
        raise InvalidBlockFile(f"its token ids are not all integers in [0, {limit})")


def _is_int(value) -> bool:
    return type(value) is int  # bool is an int subclass, and 1.0 == 1: neither is a token id or size
