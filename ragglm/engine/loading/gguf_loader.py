"""Read a llama-architecture GGUF file: ModelArgs, float weights in our naming, tokenizer data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise ModelNotFoundError(f"{path}: not a readable GGUF file ({exc})") from exc
    meta = {name: _field_value(field) for name, field in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ModelNotFoundError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2 are)")
    args = _args_from_meta(meta, arch)

    raw = {}
    for tensor in reader.tensors:
        shape = tuple(reversed([int(n) for n in tensor.shape]))  # GGML lists dims innermost first
        values = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        raw[tensor.name] = torch.from_numpy(np.array(values, dtype=np.float32))
    args.tie_embeddings = "output.weight" not in raw
    naming = GGUF_LLAMA_NAMES if arch == "llama" else GGUF_NAMES
    return GGUFCheckpoint(args, dict(rename_weights(drain(raw), naming, args, dtype)), meta)


def _field_value(field):
    try:
        return field.contents()
    except Exception:  # unusual field types are not needed to run the model
        return None


def _args_from_meta(meta: dict, arch: str) -> ModelArgs:
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
