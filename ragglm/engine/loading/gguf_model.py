"""A ready Transformer from a GGUF file, built tensor by tensor: no float copy of a quantized model.

Linear weights go from the file's blocks straight to the engine's quantized form (see gguf_blocks),
everything else (embeddings, norms, biases) is dequantized on its own. Without a quantization
asked for, the file's own decides (`default_quant`):
  - under 1B parameters: float, as a small model has always loaded (its native float decode step
    is the fastest path there, and the weights are small anyway);
  - 4-bit types and fewer bits (Q4_0, Q4_1, Q4_K, Q3_K, Q2_K): int4 group 32, Q4_0/Q4_1/Q4_K exactly;
  - more (Q5_0, Q5_1, Q5_K, Q6_K, Q8_0): int8, which keeps what those files paid bits for;
  - F16, BF16, F32: float.
The type that holds most of the linear weights' elements decides, so a Q4_K_M file (Q4_K with some
Q6_K) is int4.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.linear.quantize import QuantConfig, QuantizedWeight, linear_names
from ragglm.engine.loading.assemble import assemble_model, meta_model
from ragglm.engine.loading.gguf_blocks import (
    BF16,
    DIRECT_INT4,
    F16,
    F32,
    bits_per_weight,
    to_float,
    to_quantized,
)
from ragglm.engine.loading.gguf_loader import GGUFDescription, describe_gguf
from ragglm.engine.loading.gguf_tensors import open_gguf_data
from ragglm.engine.loading.quant_loader import build_quantized
from ragglm.engine.loading.tokenizer_files import TokenizerFiles, gguf_tokenizer
from ragglm.engine.loading.weight_names import Naming
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ModelNotFoundError

__all__ = ["FLOAT_BELOW_PARAMS", "default_quant", "load_gguf", "gguf_stream"]

FLOAT_BELOW_PARAMS = 1_000_000_000


def default_quant(description: GGUFDescription) -> QuantConfig | None:
    """The quantization that keeps what the file holds (see the module notes)."""
    counts: dict[int, int] = {}
    total = 0
    for tensor in description.tensors:
        elements = tensor.rows * tensor.shape[-1]
        total += elements
        if _our_name(description.naming, tensor.name) and len(tensor.shape) == 2 and tensor.name != "token_embd.weight":
            counts[tensor.kind] = counts.get(tensor.kind, 0) + elements
    if total < FLOAT_BELOW_PARAMS or not counts:
        return None
    kind = max(counts, key=counts.get)
    if kind in (F32, F16, BF16):
        return None
    return QuantConfig("int4", 32) if kind in DIRECT_INT4 or bits_per_weight(kind) <= 4.5 else QuantConfig("int8")


def load_gguf(path: Path, config: QuantConfig | None, device: str, dtype: torch.dtype,
              linears_as_stored: bool = False, *, use_default: bool = False,
              ) -> tuple[Transformer, TokenizerFiles, str | None]:
    """(model, tokenizer files, quantization name). config None with use_default takes the file's own
    (default_quant); linears_as_stored: float linear layers stay bf16 and quantized layers take bf16
    inputs, as they will once the engine gives the model bf16 linear layers."""
    description = describe_gguf(path)
    if config is None and use_default:
        config = default_quant(description)
    tokenizer = gguf_tokenizer(description.metadata, path)
    if config is None:
        linear_dtype = torch.bfloat16 if linears_as_stored else dtype
        model = _build_float(description, dtype, linear_dtype, device)
    else:
        compute = torch.bfloat16 if linears_as_stored else None
        model = build_quantized(description.args, gguf_stream(description, config, dtype), device, dtype,
                                compute_dtype=compute)
    return model, tokenizer, config.name if config else None


def gguf_stream(description: GGUFDescription, config: QuantConfig | None, dtype: torch.dtype,
                linear_dtype: torch.dtype | None = None, targets: set[str] | None = None,
                ) -> Iterator[tuple[str, Tensor | QuantizedWeight]]:
    """(our name, tensor) for float tensors and (our layer name, QuantizedWeight) for linear weights
    when config is set; fused parts (q/k/v, gate/up) are joined as soon as the last one is read.
    targets: the model's linear layer names, when the caller has built the model already."""
    args, naming = description.args, description.naming
    if targets is None:
        with torch.device("meta"):
            targets = set(linear_names(Transformer(args)))
    return _renamed(_converted(description, config, dtype, linear_dtype or dtype, targets), naming, args, targets)


def _converted(description: GGUFDescription, config, dtype, linear_dtype, targets: set[str]):
    naming = description.naming
    with open_gguf_data(description.path) as data:
        for tensor in description.tensors:
            ours = _our_name(naming, tensor.name)
            if ours is None:
                continue
            where = f"{description.path}: {tensor.name}"
            raw = data.raw(tensor)
            layer, _, leaf = ours.rpartition(".")
            if layer in targets and leaf == "weight":
                if len(tensor.shape) != 2:
                    raise ModelNotFoundError(f"{where} has shape {tensor.shape}, not that of a linear weight; "
                                             "download or convert the model again")
                value = (to_quantized(raw, tensor.kind, tensor.shape[1], config, where) if config is not None
                         else to_float(raw, tensor.kind, tensor.shape, linear_dtype, where))
            else:
                value = to_float(raw, tensor.kind, tensor.shape, dtype, where)
            del raw
            data.release(tensor)
            yield tensor.name, value
            del value


def _our_name(naming: Naming, theirs: str) -> str | None:
    """Our full name for one of their tensors (a fused part gets the fused tensor's name); None: skipped."""
    if theirs in naming.top:
        return naming.top[theirs]
    if not theirs.startswith(naming.layer_prefix):
        return None
    layer, _, rest = theirs[len(naming.layer_prefix):].partition(".")
    if rest in naming.layer:
        return f"layers.{layer}.{naming.layer[rest]}"
    fused = naming.fused_into(rest)
    return f"layers.{layer}.{fused[0]}" if fused else None


def _renamed(stream, naming: Naming, args: ModelArgs, targets: set[str]):
    """Their names -> ours, as weight_names.rename_weights does, for quantized weights as well."""
    pending: dict[str, Tensor | QuantizedWeight] = {}
    for name, value in stream:
        ours = _our_name(naming, name)
        if ours == "output.weight" and args.tie_embeddings:
            continue
        rest = name[len(naming.layer_prefix):].partition(".")[2] if name.startswith(naming.layer_prefix) else ""
        if rest in naming.transforms:
            value = _transformed(naming.transforms[rest], value, args)
        out_name = ours[: -len(".weight")] if isinstance(value, QuantizedWeight) else ours
        fused = naming.fused_into(rest) if rest else None
        if fused is None:
            yield out_name, value
            del value
            continue
        pending[name] = value
        del value
        layer = name[len(naming.layer_prefix):].partition(".")[0]
        keys = [f"{naming.layer_prefix}{layer}.{part}" for part in fused[1]]
        if all(key in pending for key in keys):
            yield out_name, _joined([pending.pop(key) for key in keys], name)
    if pending:
        raise ModelNotFoundError(f"{sorted(pending)[0]} has no partner: its layer lacks one of "
                                 "q/k/v or gate/up; download or convert the model again")


def _transformed(transform, value, args: ModelArgs):
    """A row transform (llama Q/K order) applied to a float tensor or to a quantized weight's rows."""
    if not isinstance(value, QuantizedWeight):
        return transform(value, args)
    # the transforms only reorder rows, which carry their own scales and zeros
    n_rows = value.qweight.shape[0]
    order = transform(torch.arange(n_rows, dtype=torch.float64)[:, None], args)[:, 0].long()
    return QuantizedWeight(value.scheme, value.qweight[order], value.scales[order],
                           None if value.zeros is None else value.zeros[order], value.group_size)


def _joined(parts: list, name: str):
    if isinstance(parts[0], QuantizedWeight):
        first = parts[0]
        if any(p.scheme != first.scheme or p.group_size != first.group_size for p in parts):
            raise ModelNotFoundError(f"{name}: the parts of one fused layer came out in different forms")
        zeros = torch.cat([p.zeros for p in parts]) if first.zeros is not None else None
        return QuantizedWeight(first.scheme, torch.cat([p.qweight for p in parts]),
                               torch.cat([p.scales for p in parts]), zeros, first.group_size)
    return torch.cat(parts)


def _build_float(description: GGUFDescription, dtype, linear_dtype, device) -> Transformer:
    model = meta_model(description.args)
    state = dict(gguf_stream(description, None, dtype, linear_dtype, set(linear_names(model))))
    return assemble_model(model, state, device, str(description.path),
                          f"{description.path}: tensors do not fit its metadata")
