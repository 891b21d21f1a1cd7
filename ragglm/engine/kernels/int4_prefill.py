"""int4 layers' prompt products in bf16 on the matrix units, their weights dequantized natively.

The CPU int4 kernel reads the whole weight again for every row it multiplies; a prompt piece runs
faster as a bf16 matrix product on oneDNN once the weight is in bf16 (on a 7B's matrices 1.3-1.7x
at 128 rows, 2.2x at 512), if that conversion is cheap. Done with PyTorch operations it costs more than the product itself; the
native step's library (csrc/fused_decode.cpp, dequantize_int4_bf16) writes it at memory speed into
scratch buffers that the layers reuse: the bf16 weights of the last four layers asked (a block's
wqkv, wo, gate_up and down) are kept, about 400 MB for a 7B, so that a prompt prefilled layer by
layer (Transformer.prefill_by_layer) dequantizes each weight once, not once per piece.

The same library packs int4 weights into the CPU kernel's layout as models load (a byte transpose
that PyTorch's operations do several times slower); this module registers it on import.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ragglm.engine.kernels.fused_decode import MAX_INT4_GROUPS, load_library, native_step_available
from ragglm.engine.linear.quantize import Int4Linear, use_int4_packer

__all__ = ["NativeInt4Weights", "attach_int4_prefill", "native_int4_pack"]


class NativeInt4Weights:
    """Int4Linear.prefill_weight: the layer's weight in bf16, kept for the next calls of the last few
    layers (a block's four; a prompt run layer by layer asks for each several times in a row)."""

    def __init__(self, library: ctypes.CDLL, kept: int = 4):
        self.library = library
        self.kept = kept
        self.local = threading.local()  # concurrent prompts on one model each get their own buffers

    def __call__(self, layer: Int4Linear) -> Tensor:
        rows, cols = layer.out_features, layer.in_features
        entries: OrderedDict[int, tuple[int, Tensor]] = self.local.__dict__.setdefault("entries", OrderedDict())
        key = id(layer)
        if key in entries and entries[key][0] == layer.packed.data_ptr():
            entries.move_to_end(key)
            return entries[key][1]
        old = entries.pop(key, None) or (entries.popitem(last=False)[1] if len(entries) >= self.kept else None)
        buffer = old[1].view(-1) if old is not None and old[1].numel() >= rows * cols else None
        del old
        if buffer is None:
            buffer = torch.empty(rows * cols, dtype=torch.bfloat16)
        weight = buffer[:rows * cols].view(rows, cols)  # [out, in]
        self.library.dequantize_int4_bf16(layer.packed.data_ptr(), layer.scales_and_zeros.data_ptr(), rows, cols,
                                          layer.group_size, torch.get_num_threads(), weight.data_ptr())
        entries[key] = (layer.packed.data_ptr(), weight)
        return weight


def _readable(layer: Int4Linear) -> bool:
    return (layer._cpu_layout and layer.compute_dtype == torch.bfloat16
            and layer.scales_and_zeros.dtype == torch.bfloat16 and layer.scales_and_zeros.is_contiguous()
            and layer.packed.is_contiguous() and layer.group_size % 32 == 0
            and layer.in_features // layer.group_size <= MAX_INT4_GROUPS)


def attach_int4_prefill(model: nn.Module, library: ctypes.CDLL) -> int:
    """Give every int4 layer that computes in bf16 on the CPU kernel's layout the native
    dequantization for prompts; returns how many layers took it."""
    weights = NativeInt4Weights(library)
    attached = 0
    for module in model.modules():
        if isinstance(module, Int4Linear) and _readable(module):
            module.prefill_weight = weights
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
