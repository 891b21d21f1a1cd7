"""Read a llama-architecture GGUF file: ModelArgs, float weights in our naming, tokenizer data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["GGUFCheckpoint", "read_gguf"]

_LAYER_NAMES = {
    "attn_norm.weight": "attention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "attn_output.weight": "attention.wo.weight",
    "ffn_down.weight": "feed_forward.w_down.weight",
}


@dataclass
class GGUFCheckpoint:
    args: ModelArgs
    state_dict: dict[str, torch.Tensor]
    metadata: dict  # scalar and string fields, plus tokenizer lists


def read_gguf(path: Path, dtype: torch.dtype = torch.float32) -> GGUFCheckpoint:
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
    # llama.cpp interleaves llama's Q/K rows for its rope kernel; qwen2 files keep the halves layout
    return GGUFCheckpoint(args, _to_our_names(raw, args, dtype, permuted=arch == "llama"), meta)


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


def _unpermute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GGUF stores llama Q/K rows with rotary pairs interleaved; restore the halves layout."""
    out, inp = weight.shape[0], weight.shape[1:]
    return weight.reshape(n_heads, out // n_heads // 2, 2, *inp).transpose(1, 2).reshape(weight.shape)


def _to_our_names(raw: dict, args: ModelArgs, dtype, permuted: bool) -> dict[str, torch.Tensor]:
    def restore(weight, n_heads):
        return _unpermute(weight, n_heads) if permuted else weight

    sd = {"tok_embeddings.weight": raw.pop("token_embd.weight"), "norm.weight": raw.pop("output_norm.weight")}
    if "output.weight" in raw:
        sd["output.weight"] = raw.pop("output.weight")
    for i in range(args.n_layers):
        p = f"blk.{i}."
        q = restore(raw.pop(p + "attn_q.weight"), args.n_heads)
        k = restore(raw.pop(p + "attn_k.weight"), args.n_kv_heads)
        sd[f"layers.{i}.attention.wqkv.weight"] = torch.cat([q, k, raw.pop(p + "attn_v.weight")])
        if p + "attn_q.bias" in raw:
            qb = restore(raw.pop(p + "attn_q.bias"), args.n_heads)
            kb = restore(raw.pop(p + "attn_k.bias"), args.n_kv_heads)
            sd[f"layers.{i}.attention.wqkv.bias"] = torch.cat([qb, kb, raw.pop(p + "attn_v.bias")])
        sd[f"layers.{i}.feed_forward.w_gate_up.weight"] = torch.cat(
            [raw.pop(p + "ffn_gate.weight"), raw.pop(p + "ffn_up.weight")]
        )
        for theirs, ours in _LAYER_NAMES.items():
            sd[f"layers.{i}.{ours}"] = raw.pop(p + theirs)
    return {name: t.to(dtype) for name, t in sd.items()}
