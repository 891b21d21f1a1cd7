"""A ready Transformer from a checkpoint: float, quantized while loading, or a quantized folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ragglm.engine.linear.quantize import QuantConfig
from ragglm.engine.loading.adapters import Adapter, apply_to_model, lora_for
from ragglm.engine.loading.adapters.lora import LoraAdapter
from ragglm.engine.loading.assemble import assemble_model, meta_model
from ragglm.engine.loading.checkpoint import load_checkpoint
from ragglm.engine.loading.families import folder_tokenizer
from ragglm.engine.loading.gguf_model import load_gguf
from ragglm.engine.loading.quant_loader import (
    build_quantized,
    is_quantized_checkpoint,
    load_quantized,
)
from ragglm.engine.loading.thudm_quant import is_thudm_quantized, load_thudm_quantized
from ragglm.engine.loading.tokenizer_files import TokenizerFiles, gguf_tokenizer
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.engine.tokenizers.tokenizer import Tokenizer
from ragglm.errors import ModelNotFoundError

__all__ = ["GGUF_TOKENIZER_FILE", "LoadedModel", "load_model"]

GGUF_TOKENIZER_FILE = "tokenizer_gguf.json"  # the tokenizer fields of a GGUF source, kept beside its quantized weights


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    chat_format: object
    languages: tuple[str, ...]
    quant: str | None  # e.g. "int8", "int4:g64"; None for float weights


def load_model(path: Path, config: QuantConfig | None, device: str, dtype: torch.dtype,
               linears_as_stored: bool = False, adapter: Adapter | None = None,
               keep_file_quant: bool = False) -> LoadedModel:
    """The model at path (a .gguf file, a model folder, or a folder written by `ragglm quantize`),
    with its linear layers quantized by config. linears_as_stored leaves float linear weights in
    the checkpoint's dtype (they are about to become bf16 layers), the rest in dtype. A LoRA adapter
    is merged into the float weights as they are read, before quantization; a P-Tuning v2 prefix
    is applied to the built model. keep_file_quant: with config None, a GGUF file keeps its own
    quantization (see gguf_model)."""
    loaded = _load_model(path, config, device, dtype, linears_as_stored, lora_for(path, adapter), keep_file_quant)
    apply_to_model(loaded.model, adapter)
    return loaded


def _load_model(path: Path, config: QuantConfig | None, device: str, dtype: torch.dtype,
                linears_as_stored: bool, lora: LoraAdapter | None, keep_file_quant: bool = False) -> LoadedModel:
    if is_quantized_checkpoint(path):  # first: its config.json is a copy of the source's
        return _from_quantized(path, config, device, dtype)
    if is_thudm_quantized(path):
        model, (tokenizer, chat_format, languages), quant = load_thudm_quantized(path, config, device, dtype, lora)
        return LoadedModel(model, tokenizer, chat_format, languages, quant)
    if path.suffix == ".gguf" and path.is_file() and lora is None:  # streamed from its blocks; see gguf_model
        model, (tokenizer, chat_format, languages), quant = load_gguf(path, config, device, dtype, linears_as_stored,
                                                                      use_default=keep_file_quant)
        return LoadedModel(model, tokenizer, chat_format, languages, quant)
    # quantized layers are built from a stream in the checkpoint's dtype (each weight is converted
    # block by block while quantized), so the float model is never whole in memory; likewise linear
    # layers that become bf16: a bf16 6B checkpoint never exists in float32
    as_stored = path.is_dir() and (config is not None or linears_as_stored)
    checkpoint = load_checkpoint(path, None if as_stored else dtype, stream=config is not None, lora=lora)
    if config is None:
        model = _build(checkpoint.args, checkpoint.tensors, device)
        if as_stored:
            _cast_all_but_linears(model, dtype)
    else:
        model = build_quantized(checkpoint.args, checkpoint.tensors, device, dtype, config)
    quant = config.name if config else None
    return LoadedModel(model, checkpoint.tokenizer, checkpoint.chat_format, checkpoint.languages, quant)


def _from_quantized(path: Path, config: QuantConfig | None, device, dtype) -> LoadedModel:
    model, meta = load_quantized(path, device, dtype)
    if config is not None and config.scheme != meta["scheme"]:
        raise ModelNotFoundError(f"{path} holds {meta['scheme']} weights, not {config.scheme}; "
                                 f"drop --quant or quantize the original model again")
    quant = QuantConfig(meta["scheme"], meta["group_size"]).name
    return LoadedModel(model, *_tokenizer_of_quantized(path, meta), quant)


def _tokenizer_of_quantized(path: Path, meta: dict) -> TokenizerFiles:
    if meta.get("tokenizer") == "gguf":
        tokenizer_file = path / GGUF_TOKENIZER_FILE
        return gguf_tokenizer(json.loads(tokenizer_file.read_text(encoding="utf-8")), tokenizer_file)
    return folder_tokenizer(path)


def _build(args: ModelArgs, state_dict: dict, device: str) -> Transformer:
    return assemble_model(meta_model(args), state_dict, device, "checkpoint",
                          "checkpoint tensors do not fit its configuration")


def _cast_all_but_linears(model: Transformer, dtype: torch.dtype) -> None:
    """Embeddings and norms to dtype, one tensor at a time; linear weights stay as loaded."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)
