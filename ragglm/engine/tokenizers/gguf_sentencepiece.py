"""A SentencePiece tokenizer rebuilt from a GGUF file's fields (`tokenizer.ggml.model` "llama").

llama.cpp's converters write a SentencePiece model as three parallel arrays: piece texts, scores
and token types (the types are SentencePiece's own numbers: 1 normal, 2 unknown, 3 control,
4 user defined, 5 unused, 6 byte). Those are the pieces of a SentencePiece model proto; with the
BPE model type (merges go by the score of the merged piece, as llama.cpp encodes them), byte
fallback when the vocabulary has byte pieces, and `add_space_prefix` as the dummy prefix, the
sentencepiece library encodes with the rebuilt proto as it did with the original model.

What a GGUF file does not keep is not rebuilt: a normalization table (the files of llama.cpp
carry none, and llama.cpp does not normalize either) and the training settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragglm.engine.tokenizers.specials import SpecialTokens

__all__ = ["NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE", "SentencePieceFields",
           "GGUFSentencePieceTokenizer", "sentencepiece_proto"]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class SentencePieceFields:
    """The tokenizer fields of a GGUF file that a SentencePiece model needs."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = True
    add_space_prefix: bool = True

    @classmethod
    def from_metadata(cls, meta: dict) -> SentencePieceFields:
        if meta.get("tokenizer.ggml.model") != "llama":
            raise ValueError(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not SentencePiece ('llama')")
        tokens = list(meta["tokenizer.ggml.tokens"])
        scores = meta.get("tokenizer.ggml.scores")
        types = meta.get("tokenizer.ggml.token_type")
        scores = [0.0] * len(tokens) if scores is None else [float(s) for s in scores]
        types = [NORMAL] * len(tokens) if types is None else [int(t) for t in types]
        if not (len(tokens) == len(scores) == len(types)):
            raise ValueError(f"GGUF tokenizer arrays disagree: {len(tokens)} tokens, {len(scores)} scores, "
                             f"{len(types)} token types")

        def index(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}_token_id")
            return value if isinstance(value, int) and 0 <= value < len(tokens) else None

        unk = index("unknown")
        if unk is None:
            unk = next((i for i, kind in enumerate(types) if kind == UNKNOWN), None)
        return cls(tokens, scores, types, unk, index("bos"), index("eos"), index("padding"),
                   bool(meta.get("tokenizer.ggml.add_bos_token", True)),
                   bool(meta.get("tokenizer.ggml.add_space_prefix", True)))


def sentencepiece_proto(fields: SentencePieceFields) -> tuple[bytes, dict[int, str]]:
    """(serialized ModelProto, {id: text} of pieces renamed in the proto).

    A SentencePiece model holds each text once; a GGUF vocabulary may list a text twice (a
    converter's command token that is also an ordinary piece). The later one keeps its id under a
    unique stand-in text, as a control piece.

    Unused pieces (a padded vocabulary's "[PADn]") become control pieces: encoding never yields
    either kind, and control pieces write nothing when decoded, as ids past a SentencePiece
    model's own vocabulary do in the original tokenizers.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    seen: set[str] = set()
    renamed: dict[int, str] = {}
    for i, (text, score, kind) in enumerate(zip(fields.tokens, fields.scores, fields.types, strict=True)):
        if i == fields.unk_id:
            kind = UNKNOWN
        elif kind == UNKNOWN:  # a model has one unknown piece
            kind = CONTROL
        if kind == UNUSED:
            kind = CONTROL
        elif kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE):
            kind = NORMAL
        if text in seen or text == "":
            renamed[i] = text
            text, kind = _stand_in(i, seen, fields.tokens), CONTROL
        seen.add(text)
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = text, score, kind
    spec = model.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(fields.tokens)
    spec.byte_fallback = BYTE in fields.types
    for name, value in (("unk", fields.unk_id), ("bos", fields.bos_id), ("eos", fields.eos_id),
                        ("pad", fields.pad_id)):
        # the processor finds bos/eos/pad by these texts, so they must be the pieces' own
        setattr(spec, f"{name}_id", -1 if value is None else value)
        if value is not None:
            setattr(spec, f"{name}_piece", model.pieces[value].piece)
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = fields.add_space_prefix
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString(), renamed


def _stand_in(index: int, seen: set[str], tokens: list[str]) -> str:
    """A text for a renamed piece that no other piece has (a noncharacter, never in real text)."""
    text = f"\ufdd0{index}"
    while text in seen or text in tokens:
        text += "\ufdd0"
    return text


class GGUFSentencePieceTokenizer:
    """encode/decode through the rebuilt model; control tokens by their GGUF text.

    control_in_text: `encode` reads control texts written in the text ("<s>", "[INST]" where it is
    one) as their ids, as a chat template needs; off for the GLM formats, which place their
    commands by id and encode all text as text, as the original ChatGLM tokenizer does.
    """

    def __init__(self, fields: SentencePieceFields, stop_tokens: tuple[str, ...] = (),
                 control_in_text: bool = True):
        import sentencepiece as spm

        if fields.unk_id is None:
            raise ValueError("GGUF SentencePiece vocabulary has no unknown token (type 2 or unknown_token_id)")
        proto, _ = sentencepiece_proto(fields)
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.fields = fields
        self.add_bos = fields.add_bos
        self._ids: dict[str, int] = {}
        for i, text in enumerate(fields.tokens):
            self._ids.setdefault(text, i)
        control = {text: i for text, i in self._ids.items() if fields.types[i] == CONTROL and text}
        self.specials = SpecialTokens(control if control_in_text else {})
        self.bos_token = fields.tokens[fields.bos_id] if fields.bos_id is not None else None
        self.eos_token = fields.tokens[fields.eos_id] if fields.eos_id is not None else None
        eos_ids = [fields.eos_id] if fields.eos_id is not None else []
        for name in stop_tokens:
            if name in self._ids and self._ids[name] not in eos_ids:
                eos_ids.append(self._ids[name])
        self.eos_token_ids = eos_ids

    @property
    def vocab_size(self) -> int:
        return len(self.fields.tokens)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self.specials.split(text):
            ids += self.sp.encode(part) if isinstance(part, str) else [part]
        return ids

    def encode_plain(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size])

    def token_id(self, token: str) -> int | None:
        return self._ids.get(token)
