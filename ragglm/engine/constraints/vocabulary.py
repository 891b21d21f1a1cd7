"""Each token id as the bytes it writes, the form a grammar library matches text against.

Control tokens (chat markers, padding, ids past the tokenizer's vocabulary) write nothing: a
grammar never allows them, except the end tokens, which it allows once the text is complete.
"""

from __future__ import annotations

import weakref
from functools import lru_cache

from ragglm.engine.constraints.grammar import closing_ranks

__all__ = ["token_pieces", "grammar_compiler"]

_COMPILERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_pieces(tokenizer, vocab_size: int) -> list[bytes]:
    """[vocab_size] bytes per id; b"" for ids that write no text."""
    if hasattr(tokenizer, "by_id"):  # tiktoken ranks: the bytes themselves
        pieces = [tokenizer.by_id.get(i, b"") for i in range(vocab_size)]
    elif hasattr(tokenizer, "sp"):
        pieces = [_sentencepiece_bytes(tokenizer.sp, i) for i in range(min(vocab_size, tokenizer.sp.vocab_size()))]
    elif hasattr(tokenizer, "backend"):
        pieces = _backend_bytes(tokenizer.backend, vocab_size)
    else:
        raise TypeError(f"{type(tokenizer).__name__} does not say which bytes its tokens stand for")
    for index in getattr(tokenizer.specials, "all_ids", ()):
        if index < len(pieces):
            pieces[index] = b""
    return pieces + [b""] * (vocab_size - len(pieces))


def grammar_compiler(tokenizer, vocab_size: int):
    """(an xgrammar compiler, token_pieces, closing_ranks) for this tokenizer and model vocabulary, built once per
    tokenizer (the compiler caches what it compiled, so one schema is compiled once per process)."""
    import xgrammar

    held = _COMPILERS.get(tokenizer)
    if held is not None and held[0] == vocab_size:
        return held[1]
    pieces = token_pieces(tokenizer, vocab_size)
    info = xgrammar.TokenizerInfo(pieces, xgrammar.VocabType.RAW,
                                  vocab_size=vocab_size,
                                  stop_token_ids=[i for i in tokenizer.eos_token_ids if i < vocab_size])
    compiler = xgrammar.GrammarCompiler(info, max_threads=1)
    held = (vocab_size, (compiler, pieces, closing_ranks(pieces)))
    _COMPILERS[tokenizer] = held
    return held[1]


def _sentencepiece_bytes(sp, index: int) -> bytes:
    if sp.is_control(index) or sp.is_unknown(index):
        return b""
    piece = sp.id_to_piece(index)
    if sp.is_byte(index):  # "<0x0A>": byte fallback
        return bytes([int(piece[3:-1], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def _backend_bytes(backend, vocab_size: int) -> list[bytes]:
    """A Hugging Face tokenizer's pieces; byte-level ones spell each byte as a printable character."""
    from tokenizers import decoders

    added = backend.get_added_tokens_decoder()
    size = min(vocab_size, backend.get_vocab_size())
    byte_level = isinstance(backend.decoder, decoders.ByteLevel)
    pieces = []
    for index in range(size):
        token = backend.id_to_token(index)
        if token is None or (index in added and added[index].special):
            pieces.append(b"")
        elif byte_level and index not in added:
            pieces.append(bytes(_byte_of()[char] for char in token))
        else:
            pieces.append(backend.decode([index], skip_special_tokens=False).encode("utf-8"))
    return pieces


@lru_cache(maxsize=1)
def _byte_of() -> dict[str, int]:
    """The printable character byte-level BPE writes for each byte, reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars
