"""A Hugging Face checkpoint folder's config.json and its tensors, read one at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.loading.safetensors_reader import iter_safetensors
from ragglm.errors import ModelNotFoundError

__all__ = ["read_config", "iter_checkpoint_tensors"]


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
