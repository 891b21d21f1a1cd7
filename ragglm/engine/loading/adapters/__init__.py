"""Fine-tuning adapters loaded with a model: which kind a folder holds, and when each is applied.

- LoRA (PEFT's `adapter_config.json` + `adapter_model.safetensors` / `.bin`): merged into the
  float weights as the checkpoint streams in, before quantization (see lora.py).
- P-Tuning v2 (the output folder of ChatGLM's ptuning/main.py: `config.json` with `pre_seq_len`
  and the prefix encoder's weights): a learnt KV prefix, applied to the built model (ptuning.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ragglm.engine.loading.adapters.errors import AdapterError
from ragglm.engine.loading.adapters.ptuning import apply_ptuning

__all__ = ["ADAPTER_KINDS", "Adapter", "AdapterError", "read_adapter", "lora_for", "apply_to_model"]

ADAPTER_KINDS = ("lora", "ptuning")
_LORA_CONFIG = "adapter_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Adapter:
    path: Path
    kind: str  # one of ADAPTER_KINDS
    digest: str  # of the adapter's config and weight files: cached KV of other weights is never reused

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "digest": self.digest}


def read_adapter(path: str | Path) -> Adapter:
    """The adapter folder at path and its kind, told by its files."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterError(f"adapter {folder}: no such folder; pass --adapter the folder holding "
                           f"{_LORA_CONFIG} (LoRA) or config.json with pre_seq_len (P-Tuning v2)")
    if (folder / _LORA_CONFIG).is_file():
        kind = "lora"
    elif _pre_seq_len(folder / "config.json"):
        kind = "ptuning"
    else:
        raise AdapterError(f"adapter {folder}: neither {_LORA_CONFIG} (a PEFT LoRA adapter) nor a config.json "
                           "with pre_seq_len (a P-Tuning v2 checkpoint); pass the folder the training wrote")
    return Adapter(folder.resolve(), kind, _digest(folder))


def _pre_seq_len(config: Path) -> int | None:
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("pre_seq_len")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise AdapterError(f"{config}: not a readable JSON object ({exc.__class__.__name__})") from exc
    return value if isinstance(value, int) and value > 0 else None


def _digest(folder: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for item in sorted(folder.iterdir()):
        if item.is_file() and (item.suffix in _WEIGHT_SUFFIXES or item.name in (_LORA_CONFIG, "config.json")):
            digest.update(item.name.encode() + b"\0")
            with item.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
    return digest.hexdigest()


def lora_for(model_path: Path, adapter: Adapter | None):
    """The LoRA adapter to merge while the model at model_path loads; None for no or another kind."""
    if adapter is None or adapter.kind != "lora":
        return None
    from ragglm.engine.loading.adapters.lora import read_lora  # torch: only once a model loads

    if (model_path / "quantization.json").is_file():
        raise AdapterError(f"LoRA adapter {adapter.path}: {model_path} is already quantized, and LoRA merges "
                           "into float weights; quantize the original model with the adapter instead "
                           f"(ragglm quantize ORIGINAL {model_path.name} --adapter {adapter.path})")
    return read_lora(adapter.path)


def apply_to_model(model, adapter: Adapter | None) -> None:
    """What is applied once the model is built: a P-Tuning v2 prefix (LoRA was merged while loading)."""
    if adapter is None or adapter.kind != "ptuning":
        return
    apply_ptuning(model, adapter.path)
