"""ModelArgs of a Llama-family checkpoint (Llama, Qwen2, Mistral) from its config.json."""

from __future__ import annotations

from ragglm.engine.model import ModelArgs

__all__ = ["llama_args"]


def llama_args(config: dict) -> ModelArgs:
    n_heads = config["num_attention_heads"]
    rope_theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return ModelArgs(
        family="llama",
        vocab_size=config["vocab_size"],
        dim=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads", n_heads),
        head_dim=config.get("head_dim") or config["hidden_size"] // n_heads,
        intermediate_size=config["intermediate_size"],
        norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias")),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_seq_len=config.get("max_position_embeddings", 4096),
    )
