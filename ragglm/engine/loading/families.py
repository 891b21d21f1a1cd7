"""What a checkpoint folder's `model_type` means: its ModelArgs, tensor naming and tokenizer files.

A new family of checkpoints is one more entry here (and a Naming table in weight_names.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragglm.engine.loading.glm_config import chatglm_args, glm_args, is_chatglm6b
from ragglm.engine.loading.llama_config import llama_args
from ragglm.engine.loading.tokenizer_files import (
    TokenizerFiles,
    chatglm6b_folder_tokenizer,
    glm_folder_tokenizer,
    hf_folder_tokenizer,
    token_level_unless_files,
)
from ragglm.engine.loading.weight_names import (
    CHATGLM6B_NAMES,
    CHATGLM_NAMES,
    GLM_NAMES,
    LLAMA_NAMES,
    Naming,
)
from ragglm.engine.model import ModelArgs
from ragglm.errors import ModelNotFoundError

__all__ = ["CHATGLM6B", "Family", "FAMILIES", "family_of", "folder_tokenizer"]


@dataclass(frozen=True)
class Family:
    args: Callable[[dict], ModelArgs]
    naming: Naming
    tokenizer: Callable[[Path, dict], TokenizerFiles]


_LLAMA = Family(llama_args, LLAMA_NAMES, token_level_unless_files(hf_folder_tokenizer))
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    "chatglm": Family(chatglm_args, CHATGLM_NAMES, token_level_unless_files(glm_folder_tokenizer)),
    "glm": Family(glm_args, GLM_NAMES, token_level_unless_files(glm_folder_tokenizer)),
}
# model_type "chatglm" with position_encoding_2d: the first ChatGLM
CHATGLM6B = Family(chatglm_args, CHATGLM6B_NAMES, token_level_unless_files(chatglm6b_folder_tokenizer))


def family_of(path: Path, config: dict) -> Family:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ModelNotFoundError(
            f"{path}: model_type {model_type!r} is not supported ({', '.join(FAMILIES)} are)")
    return CHATGLM6B if is_chatglm6b(config) else FAMILIES[model_type]


def folder_tokenizer(path: Path) -> TokenizerFiles:
    """The tokenizer of a model folder; without a known config.json, its `tokenizer.json`."""
    config_path = path / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    family = (CHATGLM6B if is_chatglm6b(config) else FAMILIES.get(config.get("model_type")))
    return (family.tokenizer if family else hf_folder_tokenizer)(path, config)
