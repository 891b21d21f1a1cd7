"""Load Hugging Face checkpoint folders (Llama / Qwen2 naming) into our Transformer's naming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.model import ModelArgs
from ragglm.engine.safetensors_reader import iter_safetensors
from ragglm.errors import ModelNotFoundError

__all__ = ["read_config", "iter_checkpoint_tensors", "llama_args", "llama_state_dict", "iter_llama_state"]


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotFoundError(f"{folder}: no config.json; point --model at a model folder or a .gguf file")
    return json.loads(path.read_text(encoding="utf-8"))


def iter_checkpoint_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors one at a time (safetensors read tensor by tensor, .bin files shard by shard)."""
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        for shard in shards:
            yield from iter_safetensors(shard)
        return
    bins = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")
    if not bins:
        raise ModelNotFoundError(f"{folder}: no .safetensors or .bin weights found")
    for shard in bins:
        yield from torch.load(shard, map_location="cpu", weights_only=True, mmap=True).items()


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


def llama_state_dict(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype) -> dict[str, torch.Tensor]:
    """Map model.layers.N.self_attn.{q,k,v}_proj etc. to fused wqkv / w_gate_up."""
    return dict(iter_llama_state(tensors, args, dtype))


def iter_llama_state(tensors: Iterator[tuple[str, torch.Tensor]], args: ModelArgs, dtype,
                     ) -> Iterator[tuple[str, torch.Tensor]]:
    """llama_state_dict as a stream: each tensor is yielded as soon as its parts have arrived."""
    pending: dict[str, torch.Tensor] = {}
    simple = {
        "model.embed_tokens.weight": "tok_embeddings.weight",
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attention_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.o_proj.weight": "attention.wo.weight",
        "mlp.down_proj.weight": "feed_forward.w_down.weight",
    }
    fused = {  # our name -> parts in order
        "attention.wqkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "attention.wqkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        "feed_forward.w_gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    }
    # tensors go out through `pending` and no local keeps them, so the consumer can free each one
    # as soon as it is done with it, while this generator waits
    for name, tensor in tensors:
        if name in simple:
            if name == "lm_head.weight" and args.tie_embeddings:
                continue
            pending[name] = _cast(tensor, dtype)
            del tensor
            yield simple[name], pending.pop(name)
            continue
        if not name.startswith("model.layers."):
            continue
        layer, rest = name[len("model.layers."):].split(".", 1)
        pending[name] = _cast(tensor, dtype)
        del tensor
        if rest in per_layer:
            yield f"layers.{layer}.{per_layer[rest]}", pending.pop(name)
            continue
        for ours, parts in fused.items():
            keys = [f"model.layers.{layer}.{p}" for p in parts]
            if rest in parts and all(k in pending for k in keys):
                yield f"layers.{layer}.{ours}", torch.cat([pending.pop(k) for k in keys])


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """dtype None keeps the checkpoint's own (a quantizing consumer converts block by block)."""
    return tensor if dtype is None else tensor.to(dtype)
