"""P-Tuning v2 checkpoints (the output folder of ChatGLM's ptuning/main.py) as a KV prefix.

The folder holds the model's `config.json` with `pre_seq_len` and `prefix_projection`, and the
prefix encoder's weights: `transformer.prefix_encoder.embedding.weight`, plus the two-layer MLP
`trans.0` -> tanh -> `trans.2` when `prefix_projection` is true. The encoder turns prefix tokens
0..P-1 into keys and values of every layer, [P, layers * 2 * kv heads * head dim], which the
model then holds in front of every prompt's KV (Transformer.set_kv_prefix).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.loading.adapters.errors import AdapterError
from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors
from ragglm.engine.model import Transformer
from ragglm.errors import ModelNotFoundError

__all__ = ["apply_ptuning", "prefix_kv", "read_prefix_encoder"]

_ENCODER = "prefix_encoder."
_PROJECTION = ("trans.0.weight", "trans.0.bias", "trans.2.weight", "trans.2.bias")


def apply_ptuning(model: Transformer, folder: Path) -> None:
    """Install the P-Tuning v2 prefix of folder into model; AdapterError when it was trained for
    another model shape (naming both)."""
    folder = Path(folder)
    config, weights = read_prefix_encoder(folder)
    args = model.args
    _check_config(folder, config, args)
    encoded = _encode(weights, config["pre_seq_len"], folder)  # [P, layers * 2 * Hkv * D]
    per_token = args.n_layers * 2 * args.n_kv_heads * args.head_dim
    if encoded.shape[1] != per_token:
        raise AdapterError(
            f"P-Tuning checkpoint {folder}: its prefix encoder gives {encoded.shape[1]} values per prefix token, "
            f"the model needs {per_token} ({args.n_layers} layers x 2 x {args.n_kv_heads} kv heads x "
            f"{args.head_dim} head dim); it was trained for another model")
    kv = prefix_kv(encoded, args.n_layers, args.n_kv_heads, args.head_dim)
    digest = hashlib.blake2b(encoded.numpy().tobytes(), digest_size=16).hexdigest()
    model.set_kv_prefix(kv, name=f"ptuning-{digest}")


def read_prefix_encoder(folder: Path) -> tuple[dict, dict[str, Tensor]]:
    """(config.json, prefix encoder tensors named from `embedding.weight` on) of a P-Tuning folder."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"P-Tuning checkpoint {folder}: no readable config.json ({exc.__class__.__name__}); "
                           "pass the folder ptuning/main.py wrote") from exc
    if not isinstance(config, dict) or not isinstance(config.get("pre_seq_len"), int) or config["pre_seq_len"] < 1:
        raise AdapterError(f"{config_path}: no positive pre_seq_len; not a P-Tuning v2 checkpoint")
    try:
        tensors = {name[name.index(_ENCODER) + len(_ENCODER):]: tensor.float()
                   for name, tensor in iter_checkpoint_tensors(folder) if _ENCODER in name}
    except ModelNotFoundError as exc:
        raise AdapterError(f"P-Tuning checkpoint {folder}: {exc}") from exc
    if "embedding.weight" not in tensors:
        raise AdapterError(f"P-Tuning checkpoint {folder}: its weights lack transformer.prefix_encoder.embedding.weight")
    return config, tensors


def prefix_kv(encoded: Tensor, n_layers: int, n_kv_heads: int, head_dim: int) -> list[tuple[Tensor, Tensor]]:
    """[P, layers * 2 * Hkv * D] -> per layer (keys, values) [Hkv, P, D], in the original's order
    (layer-major, keys before values)."""
    P = encoded.shape[0]
    kv = encoded.view(P, n_layers * 2, n_kv_heads, head_dim).permute(1, 2, 0, 3)  # [L * 2, Hkv, P, D]
    return [(kv[2 * layer].contiguous(), kv[2 * layer + 1].contiguous()) for layer in range(n_layers)]


def _encode(weights: dict[str, Tensor], pre_seq_len: int, folder: Path) -> Tensor:
    embedding = weights["embedding.weight"]  # [P, width]
    if embedding.ndim != 2 or embedding.shape[0] != pre_seq_len:
        raise AdapterError(f"P-Tuning checkpoint {folder}: prefix embedding {tuple(embedding.shape)} does not "
                           f"hold pre_seq_len={pre_seq_len} rows")
    present = [name for name in _PROJECTION if name in weights]
    if not present:
        return embedding
    if len(present) != len(_PROJECTION):
        missing = sorted(set(_PROJECTION) - set(present))
        raise AdapterError(f"P-Tuning checkpoint {folder}: the prefix projection lacks prefix_encoder.{missing[0]}")
    try:
        hidden = torch.tanh(torch.nn.functional.linear(embedding, weights["trans.0.weight"], weights["trans.0.bias"]))
        return torch.nn.functional.linear(hidden, weights["trans.2.weight"], weights["trans.2.bias"])
    except RuntimeError as exc:
        raise AdapterError(f"P-Tuning checkpoint {folder}: the prefix projection's shapes do not chain "
                           f"(embedding {tuple(embedding.shape)}, trans.0 {tuple(weights['trans.0.weight'].shape)}, "
                           f"trans.2 {tuple(weights['trans.2.weight'].shape)})") from exc


def _check_config(folder: Path, config: dict, args) -> None:
    """The shape the checkpoint's config.json names, where it names one, against the model's."""
    theirs = {"num_layers": config.get("num_layers"), "hidden_size": config.get("hidden_size")}
    ours = {"num_layers": args.n_layers, "hidden_size": args.dim}
    for key, value in theirs.items():
        if isinstance(value, int) and value != ours[key]:
            raise AdapterError(f"P-Tuning checkpoint {folder}: trained for {key}={value}, the model has "
                               f"{key}={ours[key]}; load the model it was trained on")
