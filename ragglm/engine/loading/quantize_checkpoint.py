"""`ragglm quantize`: a checkpoint quantized once into a folder that later loads as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ragglm.engine.linear.quantize import QuantConfig, QuantizationError
from ragglm.engine.loading.adapters import AdapterError, lora_for, read_adapter
from ragglm.engine.loading.checkpoint import load_checkpoint
from ragglm.engine.loading.model_loader import GGUF_TOKENIZER_FILE
from ragglm.engine.loading.quant_loader import is_quantized_checkpoint, save_quantized
from ragglm.engine.loading.sources import resolve_model_path
from ragglm.engine.loading.thudm_quant import is_thudm_quantized
from ragglm.errors import ModelNotFoundError

__all__ = ["save_quantized_checkpoint"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")


def save_quantized_checkpoint(src: str | Path, out: str | Path, quant: str | QuantConfig,
                              adapter: str | Path | None = None) -> dict:
    """Quantize SRC (alias, .gguf file or model folder) into the folder OUT; returns quantization.json.

    A LoRA adapter is merged into the float weights before they are quantized, so OUT holds the
    adapted model (quantization.json records which adapter) and loads without it.
    """
    config = QuantConfig.parse(quant)
    if config is None:
        raise QuantizationError("give a quantization to save: int8 or int4")
    path, out = resolve_model_path(src), Path(out)
    if is_quantized_checkpoint(path) or is_thudm_quantized(path):
        raise ModelNotFoundError(f"{path} is already quantized; quantize the original model instead")
    tuned = read_adapter(adapter) if adapter is not None else None
    if tuned is not None and tuned.kind != "lora":
        raise AdapterError(f"adapter {tuned.path}: a P-Tuning v2 prefix is not part of the weights, so it is "
                           f"not saved with them; quantize without it and load with --model {out} --adapter "
                           f"{tuned.path}")
    checkpoint = load_checkpoint(path, None, stream=True, lora=lora_for(path, tuned))
    out.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gguf":
        fields = {k: v for k, v in checkpoint.gguf_fields.items()
                  if k.startswith("tokenizer.") or k == "general.languages"}
        (out / GGUF_TOKENIZER_FILE).write_text(json.dumps(fields, ensure_ascii=False), encoding="utf-8")
        kind = "gguf"
    else:
        for item in path.iterdir():  # config, tokenizer and chat template files travel along
            if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(item, out / item.name)
        kind = "folder"
    extra = {"tokenizer": kind, "source": str(src)}
    if tuned is not None:
        extra["adapter"] = tuned.describe()
    return save_quantized(out, checkpoint.args, checkpoint.tensors, config, extra)
