"""A checkpoint's tokenizer and chat format from the files it ships (or a GGUF file's fields)."""

from __future__ import annotations

import json
from pathlib import Path

from ragglm.engine.loading.gguf_chatglm import chatglm_gguf_tokenizer, is_chatglm_vocab
from ragglm.engine.tokenizers.chat_format import ChatFormat
from ragglm.engine.tokenizers.chatglm6b_format import ChatGLM6BFormat
from ragglm.engine.tokenizers.chatglm6b_tokenizer import NUM_IMAGE_TOKENS, ChatGLM6BTokenizer
from ragglm.engine.tokenizers.chatglm6b_tokenizer import TOKENIZER_FILE as CHATGLM6B_TOKENIZER_FILE
from ragglm.engine.tokenizers.glm_tokenizer import load_glm_tokenizer
from ragglm.engine.tokenizers.token_level import TokenLevelFormat, TokenLevelTokenizer
from ragglm.engine.tokenizers.tokenizer import (
    CHAT_STOP_TOKENS,
    BPETokenizer,
    Tokenizer,
    tokenizer_from_gguf,
)
from ragglm.errors import ModelNotFoundError

__all__ = ["PLAIN_TEMPLATE", "TOKENIZER_FILES", "TokenizerFiles", "chatglm6b_folder_tokenizer", "gguf_tokenizer",
           "glm_folder_tokenizer", "hf_folder_tokenizer", "token_level_unless_files"]

# tokenizer, chat format, languages the model answers well in
TokenizerFiles = tuple[Tokenizer, object, tuple[str, ...]]

# any of these in a folder: it ships a tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", CHATGLM6B_TOKENIZER_FILE)

# For checkpoints without a chat template: plain role-prefixed turns.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def gguf_tokenizer(fields: dict, source: str | Path) -> TokenizerFiles:
    """From a GGUF file's `tokenizer.*` and `general.languages` fields; source (the file) names the
    model in the error raised when they cannot be read."""
    try:
        return _gguf_tokenizer(fields)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        detail = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise ModelNotFoundError(f"{source}: its tokenizer cannot be read from the GGUF metadata ({detail}); "
                                 "convert or download the model again") from error


def _gguf_tokenizer(fields: dict) -> TokenizerFiles:
    if is_chatglm_vocab(fields):  # the GLM formats place their commands by id, with no template
        return chatglm_gguf_tokenizer(fields)
    tokenizer = tokenizer_from_gguf(fields)
    template = fields.get("tokenizer.chat_template") or PLAIN_TEMPLATE
    if getattr(tokenizer, "add_bos", False) and "bos_token" not in template:
        # a SentencePiece model trained with BOS before every text (Llama-2) expects it, template or not
        template = "{{ bos_token }}" + template
    languages = tuple(fields.get("general.languages") or ("en", "zh"))
    return tokenizer, ChatFormat(template, tokenizer.bos_token, tokenizer.eos_token), languages


def hf_folder_tokenizer(path: Path, config: dict) -> TokenizerFiles:
    """`tokenizer.json` with the chat template of `tokenizer_config.json` (Llama, Qwen2, ...)."""
    tok_config_path = path / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
    eos = tok_config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    tokenizer = BPETokenizer.from_file(path / "tokenizer.json", [t for t in (eos, *CHAT_STOP_TOKENS) if t])
    template = tok_config.get("chat_template") or PLAIN_TEMPLATE
    return tokenizer, ChatFormat(template, tok_config.get("bos_token"), eos), ("en", "zh")


def glm_folder_tokenizer(path: Path, config: dict) -> TokenizerFiles:
    return (*load_glm_tokenizer(path, config), ("zh", "en"))


def chatglm6b_folder_tokenizer(path: Path, config: dict) -> TokenizerFiles:
    """ChatGLM-6B's `ice_text.model`; generation stops at the config's eos_token_id (<eop>)."""
    eos = config.get("eos_token_id")
    tokenizer = ChatGLM6BTokenizer(path / CHATGLM6B_TOKENIZER_FILE, [eos] if isinstance(eos, int) else None,
                                   chatglm6b_image_tokens(path, config))
    return tokenizer, ChatGLM6BFormat(), ("zh", "en")


def chatglm6b_image_tokens(path: Path, config: dict) -> int:
    """How many image ids come before ChatGLM-6B's text pieces: tokenizer_config.json's
    num_image_tokens, else what puts [gMASK] at config.json's gmask_token_id, else 20,000."""
    tok_config_path = path / "tokenizer_config.json"
    if tok_config_path.is_file():
        value = json.loads(tok_config_path.read_text(encoding="utf-8")).get("num_image_tokens")
        if isinstance(value, int) and value >= 0:
            return value
    gmask = config.get("gmask_token_id")
    if isinstance(gmask, int):
        piece = ChatGLM6BTokenizer(path / CHATGLM6B_TOKENIZER_FILE, num_image_tokens=0).token_id("[gMASK]")
        if piece is not None and gmask >= piece:
            return gmask - piece
    return NUM_IMAGE_TOKENS


def token_level_unless_files(load):
    """load, or for a folder with none of TOKENIZER_FILES a tokenizer of token ids only (encoding
    text is then an error that names the folder)."""
    def tokenizer(path: Path, config: dict) -> TokenizerFiles:
        if any((path / name).is_file() for name in TOKENIZER_FILES):
            return load(path, config)
        eos = config.get("eos_token_id")
        eos_ids = [i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int)]
        return TokenLevelTokenizer(path, " or ".join(TOKENIZER_FILES), eos_ids), TokenLevelFormat(), ("en", "zh")
    return tokenizer
