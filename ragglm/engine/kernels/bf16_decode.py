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
from ragglm.engine.linear.quantize import Int4Linear, Int8Linear
from ragglm.engine.model import Transformer

__all__ = ["finish_bf16_linears"]


def finish_bf16_linears(model: Transformer, compile: bool = False) -> None:
    """Give a loaded model the bf16 linear layers of its dtype: a float32 model that is not to be
    compiled decodes through the native step (plain bf16 rows for its float layers, its int8 and
    int4 layers read as they are); a compiled one uses oneDNN's packed layout. Quantized layers take
    bf16 inputs either way, and int4 and int8 layers multiply prompts in int8 where the native library builds.

    A float32 model with int4 or int8 layers keeps its KV cache in float16, as llama.cpp does. Batch-1
    decode reads the whole cache every token, which at 2,048 tokens of a 7B in float32 is 57% of
    the bytes of its Q4_0 weights; float16 halves that. Its 11 significant bits are finer than the
    int8 rows the quantized products round their inputs to (bf16's 8 raised SmolLM2's perplexity
    through the cache by up to 0.5%).
    """
    if model.tok_embeddings.weight.dtype == torch.float32 and any(
            isinstance(module, (Int4Linear, Int8Linear)) for module in model.modules()):
        model.kv_dtype = torch.float16
    fused = not compile and model.tok_embeddings.weight.dtype == torch.float32 and native_step_available()
    use_bf16_linears(model, Bf16Linear if fused else PackedLinear)
    if fused:
        attach_fused_decode(model)
    if native_step_available():
        attach_int8_prompt_products(model, load_library())
