"""bf16 linear layers for CPUs with bf16 units, in one of two layouts.

On such CPUs (AVX512-BF16 / AMX) a plain bf16 `F.linear` with one input row runs no faster than fp32;
the same weights prepacked once into oneDNN's blocked layout (PackedLinear) take about half the time
at decode and use the matrix units at prefill. Plain bf16 rows (Bf16Linear) are what the native
decode step reads. Either copy replaces the float weight, so memory does not grow (float32 weights halve).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PackedLinear", "Bf16Linear", "packing_supported", "use_bf16_linears"]


# Inductor lowers oneDNN's linear only for weights it froze itself; behind an op of our own the
# prepacked weight stays an ordinary input and the kernel is called as it is.
@torch.library.custom_op("ragglm::packed_linear", mutates_args=())
def _packed_linear_op(rows: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")


@_packed_linear_op.register_fake
def _(rows: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    return rows.new_empty(rows.shape[0], packed.shape[0])


@cache
def packing_supported(dtype: torch.dtype, device_type: str) -> bool:
    """Whether bf16 weights on this device can run through oneDNN's prepacked kernel."""
    if device_type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _Bf16Rows(nn.Module):
    """y = x @ W.T + b on bf16 rows, cast back to x's dtype; subclasses hold W and multiply."""

    path = ""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16), persistent=False)

    def multiply(self, rows: Tensor) -> Tensor:  # rows [N, in] bf16 -> [N, out] bf16
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        # x [..., in] -> [..., out], multiplied as 2-D rows: a strided 3-D input (the last position
        # of a prompt) would send F.linear to a batched matmul that copies the whole weight first
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        return self.multiply(rows).reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, path={self.path}"


class PackedLinear(_Bf16Rows):
    """W held in oneDNN's layout (an opaque tensor, left out of state_dict)."""

    path = "onednn_packed_bf16"

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__(weight, bias)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16).contiguous(), 1)
        self.register_buffer("packed", packed, persistent=False)

    def multiply(self, rows: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return _packed_linear_op(rows, self.packed, self.bias)
        # the custom op's own dispatch costs more than the kernel at one row
        return torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")


class Bf16Linear(_Bf16Rows):
    """W in bf16 as plain rows: the layout the native decode step (fused_decode) streams. Prompts go
    through F.linear, as fast as the packed layout for SmolLM2's matrices, a little slower for a 6B's."""

    path = "bf16_fused_decode"

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__(weight, bias)
        self.register_buffer("weight", weight.detach().to(torch.bfloat16).contiguous(), persistent=False)

    def multiply(self, rows: Tensor) -> Tensor:
        return F.linear(rows, self.weight, self.bias)


def use_bf16_linears(model: nn.Module, layout: type[PackedLinear] | type[Bf16Linear] = PackedLinear) -> int:
    """Run the matmul of every linear layer on bf16 inputs, leaving the rest of the model as it is.

    Float nn.Linear layers become `layout` (PackedLinear, or Bf16Linear for the native decode step);
    quantized layers (those with `compute_in`) feed their packed kernels bf16 inputs, the only inputs
    those CPU kernels vectorise; a tied head gets a bf16 copy of the embedding (a lookup table cannot
    live in the packed layout). Norms, attention and the residual stream keep the model's dtype: with
    float32 there, SmolLM2 answers as it does in float32, which it does not when everything runs in
    bf16. Returns how many layers changed.
    """
    changed = 0
    for module in model.modules():
        if hasattr(module, "compute_in"):
            module.compute_in(torch.bfloat16)
            changed += 1
    # by name, so that no list keeps the replaced layers (and their float weights) alive meanwhile
    for name in [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, leaf)
        setattr(parent, leaf, layout(linear.weight, linear.bias))
        del linear
        changed += 1
    if getattr(model, "output", "absent") is None:
        model.output = layout(model.tok_embeddings.weight, None)
        changed += 1
    return changed
