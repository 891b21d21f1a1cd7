"""Checkpoint tensor names -> our Transformer's names, as one stream driven by a table per naming.

A `Naming` says which of a checkpoint's tensors map one to one onto ours and which are concatenated
into one of ours (separate q/k/v into `wqkv`, gate and up into `w_gate_up`), and how a part is
transformed first (GGUF's llama Q/K row order). A new naming (another checkpoint family, another
export format) is a new table; the stream stays the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["Naming", "rename_weights", "to_their_names", "LLAMA_NAMES", "GLM_NAMES", "CHATGLM_NAMES",
           "CHATGLM6B_NAMES", "GGUF_NAMES", "GGUF_LLAMA_NAMES", "unpermute_rows"]

PartTransform = Callable[[Tensor, ModelArgs], Tensor]


@dataclass(frozen=True)
class Naming:
    """How one checkpoint naming maps onto ours.

    top: their full name -> our name, for tensors outside the layers.
    layer_prefix: their layer tensors are named f"{layer_prefix}{N}.{rest}".
    layer: their rest -> our rest, one to one.
    fused: our rest -> their rests, concatenated along rows in this order.
    transforms: their rest -> a function applied to that tensor before it is used.
    Names in none of these (rotary tables the config recomputes, for one) are skipped.
    """

    top: dict[str, str]
    layer_prefix: str
    layer: dict[str, str]
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    transforms: dict[str, PartTransform] = field(default_factory=dict)

    def fused_into(self, rest: str) -> tuple[str, tuple[str, ...]] | None:
        """(our rest, its parts) for a part of a fused tensor; None for anything else."""
        for ours, parts in self.fused.items():
            if rest in parts:
                return ours, parts
        return None


def rename_weights(tensors: Iterable[tuple[str, Tensor]], naming: Naming, args: ModelArgs,
                   dtype: torch.dtype | None) -> Iterator[tuple[str, Tensor]]:
    """(their name, tensor) -> (our name, tensor), one tensor at a time; dtype None keeps each
    tensor's own (a quantizing consumer converts block by block).

    A fused tensor goes out as soon as its last part arrives, so at most one layer's parts wait
    here. A part whose siblings never arrive raises ModelNotFoundError naming the missing tensor.
    """
    # tensors leave through `pending` and no local keeps them, so the consumer can free each one
    # as soon as it is done with it, while this generator waits
    pending: dict[str, Tensor] = {}
    for name, tensor in tensors:
        if name in naming.top:
            ours = naming.top[name]
            if ours == "output.weight" and args.tie_embeddings:
                continue
            pending[name] = _cast(tensor, dtype)
            del tensor
            yield ours, pending.pop(name)
            continue
        if not name.startswith(naming.layer_prefix):
            continue
        layer, _, rest = name[len(naming.layer_prefix):].partition(".")
        fused = naming.fused_into(rest)
        if rest not in naming.layer and fused is None:
            continue
        pending[name] = _cast(tensor, dtype)
        del tensor
        if rest in naming.transforms:
            pending[name] = naming.transforms[rest](pending[name], args)
        if fused is None:
            yield f"layers.{layer}.{naming.layer[rest]}", pending.pop(name)
            continue
        ours, parts = fused
        keys = [f"{naming.layer_prefix}{layer}.{part}" for part in parts]
        if all(key in pending for key in keys):
            yield f"layers.{layer}.{ours}", torch.cat([pending.pop(key) for key in keys])
    if pending:
        raise ModelNotFoundError(_unpaired(naming, sorted(pending)))


def _unpaired(naming: Naming, waiting: list[str]) -> str:
    name = waiting[0]
    layer, _, rest = name[len(naming.layer_prefix):].partition(".")
    ours, parts = naming.fused_into(rest)
    missing = [f"{naming.layer_prefix}{layer}.{part}" for part in parts
               if f"{naming.layer_prefix}{layer}.{part}" not in waiting]
    return (f"checkpoint lacks {missing[0]}: layers.{layer}.{ours} is built from "
            f"{', '.join(parts)} and only {name} arrived")


def _cast(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    return tensor if dtype is None else tensor.to(dtype)


def to_their_names(our_state_dict: dict[str, Tensor], naming: Naming) -> dict[str, Tensor]:
    """Our naming back to a one-to-one naming (to export, or to build test checkpoints)."""
    top = {ours: theirs for theirs, ours in naming.top.items()}
    layer = {ours: theirs for theirs, ours in naming.layer.items()}
    out = {}
    for name, tensor in our_state_dict.items():
        if name in top:
            out[top[name]] = tensor
        else:
            _, index, rest = name.split(".", 2)
            out[f"{naming.layer_prefix}{index}.{layer[rest]}"] = tensor
    return out


def unpermute_rows(weight: Tensor, n_heads: int) -> Tensor:
    """GGUF stores llama Q/K rows with rotary pairs interleaved; restore the halves layout."""
    out, inp = weight.shape[0], weight.shape[1:]
    return weight.reshape(n_heads, out // n_heads // 2, 2, *inp).transpose(1, 2).reshape(weight.shape)


_QKV = ("attention.wqkv.weight", "attention.wqkv.bias")


def _separate_parts(top: dict[str, str], layer_prefix: str, norms: tuple[str, str], attention: str,
                    q: str, k: str, v: str, o: str, gate: str, up: str, down: str) -> Naming:
    """A naming that stores q, k, v and gate, up as separate tensors; attention prefixes q, k, v and o."""
    return Naming(
        top=top,
        layer_prefix=layer_prefix,
        layer={f"{norms[0]}.weight": "attention_norm.weight", f"{norms[1]}.weight": "ffn_norm.weight",
               f"{attention}{o}.weight": "attention.wo.weight", f"{down}.weight": "feed_forward.w_down.weight"},
        fused={_QKV[0]: tuple(f"{attention}{part}.weight" for part in (q, k, v)),
               _QKV[1]: tuple(f"{attention}{part}.bias" for part in (q, k, v)),
               "feed_forward.w_gate_up.weight": (f"{gate}.weight", f"{up}.weight")},
    )


# Llama, Qwen2, Mistral in transformers' naming: q/k/v and gate/up are separate
LLAMA_NAMES = _separate_parts(
    {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
     "lm_head.weight": "output.weight"},
    "model.layers.", ("input_layernorm", "post_attention_layernorm"), "self_attn.",
    "q_proj", "k_proj", "v_proj", "o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

# GLM in transformers' naming (model_type glm): q/k/v separate, gate_up_proj already [gate | up]
GLM_NAMES = Naming(
    top=LLAMA_NAMES.top,
    layer_prefix="model.layers.",
    layer={
        "input_layernorm.weight": "attention_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.o_proj.weight": "attention.wo.weight",
        "mlp.gate_up_proj.weight": "feed_forward.w_gate_up.weight",
        "mlp.down_proj.weight": "feed_forward.w_down.weight",
    },
    fused={qkv: LLAMA_NAMES.fused[qkv] for qkv in _QKV},
)

# ChatGLM2/3 and GLM-4 in the original naming (model_type chatglm): QKV and [gate | up] come fused
# in our order
CHATGLM_NAMES = Naming(
    top={"transformer.embedding.word_embeddings.weight": "tok_embeddings.weight",
         "transformer.encoder.final_layernorm.weight": "norm.weight",
         "transformer.output_layer.weight": "output.weight"},
    layer_prefix="transformer.encoder.layers.",
    layer={
        "input_layernorm.weight": "attention_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attention.query_key_value.weight": "attention.wqkv.weight",
        "self_attention.query_key_value.bias": "attention.wqkv.bias",
        "self_attention.dense.weight": "attention.wo.weight",
        "mlp.dense_h_to_4h.weight": "feed_forward.w_gate_up.weight",
        "mlp.dense_4h_to_h.weight": "feed_forward.w_down.weight",
    },
)

# llama.cpp's GGUF naming (qwen2 files: rows in the halves layout, as in transformers)
GGUF_NAMES = _separate_parts(
    {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
     "output.weight": "output.weight"},
    "blk.", ("attn_norm", "ffn_norm"), "attn_", "q", "k", "v", "output", "ffn_gate", "ffn_up", "ffn_down")


def _unpermute_q(weight: Tensor, args: ModelArgs) -> Tensor:
    return unpermute_rows(weight, args.n_heads)


def _unpermute_k(weight: Tensor, args: ModelArgs) -> Tensor:
    return unpermute_rows(weight, args.n_kv_heads)


# llama GGUF files interleave Q/K rows for llama.cpp's rope kernel
GGUF_LLAMA_NAMES = Naming(
    GGUF_NAMES.top, GGUF_NAMES.layer_prefix, GGUF_NAMES.layer, GGUF_NAMES.fused,
    transforms={"attn_q.weight": _unpermute_q, "attn_q.bias": _unpermute_q,
                "attn_k.weight": _unpermute_k, "attn_k.bias": _unpermute_k},
)


def _heads_to_blocks(tensor: Tensor, args: ModelArgs) -> Tensor:
    """ChatGLM-6B's fused QKV rows go head by head ([q_h | k_h | v_h] for each head); ours are all
    queries, then all keys, then all values."""
    rows = tensor.reshape(args.n_heads, 3, args.head_dim, *tensor.shape[1:])
    return rows.transpose(0, 1).reshape(tensor.shape)


def _pairs(ours: str, theirs: str) -> dict[str, str]:
    return {f"{theirs}.weight": f"{ours}.weight", f"{theirs}.bias": f"{ours}.bias"}


# ChatGLM-6B (model_type chatglm with position_encoding_2d): LayerNorm, biases on every linear layer
CHATGLM6B_NAMES = Naming(
    top={"transformer.word_embeddings.weight": "tok_embeddings.weight",
         **{f"transformer.final_layernorm.{p}": f"norm.{p}" for p in ("weight", "bias")},
         "lm_head.weight": "output.weight"},
    layer_prefix="transformer.layers.",
    layer={**_pairs("attention_norm", "input_layernorm"), **_pairs("ffn_norm", "post_attention_layernorm"),
           **_pairs("attention.wqkv", "attention.query_key_value"), **_pairs("attention.wo", "attention.dense"),
           **_pairs("feed_forward.w_gate_up", "mlp.dense_h_to_4h"),
           **_pairs("feed_forward.w_down", "mlp.dense_4h_to_h")},
    transforms={"attention.query_key_value.weight": _heads_to_blocks,
                "attention.query_key_value.bias": _heads_to_blocks},
)
