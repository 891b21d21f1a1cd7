"""Read a llama-architecture GGUF file: ModelArgs, float weights in our naming, tokenizer data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ragglm.engine.loading.gguf_header import check_gguf
from ragglm.engine.loading.quant_loader import drain
from ragglm.engine.loading.weight_names import GGUF_LLAMA_NAMES, GGUF_NAMES, rename_weights
from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["GGUFCheckpoint", "read_gguf"]


@dataclass
class GGUFCheckpoint:
    args: ModelArgs
    state_dict: dict[str, torch.Tensor]
    metadata: dict  # scalar and string fields, plus tokenizer lists


def read_gguf(path: Path, dtype: torch.dtype | None = torch.float32) -> GGUFCheckpoint:
    """The weights are dequantized to float32; dtype None keeps them so."""
    reader = _open_reader(path)
    meta = {name: _field_value(field) for name, field in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ModelNotFoundError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2 are)")
    args = _args_from_meta(meta, arch, path)

    raw = {tensor.name: _dequantized(tensor, path) for tensor in reader.tensors}
    args.tie_embeddings = "output.weight" not in raw
    naming = GGUF_LLAMA_NAMES if arch == "llama" else GGUF_NAMES
    return GGUFCheckpoint(args, dict(rename_weights(drain(raw), naming, args, dtype)), meta)


def _open_reader(path: Path):
    """A GGUFReader over the file, once its header has been walked within bounds."""
    from gguf import GGML_QUANT_SIZES, GGUFReader

    check_gguf(path, {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()})
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the file passed the walk; whatever the reader still refuses is unreadable
        raise ModelNotFoundError(f"{path}: not a readable GGUF file ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _dequantized(tensor, path: Path) -> torch.Tensor:
    from gguf.quants import dequantize

    shape = tuple(reversed([int(n) for n in tensor.shape]))  # GGML lists dims innermost first
    try:
        values = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    except NotImplementedError as exc:
        raise ModelNotFoundError(f"{path}: tensor {tensor.name!r} is stored as {tensor.tensor_type.name}, "
                                 "which cannot be dequantized here; convert the model to F16 or Q8_0") from exc
    return torch.from_numpy(np.array(values, dtype=np.float32))


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
    n_heads = meta[f"{arch}.attention.head_count"]
    dim = meta[f"{arch}.embedding_length"]
    return ModelArgs(
        family="llama",
        vocab_size=meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"]),
        dim=dim,
        n_layers=meta[f"{arch}.block_count"],
        n_heads=n_heads,
        n_kv_heads=meta.get(f"{arch}.attention.head_count_kv", n_heads),
        head_dim=meta.get(f"{arch}.attention.key_length", dim // n_heads),
        intermediate_size=meta[f"{arch}.feed_forward_length"],
        norm_eps=meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=meta.get(f"{arch}.rope.freq_base", 10000.0),
        qkv_bias=arch == "qwen2",
        max_seq_len=meta.get(f"{arch}.context_length", 4096),
    )
