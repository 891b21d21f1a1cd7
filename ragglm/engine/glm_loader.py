"""GLM checkpoints (ChatGLM2/3, GLM-4) in the original `chatglm` naming and the transformers `glm` naming.

Both map onto our Transformer with family="glm": fused QKV with bias, grouped KV heads, [gate | up]
SwiGLU, RMSNorm and rotary on the first half of each head with interleaved pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["chatglm_args", "glm_args", "chatglm_state_dict", "glm_state_dict", "iter_chatglm_state",
           "iter_glm_state", "to_chatglm_names"]


def chatglm_args(config: dict) -> ModelArgs:
    """ModelArgs from an original ChatGLM2/3 / GLM-4 `config.json` (model_type: chatglm)."""
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


_CHATGLM_LAYER = {
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attention.query_key_value.weight": "attention.wqkv.weight",
    "self_attention.query_key_value.bias": "attention.wqkv.bias",
    "self_attention.dense.weight": "attention.wo.weight",
    "mlp.dense_h_to_4h.weight": "feed_forward.w_gate_up.weight",
    "mlp.dense_4h_to_h.weight": "feed_forward.w_down.weight",
}
_CHATGLM_TOP = {
    "transformer.embedding.word_embeddings.weight": "tok_embeddings.weight",
    "transformer.encoder.final_layernorm.weight": "norm.weight",
    "transformer.output_layer.weight": "output.weight",
}
_LAYER_PREFIX = "transformer.encoder.layers."


def chatglm_state_dict(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype) -> dict[str, torch.Tensor]:
    """Original naming maps one to one: QKV and [gate | up] are already fused in our order."""
    return dict(iter_chatglm_state(tensors, args, dtype))


def iter_chatglm_state(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype,
                       ) -> Iterator[tuple[str, torch.Tensor]]:
    """chatglm_state_dict as a stream, one tensor at a time; dtype None keeps the checkpoint's."""
    ready: dict[str, torch.Tensor] = {}
    # a tensor leaves through `ready` and no local keeps it, so the consumer can free it while we wait
    for name, tensor in tensors:
        if name in _CHATGLM_TOP:
            ours = _CHATGLM_TOP[name]
        elif name.startswith(_LAYER_PREFIX) and name[len(_LAYER_PREFIX):].split(".", 1)[-1] in _CHATGLM_LAYER:
            layer, rest = name[len(_LAYER_PREFIX):].split(".", 1)
            ours = f"layers.{layer}.{_CHATGLM_LAYER[rest]}"
        else:  # rotary_pos_emb.inv_freq is recomputed from the config
            continue
        ready[ours] = _cast(tensor, dtype)
        del tensor
        yield ours, ready.pop(ours)


_GLM_LAYER = {
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_up_proj.weight": "feed_forward.w_gate_up.weight",
    "mlp.down_proj.weight": "feed_forward.w_down.weight",
}
_GLM_FUSED = {
    "attention.wqkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attention.wqkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
}
_GLM_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
            "lm_head.weight": "output.weight"}


def glm_state_dict(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype) -> dict[str, torch.Tensor]:
    """transformers naming: q/k/v are separate (fused here); gate_up_proj is already [gate | up]."""
    return dict(iter_glm_state(tensors, args, dtype))


def iter_glm_state(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype,
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """glm_state_dict as a stream: a layer's fused QKV goes out once its q, k and v have arrived,
    so at most one layer's parts wait here; dtype None keeps the checkpoint's."""
    pending: dict[str, torch.Tensor] = {}
    for name, tensor in tensors:
        if name in _GLM_TOP:
            if name == "lm_head.weight" and args.tie_embeddings:
                continue
            pending[name] = _cast(tensor, dtype)
            del tensor
            yield _GLM_TOP[name], pending.pop(name)
            continue
        if not name.startswith("model.layers."):
            continue
        layer, rest = name[len("model.layers."):].split(".", 1)
        if rest in _GLM_LAYER:
            pending[name] = _cast(tensor, dtype)
            del tensor
            yield f"layers.{layer}.{_GLM_LAYER[rest]}", pending.pop(name)
            continue
        for ours, parts in _GLM_FUSED.items():
            if rest in parts:
                pending[f"{layer}.{rest}"] = _cast(tensor, dtype)
                del tensor
                keys = [f"{layer}.{p}" for p in parts]
                if all(k in pending for k in keys):
                    yield f"layers.{layer}.{ours}", torch.cat([pending.pop(k) for k in keys])
                break
    if pending:
        raise ModelNotFoundError(f"glm checkpoint has unpaired q/k/v tensors, e.g. {sorted(pending)[:3]}")


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor if dtype is None else tensor.to(dtype)


def to_chatglm_names(our_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our naming back to the original ChatGLM naming (to export or to build test checkpoints)."""
    top = {ours: theirs for theirs, ours in _CHATGLM_TOP.items()}
    layer = {ours: theirs for theirs, ours in _CHATGLM_LAYER.items()}
    out = {}
    for name, tensor in our_state_dict.items():
        if name in top:
            out[top[name]] = tensor
        else:
            _, index, rest = name.split(".", 2)
            out[f"{_LAYER_PREFIX}{index}.{layer[rest]}"] = tensor
    return out
