"""A loaded model's bf16 linear layers, in the layout of the decode step that will read them."""

from __future__ import annotations

import torch

from ragglm.engine.kernels.fused_decode import (
    attach_fused_decode,
    load_library,
    native_step_available,
)
from ragglm.engine.kernels.int8_prompt_products import attach_int8_prompt_products
from ragglm.engine.linear.packed_linear import Bf16Linear, PackedLinear, use_bf16_linears
from ragglm.engine.model import Transformer

__all__ = ["finish_bf16_linears"]


def finish_bf16_linears(model: Transformer, compile: bool = False) -> None:
    """Give a loaded model the bf16 linear layers of its dtype: a float32 model that is not to be
    compiled decodes through the native step (plain bf16 rows for its float layers, its int8 and
    int4 layers read as they are); a compiled one uses oneDNN's packed layout. Quantized layers take
    bf16 inputs either way, and int4 and int8 layers multiply prompts in int8 where the native library builds."""
    fused = not compile and model.tok_embeddings.weight.dtype == torch.float32 and native_step_available()
    use_bf16_linears(model, Bf16Linear if fused else PackedLinear)
    if fused:
        attach_fused_decode(model)
    if native_step_available():
        attach_int8_prompt_products(model, load_library())
