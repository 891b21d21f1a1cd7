"""SentencePiece vocabularies rebuilt from GGUF token arrays encode as the original model does."""

from __future__ import annotations

import io

import pytest

from ragglm.engine import Engine
from ragglm.engine.loading.gguf_synthetic import SyntheticShape, write_random_gguf
from ragglm.engine.tokenizers.gguf_sentencepiece import (
    CONTROL,
    NORMAL,
    GGUFSentencePieceTokenizer,
    SentencePieceFields,
)
from ragglm.engine.tokenizers.tokenizer import tokenizer_from_gguf
from tests.engine.gguf_chatglm_fixtures import train_prefixed_sentencepiece
from tests.engine.glm_fixtures import TEXT, train_sentencepiece

TEXTS = [*TEXT[:3], "The filter lasts 6 months; 12345 67.", "  leading, two  spaces,\ttab\nnewline\n\n",
         "emoji 😀, accents ü é, symbols ©✓", "", " ", "\n", "混合 mixed 文本 text 42", "<s> not a marker </s>"]
LLAMA2_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] "
                   "+ ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")


def sentencepiece_fields(model: bytes, **extra) -> dict:
    """What a converter writes for a SentencePiece model: each piece's text, score and type."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model)
    spec = proto.trainer_spec
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": [p.piece for p in proto.pieces],
            "tokenizer.ggml.scores": [p.score for p in proto.pieces],
            "tokenizer.ggml.token_type": [p.type for p in proto.pieces],
            "tokenizer.ggml.unknown_token_id": spec.unk_id, "tokenizer.ggml.bos_token_id": spec.bos_id,
            "tokenizer.ggml.eos_token_id": spec.eos_id, **extra}


@pytest.fixture(scope="module")
def models():
    """Two BPE models with byte fallback: without the dummy prefix (ChatGLM's text kept as is) and
    with it (Llama-2's), the latter with a user-defined piece."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=out, vocab_size=420, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False, user_defined_symbols=["<|im_end|>"],
    )
    return {"plain": train_sentencepiece(), "prefixed": train_prefixed_sentencepiece(), "llama": out.getvalue()}


@pytest.mark.parametrize("name", ["plain", "prefixed", "llama"])
def test_rebuilt_model_encodes_and_decodes_as_the_original(models, name):
    import sentencepiece as spm

    original = spm.SentencePieceProcessor(model_proto=models[name])
    add_prefix = original.encode("a", out_type=str)[0].startswith("▁")
    # the file says whether to prefix a space; without the field, llama.cpp's default (yes) holds
    fields = sentencepiece_fields(models[name], **({} if add_prefix else {"tokenizer.ggml.add_space_prefix": False}))
    rebuilt = tokenizer_from_gguf(fields)
    assert isinstance(rebuilt, GGUFSentencePieceTokenizer)
    for text in [*TEXTS, "a<|im_end|>b"]:
        ids = rebuilt.encode_plain(text)
        assert ids == original.encode(text), text
        assert rebuilt.decode(ids) == original.decode(ids)
    assert rebuilt.vocab_size == original.vocab_size()


def test_control_texts_are_ids_in_encode_and_text_in_encode_plain(models):
    rebuilt = tokenizer_from_gguf(sentencepiece_fields(models["llama"]))
    assert rebuilt.encode("<s>hi</s>")[0] == 1 and rebuilt.encode("<s>hi</s>")[-1] == 2
    assert {1, 2}.isdisjoint(rebuilt.encode_plain("<s>hi</s>"))
    # <|im_end|> (id 3, a user-defined piece) ends a turn too
    assert (rebuilt.bos_token, rebuilt.eos_token, rebuilt.eos_token_ids) == ("<s>", "</s>", [2, 3])


def test_a_text_listed_twice_keeps_its_first_id(models):
    """A converter's command token may repeat an ordinary piece; the model holds each text once."""
    fields = sentencepiece_fields(models["plain"])
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    repeated = next(t for t, kind in zip(tokens, types, strict=True) if kind == NORMAL and len(t) > 2)
    fields.update({"tokenizer.ggml.tokens": [*tokens, repeated], "tokenizer.ggml.scores":
                   [*fields["tokenizer.ggml.scores"], 0.0], "tokenizer.ggml.token_type": [*types, CONTROL],
                   "tokenizer.ggml.add_space_prefix": False})
    rebuilt = tokenizer_from_gguf(fields)
    assert rebuilt.token_id(repeated) == tokens.index(repeated)
    assert len(tokens) not in rebuilt.encode_plain(TEXT[4] + TEXT[0])


def test_malformed_arrays_are_named(models):
    fields = sentencepiece_fields(models["plain"])
    fields["tokenizer.ggml.scores"] = fields["tokenizer.ggml.scores"][:-1]
    with pytest.raises(ValueError, match="disagree"):
        SentencePieceFields.from_metadata(fields)


def test_llama_gguf_with_a_sentencepiece_vocabulary_loads_and_chats(models, tmp_path):
    import sentencepiece as spm

    fields = sentencepiece_fields(models["llama"], **{"tokenizer.chat_template": LLAMA2_TEMPLATE,
                                                     "tokenizer.ggml.add_bos_token": True})
    shape = SyntheticShape(64, 1, 2, 2, 128, len(fields["tokenizer.ggml.tokens"]), 256)
    engine = Engine.from_pretrained(write_random_gguf(tmp_path / "llama2-spm.gguf", shape, 0, fields), dtype="fp32")
    original = spm.SentencePieceProcessor(model_proto=models["llama"])
    for text in TEXTS:
        assert engine.tokenizer.encode_plain(text) == original.encode(text), text
    ids = engine.chat_format.ids([{"role": "user", "content": "滤芯 </s>"}], engine.tokenizer)
    assert ids == [1] + original.encode("[INST] 滤芯 </s> [/INST]")
    result = engine.generate(ids, max_new_tokens=3)
    assert len(result.token_ids) <= 3


@pytest.mark.slow
def test_llama_cpp_splits_text_as_the_rebuilt_model_does(models, tmp_path):
    """llama.cpp's own SentencePiece tokenizer (llama-cpp-python, when installed) on the same file."""
    llama_cpp = pytest.importorskip("llama_cpp")

    fields = sentencepiece_fields(models["llama"])
    shape = SyntheticShape(64, 1, 2, 2, 128, len(fields["tokenizer.ggml.tokens"]), 256)
    path = write_random_gguf(tmp_path / "llama2-spm.gguf", shape, 0, fields)
    theirs = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    ours = tokenizer_from_gguf(fields)
    for text in TEXTS:
        assert theirs.tokenize(text.encode(), add_bos=False, special=False) == ours.encode_plain(text), text


def test_without_a_chat_template_the_prompt_still_starts_with_bos(models):
    from ragglm.engine.loading.tokenizer_files import gguf_tokenizer

    tokenizer, chat_format, _ = gguf_tokenizer(sentencepiece_fields(models["llama"]), "llama.gguf")
    ids = chat_format.ids([{"role": "user", "content": "hi"}], tokenizer)
    assert ids[0] == 1 and 1 not in ids[1:]
    tokenizer, chat_format, _ = gguf_tokenizer(sentencepiece_fields(models["llama"],
                                                                    **{"tokenizer.ggml.add_bos_token": False}),
                                               "llama.gguf")
    assert chat_format.ids([{"role": "user", "content": "hi"}], tokenizer)[0] != 1


def test_a_vocabulary_that_cannot_be_read_is_an_error_naming_the_file(models, tmp_path):
    from ragglm.engine.loading.tokenizer_files import gguf_tokenizer
    from ragglm.errors import ModelNotFoundError

    fields = sentencepiece_fields(models["llama"])
    fields["tokenizer.ggml.scores"] = fields["tokenizer.ggml.scores"][:-5]
    with pytest.raises(ModelNotFoundError, match=r"broken\.gguf: its tokenizer cannot be read .*scores"):
        gguf_tokenizer(fields, tmp_path / "broken.gguf")
    del fields["tokenizer.ggml.tokens"]
    with pytest.raises(ModelNotFoundError, match=r"broken\.gguf: .*no 'tokenizer\.ggml\.tokens'"):
        gguf_tokenizer(fields, tmp_path / "broken.gguf")
