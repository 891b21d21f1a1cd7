"""Build a quantized Transformer from a stream of float tensors, and save/load quantized checkpoints.

Each linear weight is quantized the moment it arrives and its float copy dropped, so the float
model never exists in memory as a whole. A quantized checkpoint is a folder with
`quantized.safetensors` (portable quantized weights plus the float tensors) and `quantization.json`
(scheme, ModelArgs, format version); reloading it does not quantize again.
"""

from __future__ import annotations

import ctypes
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn

from ragglm.engine.linear.quantize import (
    Int4Linear,
    Int8Linear,
    QuantConfig,
    QuantizedWeight,
    linear_names,
    quantize_weight,
)
from ragglm.engine.loading.safetensors_reader import SafetensorsFile, write_safetensors
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ModelNotFoundError

__all__ = [
    "QUANT_FILE", "QUANT_WEIGHTS", "is_quantized_checkpoint", "drain", "build_quantized", "returned_scratch",
    "quantize_tensors", "save_quantized", "load_quantized",
]

QUANT_FILE = "quantization.json"
QUANT_WEIGHTS = "quantized.safetensors"
FORMAT_VERSION = 1


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_SCRATCH_MMAP_BYTES = 1 << 20
_DEFAULT_MMAP_BYTES = 32 << 20  # glibc's ceiling for its own adaptive threshold


@contextmanager
def returned_scratch() -> Iterator[None]:
    """While a model is quantized, give every freed block of 1 MiB or more back to the system.

    glibc serves blocks below its (adaptive, up to 32 MiB) mmap threshold from the heap, where the
    float scratch of one weight ends up between long-lived quantized weights: freed but not
    returned, it adds a few hundred MB of RSS over a 6B model. Mapping such blocks directly while
    loading avoids that; afterwards the threshold is set to glibc's usual ceiling and the heap is
    trimmed. Other C libraries are left alone.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _SCRATCH_MMAP_BYTES)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_BYTES)
            libc.malloc_trim(0)


@cache
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
    except (OSError, AttributeError):
        return None
    return libc


def is_quantized_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / QUANT_FILE).is_file()


def drain(state_dict: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
    """Items of a dict, removed as they are taken (so each float tensor can be freed), or a stream as is."""
    if isinstance(state_dict, dict):
        while state_dict:
            name = next(iter(state_dict))
            yield name, state_dict.pop(name)
    else:
        yield from state_dict.items() if isinstance(state_dict, Mapping) else state_dict


def quantize_tensors(tensors: Iterable[tuple[str, Tensor]], targets: set[str], config: QuantConfig,
                     ) -> Iterator[tuple[str, Tensor | QuantizedWeight]]:
    """(name, float tensor) -> the same, except target linear weights come out as (layer name, QuantizedWeight)."""
    for name, tensor in tensors:
        layer, _, leaf = name.rpartition(".")
        if layer in targets and leaf == "weight":
            quantized = quantize_weight(tensor, config)
            del tensor  # the float weight is freed now, unless the caller still holds it
            yield layer, quantized
        else:
            yield name, tensor


def build_quantized(args: ModelArgs, tensors: Mapping | Iterable[tuple[str, Tensor | QuantizedWeight]],
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    config: QuantConfig | None = None, compute_dtype: torch.dtype | None = None) -> Transformer:
    """A Transformer whose linear layers are quantized modules.

    `tensors` (a dict is emptied as it is read) yields float tensors by state-dict name and, for linear layers, either their float
    weight (quantized here with `config`) or an already quantized (layer name, QuantizedWeight).
    Without a config, a linear layer that arrives as a float weight stays a float nn.Linear.
    compute_dtype sets each layer's kernel input dtype as it is built (see compute_in), so float32
    scales of one layer at most exist at a time.
    """
    with returned_scratch():
        return _build_quantized(args, tensors, device, dtype, config, compute_dtype)


def _build_quantized(args: ModelArgs, tensors, device, dtype, config: QuantConfig | None,
                     compute_dtype: torch.dtype | None = None) -> Transformer:
    with torch.device("meta"):
        model = Transformer(args)
    targets = set(linear_names(model))
    stream = quantize_tensors(drain(tensors), targets, config) if config is not None else drain(tensors)
    floats: dict[str, Tensor] = {}
    biases: dict[str, Tensor] = {}
    done: set[str] = set()
    as_float: set[str] = set()  # linear layers that stay nn.Linear
    for name, value in stream:
        if isinstance(value, QuantizedWeight):
            _install(model, name, value, biases.pop(name, None), device, dtype)
            if compute_dtype is not None:
                model.get_submodule(name).compute_in(compute_dtype)
            done.add(name)
            continue
        layer, _, leaf = name.rpartition(".")
        if layer in targets and leaf == "bias":
            if layer in as_float:
                floats[name] = value.to(device, dtype)
            elif layer in done:
                model.get_submodule(layer).bias = value.to(device, dtype)
            else:
                biases[layer] = value
            continue
        if layer in targets and leaf == "weight" and config is None and layer not in done:
            # a linear layer the source keeps in float (THUDM's quantized folders: the output layer)
            as_float.add(layer)
            done.add(layer)
            floats[name] = value.to(device, dtype)
            if layer in biases:
                floats[f"{layer}.bias"] = biases.pop(layer).to(device, dtype)
            continue
        if layer in targets:
            raise ModelNotFoundError(f"unexpected tensor {name!r} for quantized layer {layer!r}")
        floats[name] = value.to(device, dtype)
    missing_layers = targets - done
    if missing_layers:
        raise ModelNotFoundError(f"checkpoint lacks {len(missing_layers)} linear weights, e.g. {sorted(missing_layers)[:3]}")
    expected = {n for n in model.state_dict() if n.rpartition(".")[0] not in targets - as_float}
    missing = expected - set(floats)
    if missing:
        raise ModelNotFoundError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    model.load_state_dict(floats, assign=True, strict=False)
    return model.eval()


def _install(model: nn.Module, layer: str, qw: QuantizedWeight, bias: Tensor | None, device, dtype) -> None:
    parent_name, _, child = layer.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    expected = getattr(parent, child)
    if isinstance(expected, nn.Linear) and (expected.out_features, expected.in_features) != qw.shape:
        raise ModelNotFoundError(f"{layer}: weight shape {qw.shape} does not match the model "
                                 f"({expected.out_features}, {expected.in_features})")
    cls = Int8Linear if qw.scheme == "int8" else Int4Linear
    setattr(parent, child, cls(qw, bias, device, dtype))


def save_quantized(out: Path, args: ModelArgs, tensors: Mapping | Iterable[tuple[str, Tensor]], config: QuantConfig,
                   extra: dict | None = None) -> dict:
    """Quantize a float tensor stream into OUT/quantized.safetensors and write OUT/quantization.json."""
    with torch.device("meta"):
        targets = set(linear_names(Transformer(args)))

    def flat() -> Iterator[tuple[str, Tensor]]:
        for name, value in quantize_tensors(drain(tensors), targets, config):
            items = value.tensors(name) if isinstance(value, QuantizedWeight) else {name: value}
            del value
            while items:
                key = next(iter(items))
                yield key, items.pop(key)

    out.mkdir(parents=True, exist_ok=True)
    # written as quantized, so only one layer's tensors are in memory at a time
    with returned_scratch():
        write_safetensors(out / QUANT_WEIGHTS, flat())
    meta = {"format_version": FORMAT_VERSION, "scheme": config.scheme, "group_size": config.group_size,
            "model_args": asdict(args), **(extra or {})}
    (out / QUANT_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return meta


def read_quant_meta(folder: Path) -> dict:
    meta = json.loads((folder / QUANT_FILE).read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelNotFoundError(f"{folder}: quantized format {meta.get('format_version')} is not "
                                 f"{FORMAT_VERSION}; quantize the model again with `ragglm quantize`")
    return meta


def load_quantized(folder: Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict]:
    """The model of a quantized checkpoint folder, and its quantization.json contents."""
    meta = read_quant_meta(folder)
    args = ModelArgs(**meta["model_args"])

    def stream() -> Iterator[tuple[str, Tensor | QuantizedWeight]]:
        # plain reads rather than a memory map, whose touched pages would count twice towards RSS
        with SafetensorsFile(folder / QUANT_WEIGHTS) as f:
            names = set(f.keys())
            for name in sorted(names):
                if name.endswith(".qweight"):
                    layer = name[: -len(".qweight")]
                    yield layer, _quantized_from(f, layer, meta["scheme"], names)
                elif not name.endswith((".scales", ".zeros")):
                    yield name, f.get_tensor(name)

    return build_quantized(args, stream(), device, dtype), meta


def _quantized_from(f, layer: str, scheme: str, names: set[str]) -> QuantizedWeight:
    qweight, scales = f.get_tensor(f"{layer}.qweight"), f.get_tensor(f"{layer}.scales")
    if scheme == "int8":
        return QuantizedWeight("int8", qweight, scales)
    if f"{layer}.zeros" not in names:
        raise ModelNotFoundError(f"quantized checkpoint lacks {layer}.zeros")
    group = qweight.shape[1] * 2 // scales.shape[1]
    return QuantizedWeight("int4", qweight, scales, f.get_tensor(f"{layer}.zeros"), group)
