"""Read a GGUF file's description (ModelArgs, metadata, tensor list) and, for tools that want them,
its weights as float tensors in our naming, streamed one tensor at a time from a memory map."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ragglm.engine.loading.gguf_blocks import to_float
from ragglm.engine.loading.gguf_chatglm import GGUF_CHATGLM_NAMES, chatglm_gguf_args
from ragglm.engine.loading.gguf_fields import shape_fields
from ragglm.engine.loading.gguf_header import check_gguf
from ragglm.engine.loading.gguf_tensors import GGUFTensor, open_gguf_data
from ragglm.engine.loading.weight_names import GGUF_LLAMA_NAMES, GGUF_NAMES, Naming, rename_weights
from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["GGUFCheckpoint", "GGUFDescription", "describe_gguf", "read_gguf", "float_tensors"]

ARCHITECTURES = ("llama", "qwen2", "chatglm")


@dataclass
class GGUFDescription:
    path: Path
    args: ModelArgs
    metadata: dict  # scalar and string fields, plus tokenizer lists
    tensors: list[GGUFTensor]  # in file order
    naming: Naming


@dataclass
class GGUFCheckpoint:
    args: ModelArgs
    state_dict: dict[str, torch.Tensor]
    metadata: dict  # scalar and string fields, plus tokenizer lists


def describe_gguf(path: Path) -> GGUFDescription:
    """Everything but the weights: the header is walked within bounds, then read by the gguf package."""
    reader = _open_reader(path)
    meta = {name: _field_value(field) for name, field in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelNotFoundError(f"{path}: GGUF architecture {arch!r} is not supported "
                                 f"({', '.join(ARCHITECTURES)} are)")
    args = _args_from_meta(meta, arch, path)
    # GGML lists dims innermost first
    tensors = [GGUFTensor(t.name, int(t.tensor_type), tuple(reversed([int(n) for n in t.shape])),
                          int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
    del reader  # its map of the whole file goes with it
    args.tie_embeddings = all(t.name != "output.weight" for t in tensors)
    naming = {"llama": GGUF_LLAMA_NAMES, "chatglm": GGUF_CHATGLM_NAMES}.get(arch, GGUF_NAMES)
    return GGUFDescription(path, args, meta, tensors, naming)


def float_tensors(description: GGUFDescription, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(their name, tensor in dtype), one at a time; each tensor's mapped pages are released once read."""
    with open_gguf_data(description.path) as data:
        for tensor in description.tensors:
            raw = data.raw(tensor)
            value = to_float(raw, tensor.kind, tensor.shape, dtype, f"{description.path}: {tensor.name}")
            del raw
            data.release(tensor)
            yield tensor.name, value
            del value


def read_gguf(path: Path, dtype: torch.dtype | None = torch.float32) -> GGUFCheckpoint:
    """The weights dequantized, one tensor at a time, to dtype (None: float32)."""
    description = describe_gguf(path)
    stream = float_tensors(description, dtype or torch.float32)
    state_dict = dict(rename_weights(stream, description.naming, description.args, None))
    return GGUFCheckpoint(description.args, state_dict, description.metadata)


def _open_reader(path: Path):
    """A GGUFReader over the file, once its header has been walked within bounds."""
    from gguf import GGML_QUANT_SIZES, GGUFReader

    check_gguf(path, {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()})
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the file passed the walk; whatever the reader still refuses is unreadable
        raise ModelNotFoundError(f"{path}: not a readable GGUF file ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _field_value(field):
    try:
        return field.contents()
    except Exception:  # unusual field types are not needed to run the model
        return None


def _args_from_meta(meta: dict, arch: str, path: Path) -> ModelArgs:
    try:
        args = _args_from_fields(meta, arch)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelNotFoundError(f"{path}: its {arch} metadata is incomplete or malformed ({exc!r}); "
                                 "download or convert the model again") from exc
    sizes = (args.dim, args.n_layers, args.n_heads, args.n_kv_heads, args.head_dim, args.intermediate_size,
             args.vocab_size)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ModelNotFoundError(f"{path}: its {arch} metadata gives a size that is not a positive whole number; "
                                 "download or convert the model again")
    return args


def _args_from_fields(meta: dict, arch: str) -> ModelArgs:
    if arch == "chatglm":
        return chatglm_gguf_args(meta)
    return ModelArgs(family="llama", **shape_fields(meta, arch), qkv_bias=arch == "qwen2",
                     max_seq_len=meta.get(f"{arch}.context_length", 4096))
