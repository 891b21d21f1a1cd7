"""The model shape every GGUF architecture states alike under `{arch}.*`."""

from __future__ import annotations

__all__ = ["shape_fields"]


def shape_fields(meta: dict, arch: str) -> dict:
    """ModelArgs fields from `{arch}.*` metadata (KeyError for a missing required one); the
    architecture's loader adds the family's own (rotary layout, biases, context length)."""
    n_heads = meta[f"{arch}.attention.head_count"]
    dim = meta[f"{arch}.embedding_length"]
    return {
        "vocab_size": meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"]),
        "dim": dim,
        "n_layers": meta[f"{arch}.block_count"],
        "n_heads": n_heads,
        "n_kv_heads": meta.get(f"{arch}.attention.head_count_kv") or n_heads,
        "head_dim": meta.get(f"{arch}.attention.key_length") or dim // n_heads,
        "intermediate_size": meta[f"{arch}.feed_forward_length"],
        "norm_eps": meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
    }
