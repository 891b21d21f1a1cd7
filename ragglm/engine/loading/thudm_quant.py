"""THUDM's pre-quantized ChatGLM folders (chatglm-6b-int4, chatglm2-6b-int4, ...) in our int8/int4 layers.

Their `config.json` carries `quantization_bit` (4 or 8); every quantized linear is stored as an
int8 `X.weight` and a per-output-row fp16 `X.weight_scale`, with w = scale * q:
  8 bits: q is the int8 itself, [out, in];
  4 bits: [out, in / 2] bytes of two signed nibbles, column 2j in the high nibble, 2j+1 in the low.
Both land exactly on our layouts: int8 as is; int4 as q + 8 (low nibble first) with the row's scale
for every group and a zero of 0, rearranged byte by byte without a float copy. Layers are converted
one at a time as the checkpoint streams in; everything else (embeddings, norms, biases, the output
layer, which THUDM leaves in float) loads as stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.linear.quantize import (
    QuantConfig,
    QuantizedWeight,
    dequantize,
    quantize_weight,
)
from ragglm.engine.loading.adapters.lora import LoraAdapter, LoraMerge
from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors, read_config
from ragglm.engine.loading.families import family_of
from ragglm.engine.loading.quant_loader import build_quantized
from ragglm.engine.loading.tokenizer_files import TokenizerFiles
from ragglm.engine.loading.weight_names import Naming
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ModelNotFoundError

__all__ = ["is_thudm_quantized", "load_thudm_quantized", "thudm_int4_to_ours", "thudm_weight",
           "thudm_tensors", "int4_group"]

_SCALE = ".weight_scale"
_GROUPS = (128, 64, 32)  # our int4 group for their per-row scales: the largest that divides every width


def is_thudm_quantized(path: Path) -> bool:
    """A model folder whose config.json says its linear layers are stored quantized."""
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    return bool(read_config(path).get("quantization_bit"))


def int4_group(args: ModelArgs) -> int | None:
    """The int4 group size every linear input width divides (their scale is per row, so any group
    holds it exactly); None when none does (the layers are then held as int8, still exactly)."""
    widths = (args.dim, args.n_heads * args.head_dim, args.intermediate_size)
    return next((g for g in _GROUPS if all(w % g == 0 for w in widths)), None)


def load_thudm_quantized(path: Path, config: QuantConfig | None, device, dtype: torch.dtype,
                         lora: LoraAdapter | None = None) -> tuple[Transformer, TokenizerFiles, str]:
    """(model, tokenizer files, quant name) of a THUDM quantized folder."""
    raw = read_config(path)
    bits = raw.get("quantization_bit")
    if bits not in (4, 8):
        raise ModelNotFoundError(f"{path / 'config.json'}: quantization_bit {bits!r} is not supported (4 and 8 are)")
    if raw.get("quantization_embeddings"):
        raise ModelNotFoundError(f"{path}: quantized embeddings (quantization_embeddings) are not supported; "
                                 "use the folder without them (e.g. chatglm-6b-int4 instead of chatglm-6b-int4-qe)")
    family = family_of(path, raw)
    args = family.args(raw)
    group = int4_group(args) if bits == 4 else None
    target = QuantConfig("int4", group) if group else QuantConfig("int8")
    if config is not None and config.scheme != f"int{bits}":
        raise ModelNotFoundError(f"{path} holds THUDM's int{bits} weights, not {config.scheme}; drop --quant "
                                 f"(it loads as {target.name}) or load the float model instead")
    merge = LoraMerge(lora, family.naming, args, str(path)) if lora is not None else None
    stream = thudm_tensors(iter_checkpoint_tensors(path), family.naming, args, bits, target, merge, path)
    model = build_quantized(args, stream, device, dtype)
    return model, family.tokenizer(path, raw), target.name


def thudm_int4_to_ours(packed: Tensor) -> Tensor:
    """Their int8 [out, in / 2] (signed nibbles, high first) -> our uint8 [out, in / 2] (q + 8, low first).

    A signed nibble n becomes n + 8 by flipping its top bit (two's complement), so both nibbles of a
    byte shift by one xor; swapping the nibbles puts column 2j low. Bytes in, bytes out.
    """
    flipped = packed.view(torch.uint8) ^ 0x88
    return (flipped >> 4) | (flipped << 4)


def thudm_weight(weight: Tensor, scale: Tensor, target: QuantConfig, name: str) -> QuantizedWeight:
    """One of their quantized weights in our portable form (exact: no rounding anywhere)."""
    if weight.dtype != torch.int8 or scale.dim() != 1 or scale.shape[0] != weight.shape[0]:
        raise ModelNotFoundError(f"{name}: a quantized weight should be int8 [out, in] with an fp16 [out] "
                                 f"scale; found {weight.dtype} {tuple(weight.shape)} and {tuple(scale.shape)}")
    rows = scale.float()  # [out]
    if target.scheme == "int8":
        return QuantizedWeight("int8", weight.contiguous(), rows)
    groups = weight.shape[1] * 2 // target.group_size
    scales = rows[:, None].expand(-1, groups).contiguous()  # [out, groups]: the row's scale in each
    return QuantizedWeight("int4", thudm_int4_to_ours(weight.contiguous()), scales, torch.zeros_like(scales),
                           target.group_size)


def _int4_as_int8(weight: Tensor) -> Tensor:
    """Their 4-bit bytes [out, in / 2] as int8 values [out, in] (for widths no int4 group divides)."""
    values = torch.empty(weight.shape[0], weight.shape[1] * 2, dtype=torch.int8)
    values[:, 0::2] = weight >> 4  # arithmetic shift: the high nibble, sign kept
    values[:, 1::2] = (weight << 4) >> 4
    return values


def thudm_tensors(tensors: Iterable[tuple[str, Tensor]], naming: Naming, args: ModelArgs, bits: int,
                  target: QuantConfig, merge: LoraMerge | None, path: Path) -> Iterator[tuple[str, Tensor | QuantizedWeight]]:
    """Their (name, tensor) -> our (name, float tensor) and (layer name, QuantizedWeight), one at a time.

    A quantized weight waits for its scale (or the scale for its weight): at most one layer's pair
    is held. LoRA updates are merged into float tensors as they pass, and into a quantized layer by
    dequantizing that one layer, merging and quantizing it again on our own grid.
    """
    pending_lora = merge.pending() if merge is not None else {}
    waiting: dict[str, dict[str, Tensor]] = {}  # their layer -> {"weight": ..., "scale": ...}
    for name, tensor in tensors:
        quantized = name.endswith(_SCALE) or (name.endswith(".weight") and tensor.dtype == torch.int8)
        if not quantized:
            ours = _our_name(naming, args, name)
            if ours is None:
                continue
            ours, value = ours[0], _transformed(naming, args, name, tensor)
            del tensor
            if ours in pending_lora:
                value = merge.merge(ours, value, pending_lora)
            yield ours, value
            continue
        layer = name[: -len(_SCALE)] if name.endswith(_SCALE) else name[: -len(".weight")]
        parts = waiting.setdefault(layer, {})
        parts["scale" if name.endswith(_SCALE) else "weight"] = tensor
        del tensor
        if len(parts) < 2:
            continue
        del waiting[layer]
        ours = _our_name(naming, args, f"{layer}.weight")
        if ours is None:
            raise ModelNotFoundError(f"{path}: quantized weight {layer}.weight is not a linear layer of this model")
        weight, scale = parts.pop("weight"), parts.pop("scale")
        if bits == 4 and target.scheme == "int8":
            weight = _int4_as_int8(weight)
        qw = thudm_weight(_transformed(naming, args, f"{layer}.weight", weight),
                          _transformed(naming, args, f"{layer}.weight", scale), target, f"{path}: {layer}")
        del weight, scale
        if ours[0] in pending_lora:
            qw = quantize_weight(merge.merge(ours[0], dequantize(qw), pending_lora), target)
        yield ours[0].removesuffix(".weight"), qw
    if waiting:
        layer, parts = next(iter(waiting.items()))
        missing = f"{layer}{_SCALE}" if "scale" not in parts else f"{layer}.weight"
        raise ModelNotFoundError(f"{path}: checkpoint lacks {missing} (a THUDM quantized layer needs its int8 "
                                 "weight and its weight_scale); download the model again")
    if merge is not None:
        merge.finish(pending_lora)


def _our_name(naming: Naming, args: ModelArgs, name: str) -> tuple[str] | None:
    """Our name of one of their tensors (these folders store every weight whole, none in parts)."""
    if name in naming.top:
        ours = naming.top[name]
        return None if ours == "output.weight" and args.tie_embeddings else (ours,)
    if not name.startswith(naming.layer_prefix):
        return None
    layer, _, rest = name[len(naming.layer_prefix):].partition(".")
    if rest in naming.layer:
        return (f"layers.{layer}.{naming.layer[rest]}",)
    if naming.fused_into(rest) is not None:
        raise ModelNotFoundError(f"{name}: a quantized folder in this naming stores parts of a fused weight, "
                                 "which is not supported; load the float model")
    return None


def _transformed(naming: Naming, args: ModelArgs, name: str, tensor: Tensor) -> Tensor:
    # a naming's transform reorders rows, which per-row scales and packed rows follow alike
    rest = name[len(naming.layer_prefix):].partition(".")[2] if name.startswith(naming.layer_prefix) else ""
    transform = naming.transforms.get(rest)
    return transform(tensor, args) if transform is not None else tensor
