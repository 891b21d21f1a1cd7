"""A prompt's products through quantized layers in int8, on the CPU's integer dot-product units.

The packed int4 and int8 kernels read the whole weight again for every row they multiply, so a
prompt piece is a matrix product instead. On these CPUs an int8 x int8 -> int32 product
(torch._int_mm on oneDNN) runs at about twice the bf16 product's rate (2048x4096x4096: 772 against
415 GFLOP/s), so both sides go to int8 with one scale per row: the prompt's rows as they come, the
weight once per prompt. Columns where a row holds an outlier (OUTLIER_RMS) do not set the rows'
scales: their values are clamped to the int8 range, and what the clamp cut off (a few values a row)
is added back in float, times those weight columns. A piece's result depends only on the piece, so a
prompt prefilled layer by layer keeps the logits and KV of the same pieces run one by one, while
consecutive pieces share one integer product (each piece's rows rounded on their own).

int4 weights are written out as int8 by the native library (csrc/fused_decode.cpp,
dequantize_int4_int8) into scratch buffers that the layers reuse: the last four layers asked (a
block's wqkv, wo, gate_up and down) are kept, about 200 MB for a 7B, so that a prompt prefilled
layer by layer (Transformer.prefill_by_layer) converts each weight once, not once per piece. int8
layers are read as they are.

The same library packs int4 weights into the CPU kernel's layout as models load (a byte transpose
that PyTorch's operations do several times slower); this module registers it on import.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from itertools import accumulate, pairwise

import torch
from torch import Tensor, nn

from ragglm.engine.kernels.fused_decode import (
    int4_readable,
    int4_scales,
    load_library,
    native_step_available,
)
from ragglm.engine.linear.quantize import Int4Linear, Int8Linear, use_int4_packer

__all__ = ["Int8PromptProducts", "attach_int8_prompt_products", "native_int4_pack", "OUTLIER_RMS"]

# A column holding a value above this many times its row's root mean square leaves the row scales
# (csrc: quantize_rows_int8). SmolLM2 on 4,096 tokens of the manuals, KL divergence from the float
# model's next-token distribution, int8 weights: weights alone 0.0045, int8 rows with one scale each
# 0.036, with the outliers set apart 0.0060 (int4 weights: 0.0046, 0.0060). Multiplying the outlier
# columns whole in float gave 0.0059 (int4: 0.0058) but cost a random 7B's Q8_0 prefill 46%: its
# down projections mark half their columns, whose values mostly fit the int8 range (about 70 a row
# do not).
OUTLIER_RMS = 5.0


class Int8PromptProducts:
    """layer.prompt_product(layer, rows, pieces): rows [M, in] bf16 times the layer's weight, as bf16
    [M, out]; the rows of each piece (row counts, default: one piece) are rounded to int8 on their own."""

    def __init__(self, library: ctypes.CDLL, kept: int = 4):
        self.library = library
        self.kept = kept
        self.local = threading.local()  # concurrent prompts on one model each get their own buffers

    def __call__(self, layer: Int4Linear | Int8Linear, rows: Tensor, pieces: list[int] | None = None) -> Tensor:
        weight, weight_scales = self.int8_weight(layer)  # [out, in] int8, [out] float32
        count, in_features = rows.shape
        rows = rows.contiguous()
        bounds = list(accumulate(pieces or [count], initial=0))
        quantized = torch.empty(count, in_features, dtype=torch.int8)
        row_scales = torch.empty(count, dtype=torch.float32)
        outliers = torch.empty(len(bounds) - 1, in_features, dtype=torch.uint8)  # each piece marks its own
        threads = torch.get_num_threads()
        for piece, (lo, hi) in enumerate(pairwise(bounds)):
            self.library.quantize_rows_int8(rows[lo].data_ptr(), hi - lo, in_features, OUTLIER_RMS, threads,
                                            quantized[lo].data_ptr(), row_scales[lo:].data_ptr(),
                                            outliers[piece].data_ptr())
        products = torch._int_mm(quantized, weight.t())  # [M, out] int32: one product for every piece
        # the weight columns of every piece's outliers, gathered once: a row's clamped values lie in
        # its own piece's outlier columns, and the other columns never exceed its int8 range
        columns = outliers.any(0).nonzero().squeeze(1)
        chosen = torch.empty(len(columns), layer.out_features, dtype=torch.int8)  # weight[:, columns].T
        if len(columns):
            self.library.gather_columns_int8(weight.data_ptr(), layer.out_features, in_features, columns.data_ptr(),
                                             len(columns), threads, chosen.data_ptr())
        out = torch.empty(count, layer.out_features, dtype=torch.bfloat16)
        self.library.scale_int32_bf16(products.data_ptr(), row_scales.data_ptr(), weight_scales.data_ptr(),
                                      rows.data_ptr(), quantized.data_ptr(), in_features, columns.data_ptr(),
                                      len(columns), chosen.data_ptr(), count, layer.out_features, threads,
                                      out.data_ptr())
        return out

    def int8_weight(self, layer: Int4Linear | Int8Linear) -> tuple[Tensor, Tensor]:
        if isinstance(layer, Int8Linear):
            return layer.qweight, layer.scales.float()
        rows, cols = layer.out_features, layer.in_features
        entries: OrderedDict[int, tuple[int, Tensor, Tensor]] = self.local.__dict__.setdefault("entries", OrderedDict())
        key = id(layer)
        if key in entries and entries[key][0] == layer.packed.data_ptr():
            entries.move_to_end(key)
            return entries[key][1:]
        old = entries.pop(key, None) or (entries.popitem(last=False)[1] if len(entries) >= self.kept else None)
        buffer = old[1].view(-1) if old is not None and old[1].numel() >= rows * cols else None
        del old
        if buffer is None:
            buffer = torch.empty(rows * cols, dtype=torch.int8)
        weight = buffer[:rows * cols].view(rows, cols)  # [out, in]
        scales = torch.empty(rows, dtype=torch.float32)
        name, kind = int4_scales(layer)
        self.library.dequantize_int4_int8(layer.packed.data_ptr(), getattr(layer, name).data_ptr(), kind, rows, cols,
                                          layer.group_size, torch.get_num_threads(), weight.data_ptr(),
                                          scales.data_ptr())
        entries[key] = (layer.packed.data_ptr(), weight, scales)
        return weight, scales


def _readable(layer: nn.Module) -> bool:
    if isinstance(layer, Int8Linear):  # the native library reads host memory only
        return (layer.path == "_weight_int8pack_mm" and layer.qweight.device.type == "cpu"
                and layer.qweight.is_contiguous())
    return isinstance(layer, Int4Linear) and int4_readable(layer) and layer.group_size % 32 == 0


def attach_int8_prompt_products(model: nn.Module, library: ctypes.CDLL) -> int:
    """Give every int4 and int8 layer on the CPU that the native library can read int8 prompt
    products; returns how many layers took them."""
    products = Int8PromptProducts(library)
    attached = 0
    for module in model.modules():
        if _readable(module):
            module.prompt_product = products
            attached += 1
    return attached


def native_int4_pack(qweight: Tensor) -> Tensor | None:
    """cpu_int4_pack through the native library; None where the library does not build."""
    if not native_step_available() or qweight.shape[0] % 64:
        return None
    rows, half = qweight.shape
    qweight = qweight.contiguous()
    packed = torch.empty(rows, half, dtype=torch.uint8)
    load_library().pack_int4_blocks(qweight.data_ptr(), rows, half * 2, torch.get_num_threads(), packed.data_ptr())
    return packed


use_int4_packer(native_int4_pack)
