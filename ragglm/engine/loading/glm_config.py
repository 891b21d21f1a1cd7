"""ModelArgs of GLM checkpoints (ChatGLM2/3, GLM-4) from the original `chatglm` config and the transformers `glm` one.

Both map onto our Transformer with family="glm": fused QKV with bias, grouped KV heads, [gate | up]
SwiGLU, RMSNorm and rotary on the first half of each head with interleaved pairs. ChatGLM-6B, the
first of them, shares model_type "chatglm" and says `position_encoding_2d: true`: LayerNorm, biases
everywhere, a GeLU MLP, post-LN residuals scaled by alpha and 2D rotary positions.
"""

from __future__ import annotations

import math

from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["chatglm_args", "chatglm6b_args", "glm_args", "is_chatglm6b"]


# alpha = sqrt(2 * num_layers), where the original code builds every block with its default
# num_layers=28 (the config's value is never passed down): 28 whatever the model's depth
GLM6B_BLOCK_LAYERS = 28


def is_chatglm6b(config: dict) -> bool:
    """ChatGLM-6B's config (model_type chatglm, like ChatGLM2/3, which lack this key)."""
    return config.get("model_type") == "chatglm" and bool(config.get("position_encoding_2d"))


def chatglm6b_args(config: dict) -> ModelArgs:
    """ModelArgs from ChatGLM-6B's `config.json`; its special ids are read from there."""
    special = {}
    for key in ("bos_token_id", "gmask_token_id", "mask_token_id"):
        value = config.get(key)
        if key != "mask_token_id" and not isinstance(value, int):
            raise ModelNotFoundError(f"ChatGLM-6B config.json lacks {key}, which the prompt layout needs; "
                                     "download the model's config.json again")
        special[key] = value if isinstance(value, int) else None
    dim, n_heads, n_layers = config["hidden_size"], config["num_attention_heads"], config["num_layers"]
    return ModelArgs(
        family="glm",
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        head_dim=dim // n_heads,
        intermediate_size=config.get("inner_hidden_size") or 4 * dim,
        norm_eps=config.get("layernorm_epsilon", 1e-5),
        rope_theta=10000.0,
        qkv_bias=True,
        tie_embeddings=False,
        max_seq_len=config.get("max_sequence_length", 2048),
        norm="layer",
        mlp="gelu",
        linear_bias=True,
        residual_scale=math.sqrt(2 * GLM6B_BLOCK_LAYERS),
        position_mode="glm_2d",
        sop_token_id=special["bos_token_id"],
        gmask_token_id=special["gmask_token_id"],
        mask_token_id=special["mask_token_id"],
    )


def chatglm_args(config: dict) -> ModelArgs:
    """ModelArgs from an original ChatGLM2/3 / GLM-4 `config.json` (model_type: chatglm)."""
    if is_chatglm6b(config):
        return chatglm6b_args(config)
    n_heads = config["num_attention_heads"]
    dim = config["hidden_size"]
    if config.get("apply_residual_connection_post_layernorm"):
        raise ModelNotFoundError("chatglm config with apply_residual_connection_post_layernorm is not supported")
    if not config.get("rmsnorm", True):
        raise ModelNotFoundError("chatglm config with LayerNorm (rmsnorm: false) is not supported")
    rope_ratio = float(config.get("rope_ratio") or 1.0)
    mode = _rope_ratio_mode(config)
    return ModelArgs(
        family="glm",
        vocab_size=config.get("padded_vocab_size") or config["vocab_size"],
        dim=dim,
        n_layers=config["num_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("multi_query_group_num", n_heads) if config.get("multi_query_attention") else n_heads,
        head_dim=config.get("kv_channels") or dim // n_heads,
        intermediate_size=config["ffn_hidden_size"],
        norm_eps=config.get("layernorm_epsilon", 1e-5),
        rope_theta=10000.0 * (rope_ratio if mode == "base" else 1.0),
        rope_position_scale=rope_ratio if mode == "positions" else 1.0,
        rope_fraction=0.5,
        rope_interleaved=True,
        qkv_bias=bool(config.get("add_qkv_bias", True)),
        tie_embeddings=False,
        max_seq_len=config.get("seq_length", 8192),
    )


def _rope_ratio_mode(config: dict) -> str:
    """How `rope_ratio` acts: "base" (theta *= ratio) or "positions" (positions /= ratio).

    ChatGLM2-6B-32K interpolates positions; ChatGLM3-6B-32K and GLM-4 scale the base. The
    configs do not say which, so we read the checkpoint name, and let `rope_ratio_mode` override.
    """
    explicit = config.get("rope_ratio_mode")
    if explicit in ("base", "positions"):
        return explicit
    name = str(config.get("_name_or_path", "")).lower()
    return "positions" if "chatglm2" in name else "base"


def glm_args(config: dict) -> ModelArgs:
    """ModelArgs from a transformers-native GLM `config.json` (model_type: glm)."""
    n_heads = config["num_attention_heads"]
    dim = config["hidden_size"]
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = config.get("rope_theta") or rope.get("rope_theta") or 10000.0
    fraction = config.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 0.5
    if rope.get("rope_type", "default") not in ("default", None):
        raise ModelNotFoundError(f"glm config rope_type {rope.get('rope_type')!r} is not supported (default is)")
    return ModelArgs(
        family="glm",
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads", n_heads),
        head_dim=config.get("head_dim") or dim // n_heads,
        intermediate_size=config["intermediate_size"],
        norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=float(theta),
        rope_fraction=float(fraction),
        rope_interleaved=True,
        qkv_bias=bool(config.get("attention_bias", True)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_seq_len=config.get("max_position_embeddings", 8192),
    )
