"""Tokenizers behind one small interface: encode, decode, special token ids.

`encode` reads control strings written in the text ("<|im_start|>") as their single ids: that is
how chat markup is spelled. `encode_plain` reads all text as text and never yields a control id:
message contents (documents, questions) go through it, so they cannot open or close a turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ragglm.engine.tokenizers.gguf_sentencepiece import (
    GGUFSentencePieceTokenizer,
    SentencePieceFields,
)
from ragglm.engine.tokenizers.specials import SpecialTokens

__all__ = ["CHAT_STOP_TOKENS", "BPETokenizer", "SentencePieceTokenizer", "Tokenizer", "bpe_from_gguf", "tokenizer_from_gguf"]

# besides eos_token_id, the end-of-turn tokens of chat vocabularies written to GGUF
# Tokens that end a chat turn in the families we read, beside a file's own end-of-text token (Llama 3.1
# ends a turn that calls a tool with <|eom_id|>, and waits for its result)
CHAT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>")


class Tokenizer(Protocol):
    eos_token_ids: list[int]
    specials: SpecialTokens  # the control strings `encode` turns into single ids

    def encode(self, text: str) -> list[int]: ...

    def encode_plain(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_id(self, token: str) -> int | None: ...


class BPETokenizer:
    """A Hugging Face `tokenizers` model; special tokens in the text map to their single ids."""

    def __init__(self, backend, eos_token_ids: list[int], bos_token: str | None = None, eos_token: str | None = None):
        self.backend = backend
        self.eos_token_ids = eos_token_ids
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.specials = SpecialTokens.from_backend(backend)
        # a copy that leaves special strings to the model's ordinary pieces; a copy rather than a
        # toggled flag, so concurrent encodes never see the other mode
        self.plain_backend = type(backend).from_str(backend.to_str())
        self.plain_backend.encode_special_tokens = True

    @classmethod
    def from_file(cls, path: Path, eos_tokens: list[str]) -> BPETokenizer:
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_file(str(path))
        ids = [i for i in (backend.token_to_id(t) for t in eos_tokens) if i is not None]
        return cls(backend, ids, eos_token=eos_tokens[0] if eos_tokens else None)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_plain(self, text: str) -> list[int]:
        ids = self._plain(text)
        if self.specials.all_ids.isdisjoint(ids):
            return ids
        return self._encode_breaking_specials(text)

    def _plain(self, text: str) -> list[int]:
        return self.plain_backend.encode(text, add_special_tokens=False).ids

    def _encode_breaking_specials(self, text: str) -> list[int]:
        """For vocabularies whose merges can rebuild a control token from its characters: encode
        each control string character by character, so no merge spans it."""
        ids: list[int] = []
        position = 0
        for match in self.specials.occurrences(text):
            ids += self._plain(text[position:match.start()])
            ids += [i for char in match.group() for i in self._plain(char)]
            position = match.end()
        return ids + self._plain(text[position:])

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)


def bpe_from_gguf(meta: dict) -> BPETokenizer:
    """Rebuild a byte-level BPE tokenizer (GGUF tokenizer model 'gpt2') from its metadata."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported (gpt2 BPE and llama SentencePiece are)")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    backend = Backend(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if meta.get("tokenizer.ggml.pre") in ("smollm", "starcoder"):
        # these vocabularies split every digit on its own before the GPT-2 pattern
        digits = pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    elif meta.get("tokenizer.ggml.pre") == "chatglm-bpe":
        from ragglm.engine.tokenizers.glm_tokenizer import GLM4_PATTERN  # it imports this module

        # GLM-4 splits by its own pattern (digits in threes), then maps bytes as GPT-2 does
        words = pre_tokenizers.Split(Regex(GLM4_PATTERN), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [words, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    token_types = meta.get("tokenizer.ggml.token_type") or []
    control = [tokens[i] for i, kind in enumerate(token_types) if kind == 3]  # 3: control tokens
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])

    def token(key):
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None else None

    eos = token("eos")
    eos_ids = [meta["tokenizer.ggml.eos_token_id"]] if eos else []
    for extra in CHAT_STOP_TOKENS:
        if extra in tokens and tokens.index(extra) not in eos_ids:
            eos_ids.append(tokens.index(extra))
    return BPETokenizer(backend, eos_ids, bos_token=token("bos"), eos_token=eos)


def tokenizer_from_gguf(meta: dict) -> BPETokenizer | GGUFSentencePieceTokenizer:
    """The tokenizer of GGUF metadata: 'gpt2' (byte-level BPE) or 'llama' (SentencePiece)."""
    if meta.get("tokenizer.ggml.model") == "llama":
        return GGUFSentencePieceTokenizer(SentencePieceFields.from_metadata(meta), CHAT_STOP_TOKENS)
    return bpe_from_gguf(meta)


class SentencePieceTokenizer:
    """ChatGLM2/3's tokenizer: a sentencepiece model plus command tokens numbered after its vocabulary.

    The command tokens ([gMASK], sop, <|user|>, ...) are not pieces of the sentencepiece model;
    they never come out of `encode` and are placed by the chat format by id.
    """

    specials = SpecialTokens({})  # no text becomes a command: `encode` is already plain

    CHATGLM2_COMMANDS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
    CHATGLM3_COMMANDS = CHATGLM2_COMMANDS + ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")

    def __init__(self, model_file: Path | str | bytes, commands: tuple[str, ...] = CHATGLM3_COMMANDS,
                 stop_commands: tuple[str, ...] = ("<|user|>", "<|observation|>")):
        import sentencepiece as spm

        if isinstance(model_file, bytes):
            self.sp = spm.SentencePieceProcessor(model_proto=model_file)
        else:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        base = self.sp.vocab_size()
        self.commands = {name: base + i for i, name in enumerate(commands)}
        self.eos_token_ids = [self.sp.eos_id()] + [self.commands[c] for c in stop_commands if c in self.commands]
        self.bos_token = None
        self.eos_token = self.sp.id_to_piece(self.sp.eos_id())

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size() + len(self.commands)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_plain(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        base = self.sp.vocab_size()
        return self.sp.decode([i for i in ids if i < base])

    def token_id(self, token: str) -> int | None:
        if token in self.commands:
            return self.commands[token]
        index = self.sp.piece_to_id(token)
        return None if index == self.sp.unk_id() and token != self.sp.id_to_piece(index) else index
