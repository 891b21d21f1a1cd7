"""int4 layers' prompt products in bf16 on the matrix units, their weights dequantized natively.

The CPU int4 kernel reads the whole weight again for every row it multiplies; a prompt piece of
128 rows is about twice as fast as a bf16 matrix product on oneDNN once the weight is in bf16, if
that conversion is cheap. Done with PyTorch operations it costs more than the product itself; the
native step's library (csrc/fused_decode.cpp, dequantize_int4_bf16) writes it at memory speed into
one scratch buffer that every layer reuses, so a model holds one bf16 copy of its largest weight
at most, and only while it prefills.

The same library packs int4 weights into the CPU kernel's layout as models load (a byte transpose
that PyTorch's operations do several times slower); this module registers it on import.
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch import Tensor, nn

from ragglm.engine.kernels.fused_decode import MAX_INT4_GROUPS, load_library, native_step_available
from ragglm.engine.linear.quantize import Int4Linear, use_int4_packer

__all__ = ["NativeInt4Weights", "attach_int4_prefill", "native_int4_pack"]


class NativeInt4Weights:
    """Int4Linear.prefill_weight: the layer's weight in bf16, in a scratch buffer of this thread."""

    def __init__(self, library: ctypes.CDLL):
        self.library = library
        self.local = threading.local()  # concurrent prompts on one model each get their own buffer

    def __call__(self, layer: Int4Linear) -> Tensor:
        rows, cols = layer.out_features, layer.in_features
        scratch = getattr(self.local, "scratch", None)
        if scratch is None or scratch.numel() < rows * cols:
            scratch = self.local.scratch = None  # the old buffer goes before the new one comes
            scratch = self.local.scratch = torch.empty(rows * cols, dtype=torch.bfloat16)
        weight = scratch[:rows * cols].view(rows, cols)  # [out, in]
        self.library.dequantize_int4_bf16(layer.packed.data_ptr(), layer.scales_and_zeros.data_ptr(), rows, cols,
                                          layer.group_size, torch.get_num_threads(), weight.data_ptr())
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
