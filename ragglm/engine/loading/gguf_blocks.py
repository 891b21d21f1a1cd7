"""One GGUF tensor's raw blocks -> a float tensor or a QuantizedWeight, a bounded slab of rows at a time.

Q4_0 and Q4_1 blocks are the engine's int4 layout at group 32 already, up to the order of the
nibbles: GGML keeps a block's first 16 values in the low nibbles of its 16 bytes and the last 16 in
the high ones, the engine keeps neighbours in one byte. With w = (q - 8) * scale + zero:
  Q4_0: w = (q - 8) * d          -> scale d, zero 0 (exact)
  Q4_1: w = q * d + m            -> scale d, zero m + 8d (one float32 rounding of m + 8d)
  Q4_K: w = (d sc) q - (dmin m)  per sub-block of 32 -> scale d sc, zero 8 d sc - dmin m (likewise)
Q4_0 and Q4_1 tensors are converted whole, by a few numpy operations on the mapped bytes (their
scratch is half the result's size). Every other type is dequantized by the gguf package a slab of
rows at a time and, when the target is quantized, quantized again by the engine's own rule, so no
float copy of more than one slab (about 16 MB) exists besides the tensor being built.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ragglm.engine.linear.quantize import (
    QuantConfig,
    QuantizedWeight,
    fill_row_blocks,
    quantize_weight,
)
from ragglm.errors import ModelNotFoundError

__all__ = ["Q4_0", "Q4_1", "Q4_K", "Q8_0", "F32", "F16", "BF16", "DIRECT_INT4", "type_name", "bits_per_weight",
           "to_float", "to_quantized", "int4_from_q4"]

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 30
DIRECT_INT4 = (Q4_0, Q4_1, Q4_K)
_SLAB_ELEMENTS = 1 << 22  # float32 values dequantized at a time


def type_name(kind: int) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(kind).name
    except ValueError:
        return str(kind)


def bits_per_weight(kind: int) -> float:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    return size * 8 / block


def _slab_rows(cols: int, multiple: int = 1) -> int:
    return max(multiple, _SLAB_ELEMENTS // max(cols, 1) // multiple * multiple)


def _dequantize(raw: np.ndarray, kind: int, cols: int, name: str) -> Tensor:
    """uint8 [rows, bytes] -> float32 [rows, cols], always a copy (never a view of the map)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        values = dequantize(raw, GGMLQuantizationType(kind))
    except NotImplementedError as exc:
        raise ModelNotFoundError(f"tensor {name!r} is stored as {type_name(kind)}, which cannot be read here; "
                                 "convert the model to F16, Q8_0, Q4_0 or a K-quant") from exc
    return torch.from_numpy(np.array(values, dtype=np.float32, copy=True).reshape(raw.shape[0], cols))


def to_float(raw: np.ndarray, kind: int, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> Tensor:
    """The tensor in dtype, converted slab by slab into one preallocated result."""
    cols = shape[-1]
    out = torch.empty(raw.shape[0], cols, dtype=dtype)
    step = _slab_rows(cols)
    for start in range(0, raw.shape[0], step):
        out[start:start + step] = _dequantize(raw[start:start + step], kind, cols, name)
    return out.reshape(shape)


def to_quantized(raw: np.ndarray, kind: int, cols: int, config: QuantConfig, name: str) -> QuantizedWeight:
    """A linear weight [rows, cols] in the engine's form: straight from Q4_0/Q4_1 blocks at int4:g32,
    else dequantized and quantized again slab by slab (rows are quantized independently)."""
    direct = config.scheme == "int4" and config.group_for(cols) == 32 and kind in DIRECT_INT4

    def slab(part: np.ndarray) -> QuantizedWeight:
        return int4_from_q4(part, kind) if direct else quantize_weight(_dequantize(part, kind, cols, name), config)

    step = _slab_rows(cols, 64)
    if raw.shape[0] <= step or (direct and kind in (Q4_0, Q4_1)):  # whole: scratch of half its size
        return slab(raw)
    return fill_row_blocks(raw.shape[0], step, lambda start: slab(raw[start:start + step]))


def int4_from_q4(raw: np.ndarray, kind: int) -> QuantizedWeight:
    """Q4_0 / Q4_1 / Q4_K rows -> int4 group 32, every value as the file has it."""
    if kind == Q4_K:
        return _int4_from_q4_k(raw)
    head = 2 if kind == Q4_0 else 4
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, head + 16)  # [rows, nb, head + 16], a view of the map
    n_blocks = blocks.shape[1]
    scales = np.ascontiguousarray(blocks[..., 0:2]).view(np.float16).reshape(rows, n_blocks).astype(np.float32)
    if kind == Q4_0:
        zeros = np.zeros_like(scales)
    else:
        mins = np.ascontiguousarray(blocks[..., 2:4]).view(np.float16).reshape(rows, n_blocks).astype(np.float32)
        zeros = mins + np.float32(8.0) * scales
    # byte i of a block holds value i (low nibble) and value 16 + i (high); the engine wants values
    # 2j and 2j + 1 in one byte, so bytes 2k and 2k + 1 give the pairs (2k, 2k + 1) and (16 + 2k, 17 + 2k)
    even, odd = blocks[..., head::2], blocks[..., head + 1::2]  # [rows, nb, 8] each
    packed = np.empty((rows, n_blocks, 2, 8), dtype=np.uint8)
    np.bitwise_or(even & 0x0F, odd << 4, out=packed[:, :, 0])
    np.bitwise_or(even >> 4, odd & 0xF0, out=packed[:, :, 1])
    return QuantizedWeight("int4", torch.from_numpy(packed.reshape(rows, n_blocks * 16)), torch.from_numpy(scales),
                           torch.from_numpy(zeros), 32)


def _int4_from_q4_k(raw: np.ndarray) -> QuantizedWeight:
    from gguf.quants import Q4_K as Q4KBlocks

    rows = raw.shape[0]
    blocks = np.array(raw, copy=True).reshape(-1, 144)  # [nb, 144]: d, dmin, 12 bytes of 6-bit scales, 128 of values
    n_blocks = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4KBlocks.get_scale_min(blocks[:, 4:16])  # [nb, 8] each
    scales = d * sc.astype(np.float32)
    zeros = 8.0 * scales - dmin * m.astype(np.float32)
    # 32 bytes per pair of sub-blocks: the first one's values in the low nibbles, the second's in the high
    qs = torch.from_numpy(blocks[:, 16:].copy()).reshape(n_blocks, 4, 1, 32)
    values = torch.cat((qs & 0x0F, qs >> 4), dim=2).reshape(rows, -1)  # [rows, in], 0..15
    del blocks, qs
    packed = values[:, 0::2] | (values[:, 1::2] << 4)
    return QuantizedWeight("int4", packed.contiguous(), torch.from_numpy(scales).reshape(rows, -1),
                           torch.from_numpy(zeros).reshape(rows, -1), 32)
