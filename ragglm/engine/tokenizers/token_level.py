"""The tokenizer of a checkpoint folder without tokenizer files: ids in and out, no text.

Such a model still computes logits and generates from token ids; encoding text names the folder
and the files it lacks. Generated ids decode to no text.
"""

from __future__ import annotations

from pathlib import Path

from ragglm.engine.tokenizers.specials import SpecialTokens
from ragglm.errors import ModelNotFoundError

__all__ = ["TokenLevelTokenizer", "TokenLevelFormat"]


class TokenLevelTokenizer:
    specials = SpecialTokens({})
    bos_token = None
    eos_token = None

    def __init__(self, folder: Path, expected: str, eos_token_ids: list[int] | None = None):
        self.folder = folder
        self.expected = expected  # the files this family's tokenizer is read from
        self.eos_token_ids = list(eos_token_ids or [])

    def _missing(self) -> ModelNotFoundError:
        return ModelNotFoundError(f"{self.folder} has no tokenizer ({self.expected}): it runs on token ids only "
                                  "(logits, generate on ids); copy the checkpoint's tokenizer files there to use text")

    def encode(self, text: str) -> list[int]:
        raise self._missing()

    def encode_plain(self, text: str) -> list[int]:
        raise self._missing()

    def decode(self, ids: list[int]) -> str:
        return ""

    def token_id(self, token: str) -> int | None:
        return None


class TokenLevelFormat:
    """A chat format that cannot render: there is no tokenizer to encode the messages."""

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        raise ValueError("this model has no tokenizer files, so no chat format")

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
        return tokenizer.encode_plain("")
