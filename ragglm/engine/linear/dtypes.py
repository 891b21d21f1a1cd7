"""Which dtype a model computes in, and whether its linear layers run in bf16."""

from __future__ import annotations

import torch

from ragglm.engine.linear.packed_linear import packing_supported
from ragglm.errors import ConfigError

__all__ = ["resolve_dtype"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str = "cpu") -> tuple[torch.dtype, bool]:
    """(model dtype, whether linear layers compute in bf16).

    "auto" (or None): on CUDA, bf16 throughout; on CPUs with bf16 units (AVX512-BF16/AMX), float32
    with bf16 linear layers; elsewhere float32.
    """
    device_type = torch.device(device).type
    if dtype in (None, "auto"):
        if device_type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        return torch.float32, packing_supported(torch.bfloat16, device_type)
    if not isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    return dtype, packing_supported(dtype, device_type)
