"""ChatGLM-6B's tokenizer: the sentencepiece model `ice_text.model`, with every id shifted past
the image tokens that come first in the model's vocabulary: 20,000 as the original tokenizer has
it, or `num_image_tokens` of tokenizer_config.json (0 in the later releases, whose ice_text.model
starts at the model's own ids).

Before encoding, newlines become `<n>`, tabs `<|tab|>` and runs of 2 to 80 spaces `<|blank_N|>`
(pieces of the sentencepiece model); decoding turns them back. The control pieces ([gMASK], <sop>,
<eop>, ...) are pieces of the same model, so sentencepiece matches them in any text: `encode_plain`
encodes each such spelling in two parts, so a document never yields a control id.
"""

from __future__ import annotations

from pathlib import Path

from ragglm.engine.tokenizers.specials import SpecialTokens

__all__ = ["ChatGLM6BTokenizer", "CONTROL_PIECES", "NUM_IMAGE_TOKENS", "MAX_BLANK", "TOKENIZER_FILE"]

TOKENIZER_FILE = "ice_text.model"
NUM_IMAGE_TOKENS = 20000  # by default ids 0..19999 are image tokens; text piece i has id 20000 + i
MAX_BLANK = 80  # longest run of spaces with a piece of its own
CONTROL_PIECES = ("[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>")
_NEWLINE, _TAB = "<n>", "<|tab|>"


def _blank(length: int) -> str:
    return f"<|blank_{length}|>"


class ChatGLM6BTokenizer:
    def __init__(self, model: Path | str | bytes, eos_token_ids: list[int] | None = None,
                 num_image_tokens: int = NUM_IMAGE_TOKENS):
        import sentencepiece as spm

        self.offset = num_image_tokens
        if isinstance(model, bytes):
            self.sp = spm.SentencePieceProcessor(model_proto=model)
        else:
            self.sp = spm.SentencePieceProcessor(model_file=str(model))
        known = {piece: self._piece_id(piece) for piece in CONTROL_PIECES}
        self.control = {piece: index for piece, index in known.items() if index is not None}
        self.specials = SpecialTokens(self.control)
        self._newline = self._piece_id(_NEWLINE)
        eop = self.control.get("<eop>")
        default = [i for i in (eop, self.sp.eos_id() + self.offset if self.sp.eos_id() >= 0 else None)
                   if i is not None]
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else default
        self.bos_token = None
        self.eos_token = "<eop>" if eop is not None else None

    @property
    def vocab_size(self) -> int:
        return self.offset + self.sp.vocab_size()

    def encode(self, text: str) -> list[int]:
        """Control pieces written in the text become their ids (sentencepiece matches them)."""
        return self._shift(self.sp.encode(_preprocess(text)))

    def encode_plain(self, text: str) -> list[int]:
        """Text only: each control piece's spelling is cut after its first character, and the parts
        are encoded apart, so sentencepiece never sees it whole."""
        cuts = [match.start() + 1 for match in self.specials.occurrences(text)]
        if not cuts:
            return self.encode(text)
        parts = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        ids = self.encode(parts[0])
        for part in parts[1:]:
            ids += self._continue(part)
        return ids

    def _continue(self, text: str) -> list[int]:
        """Ids of text that follows other text: without the dummy-prefix space sentencepiece puts
        at the start (encoded after a newline piece, then cut there), as the original does."""
        if not text:
            return []
        if self._newline is None:
            return self.encode(text)
        ids = self.sp.encode(_NEWLINE + _preprocess(text))
        cut = ids.index(self._newline - self.offset) + 1
        return self._shift(ids[cut:])

    def decode(self, ids: list[int]) -> str:
        controls = set(self.control.values())
        pieces = [i - self.offset for i in ids if i >= self.offset and i not in controls]
        text = self.sp.decode([i for i in pieces if i < self.sp.vocab_size()])
        text = text.replace(_NEWLINE, "\n").replace(_TAB, "\t")
        for length in range(2, MAX_BLANK + 1):
            text = text.replace(_blank(length), " " * length)
        return text

    def token_id(self, token: str) -> int | None:
        return self._piece_id(token)

    def _piece_id(self, piece: str) -> int | None:
        index = self.sp.piece_to_id(piece)
        if index == self.sp.unk_id() and piece != self.sp.id_to_piece(index):
            return None
        return index + self.offset

    def _shift(self, ids: list[int]) -> list[int]:
        return [i + self.offset for i in ids]


def _preprocess(text: str) -> str:
    text = text.replace("\n", _NEWLINE).replace("\t", _TAB)
    for length in range(MAX_BLANK, 1, -1):
        text = text.replace(" " * length, _blank(length))
    return text
