"""One entry for every float checkpoint: a GGUF file or a model folder of any known family."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.loading.adapters.lora import LoraAdapter, LoraMerge
from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors, read_config
from ragglm.engine.loading.families import family_of
from ragglm.engine.loading.gguf_loader import describe_gguf, read_gguf
from ragglm.engine.loading.quant_loader import drain
from ragglm.engine.loading.tokenizer_files import gguf_tokenizer
from ragglm.engine.loading.weight_names import LLAMA_NAMES, rename_weights
from ragglm.engine.model import ModelArgs
from ragglm.engine.tokenizers.tokenizer import Tokenizer
from ragglm.errors import ModelNotFoundError

__all__ = ["Checkpoint", "load_checkpoint"]


@dataclass
class Checkpoint:
    args: ModelArgs
    # our names -> tensors: a dict, or with stream=True an iterator read one tensor at a time
    tensors: dict[str, Tensor] | Iterator[tuple[str, Tensor]]
    tokenizer: Tokenizer
    chat_format: object  # ChatFormat or one of the GLM formats
    languages: tuple[str, ...]  # languages the model answers well in
    gguf_fields: dict = field(default_factory=dict)  # a GGUF source's metadata; empty for folders


def load_checkpoint(path: Path, dtype: torch.dtype | None, stream: bool = False,
                    lora: LoraAdapter | None = None) -> Checkpoint:
    """Read a .gguf file or a model folder; dtype None keeps each tensor in the checkpoint's dtype
    (GGUF weights are dequantized to float32). A LoRA adapter is merged into each weight it adapts
    as that weight is read; its fit with the model is checked before any weight is."""
    if path.suffix == ".gguf":
        # an adapter was trained on the transformers model, so it names modules as a Llama folder does
        merge = LoraMerge(lora, LLAMA_NAMES, describe_gguf(path).args, str(path)) if lora is not None else None
        gguf = read_gguf(path, dtype)
        tensors = gguf.state_dict if merge is None else dict(merge.merged(drain(gguf.state_dict)))
        return Checkpoint(gguf.args, tensors, *gguf_tokenizer(gguf.metadata, path), gguf_fields=gguf.metadata)
    if path.suffix == ".safetensors" and path.is_file():
        raise ModelNotFoundError(f"{path}: a weights file alone is not a model; point --model at the folder "
                                 "that holds it with its config.json and tokenizer files")
    if not path.is_dir():
        raise ModelNotFoundError(f"{path}: expected a .gguf file or a model folder")
    config = read_config(path)
    family = family_of(path, config)
    args = family.args(config)
    tensors = rename_weights(iter_checkpoint_tensors(path), family.naming, args, dtype)
    if lora is not None:
        tensors = LoraMerge(lora, family.naming, args, str(path)).merged(tensors)
    return Checkpoint(args, tensors if stream else dict(tensors), *family.tokenizer(path, config))
