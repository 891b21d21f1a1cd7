"""A Hugging Face checkpoint folder's config.json and its tensors, read one at a time."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.loading.safetensors_reader import SafetensorsFile, iter_safetensors
from ragglm.errors import ModelNotFoundError

__all__ = ["read_config", "iter_checkpoint_tensors"]

_CONVERT = ("convert the checkpoint to .safetensors where its origin is trusted "
            "(save_pretrained(..., safe_serialization=True)) and point --model at that folder")


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotFoundError(f"{folder}: no config.json; point --model at a model folder or a .gguf file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}); "
                                 "download the model again") from exc
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{path}: not a JSON object; download the model again")
    return config


def iter_checkpoint_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors one at a time (safetensors read tensor by tensor, .bin files shard by shard).

    Every shard's header is checked here, before the first tensor is read, so a damaged or crafted
    shard is refused before anything is built from the others.
    """
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        for shard in shards:
            SafetensorsFile(shard).close()
        return _chain(iter_safetensors(shard) for shard in shards)
    bins = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")
    if not bins:
        raise ModelNotFoundError(f"{folder}: no .safetensors or .bin weights found")
    for shard in bins:
        _check_zip(shard)
    return _chain(_load_bin(shard).items() for shard in bins)


def _chain(parts) -> Iterator[tuple[str, torch.Tensor]]:
    for part in parts:
        yield from part


def _check_zip(shard: Path) -> None:
    # memory-mapped loading needs the zip layout torch.save has written since 1.6; the older raw
    # pickle layout is also the easiest place to hide code, so it is not read at all
    if not zipfile.is_zipfile(shard):
        raise ModelNotFoundError(f"{shard}: not a PyTorch zip checkpoint (raw pickle files are not loaded); "
                                 f"{_CONVERT}")


def _load_bin(shard: Path) -> dict[str, torch.Tensor]:
    """The shard's tensors; only tensors and plain containers are unpickled (weights_only)."""
    try:
        state = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ModelNotFoundError(f"{shard}: holds Python objects other than tensors, which are never loaded; "
                                 f"{_CONVERT}") from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelNotFoundError(f"{shard}: not a readable PyTorch checkpoint ({first}); {_CONVERT}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFoundError(f"{shard}: does not hold a name -> tensor mapping; {_CONVERT}")
    return state
