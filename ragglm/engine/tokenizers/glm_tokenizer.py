"""Pick a GLM checkpoint's tokenizer and chat format from the files it ships.

- `tokenizer.json`                      -> GLM-4 (BPE through `tokenizers`), GLM-4 format
- `tokenizer.model`, tiktoken text      -> GLM-4 (byte-level BPE ranks), GLM-4 format
- `tokenizer.model`, sentencepiece      -> ChatGLM3 format, or ChatGLM2 when the checkpoint is one
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from ragglm.engine.tokenizers.glm_chat_format import ChatGLM2Format, ChatGLM3Format, GLM4Format
from ragglm.engine.tokenizers.specials import SpecialTokens
from ragglm.engine.tokenizers.tokenizer import BPETokenizer, SentencePieceTokenizer
from ragglm.errors import ModelNotFoundError

__all__ = ["GLM4_PATTERN", "GLM4_SPECIAL_TOKENS", "TiktokenTokenizer", "load_glm_tokenizer"]

GLM4_SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>",
)
GLM4_STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
# GLM-4's pre-tokenizer pattern (cl100k-like, digits in groups of up to three)
GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def load_glm_tokenizer(folder: Path, config: dict):
    """(tokenizer, chat format) for a GLM checkpoint folder."""
    if (folder / "tokenizer.json").is_file():
        tokenizer = BPETokenizer.from_file(folder / "tokenizer.json", list(GLM4_STOP_TOKENS))
        return tokenizer, GLM4Format()
    model_file = folder / "tokenizer.model"
    if not model_file.is_file():
        raise ModelNotFoundError(f"{folder}: no tokenizer.json or tokenizer.model; copy the checkpoint's tokenizer files there")
    data = model_file.read_bytes()
    if _looks_like_tiktoken(data):
        return TiktokenTokenizer.from_bytes(data), GLM4Format()
    if _is_chatglm2(folder, config):
        return SentencePieceTokenizer(data, SentencePieceTokenizer.CHATGLM2_COMMANDS, ()), ChatGLM2Format()
    return SentencePieceTokenizer(data), ChatGLM3Format()


def _looks_like_tiktoken(data: bytes) -> bool:
    first = data[:200].split(b"\n", 1)[0].split(b" ")
    if len(first) != 2 or not first[1].strip().isdigit():
        return False
    try:
        base64.b64decode(first[0], validate=True)
    except ValueError:
        return False
    return True


def _is_chatglm2(folder: Path, config: dict) -> bool:
    """ChatGLM2 and ChatGLM3 share config and tokenizer model; ChatGLM3's tokenizer adds role tokens."""
    code = folder / "tokenization_chatglm.py"
    if code.is_file():
        return "<|user|>" not in code.read_text(encoding="utf-8", errors="replace")
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        text = tok_config.read_text(encoding="utf-8", errors="replace")
        if "<|user|>" in text:
            return False
        if "chatglm2" in json.loads(text).get("name_or_path", "").lower():
            return True
    return "chatglm2" in str(config.get("_name_or_path", "")).lower()


class TiktokenTokenizer:
    """Byte-level BPE from a tiktoken ranks file ("<base64 token> <rank>" per line), as GLM-4 ships."""

    def __init__(self, ranks: dict[bytes, int], special_tokens: tuple[str, ...] = GLM4_SPECIAL_TOKENS,
                 stop_tokens: tuple[str, ...] = GLM4_STOP_TOKENS, pattern: str = GLM4_PATTERN):
        import regex

        self.ranks = ranks
        self.by_id = {rank: token for token, rank in ranks.items()}
        base = max(ranks.values()) + 1 if ranks else 0
        self.special = {name: base + i for i, name in enumerate(special_tokens)}
        self.specials = SpecialTokens(self.special)
        self.pattern = regex.compile(pattern)
        self.eos_token_ids = [self.special[t] for t in stop_tokens if t in self.special]
        self.bos_token = None
        self.eos_token = stop_tokens[0] if stop_tokens else None
        self._encode_piece = lru_cache(maxsize=65536)(self._bpe)

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs) -> TiktokenTokenizer:
        ranks = {}
        for line in data.splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return cls(ranks, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.ranks) + len(self.special)

    def encode(self, text: str) -> list[int]:
        """Special tokens written in the text become their single ids."""
        ids: list[int] = []
        for part in self.specials.split(text):
            ids += self.encode_plain(part) if isinstance(part, str) else [part]
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Special ids are numbered after the ranks, so byte-pair merges never reach one."""
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            ids += self._encode_piece(piece.encode("utf-8"))
        return ids

    def _bpe(self, piece: bytes) -> tuple[int, ...]:
        """Merge the adjacent pair of lowest rank until no pair is in the vocabulary."""
        if piece in self.ranks:
            return (self.ranks[piece],)
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = self.ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best < 0:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        return tuple(self.ranks[p] for p in parts)

    def decode(self, ids: list[int]) -> str:
        data = b"".join(self.by_id[i] for i in ids if i in self.by_id)
        return data.decode("utf-8", errors="replace")

    def token_id(self, token: str) -> int | None:
        if token in self.special:
            return self.special[token]
        return self.ranks.get(token.encode("utf-8"))
