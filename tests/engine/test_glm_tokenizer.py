"""ChatGLM2/3 sentencepiece and GLM-4 tokenizers, and the chat formats chosen from the checkpoint."""

from __future__ import annotations

import base64
import json

import pytest

from ragglm.engine.tokenizers.glm_chat_format import ChatGLM2Format, ChatGLM3Format, GLM4Format
from ragglm.engine.tokenizers.glm_tokenizer import (
    GLM4_SPECIAL_TOKENS,
    TiktokenTokenizer,
    load_glm_tokenizer,
)
from ragglm.engine.tokenizers.tokenizer import SentencePieceTokenizer
from tests.engine.glm_fixtures import SP_VOCAB, glm4_tokenizer_json, train_sentencepiece

CHINESE = "滤芯的使用寿命大约是六个月，请按时更换。指示灯闪烁红色：水压过低！龘"


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    return train_sentencepiece()


@pytest.fixture(scope="module")
def chatglm3(sp_model):
    return SentencePieceTokenizer(sp_model)


def test_chatglm3_command_ids_follow_the_vocabulary(chatglm3):
    import sentencepiece as spm

    base = spm.SentencePieceProcessor(model_proto=train_sentencepiece()).vocab_size()
    assert base == SP_VOCAB
    expected = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
    assert [chatglm3.token_id(t) for t in expected] == list(range(base, base + 9))
    assert chatglm3.eos_token_ids == [2, base + 6, base + 8]  # </s>, <|user|>, <|observation|>


def test_chatglm3_chat_format_ids(chatglm3):
    messages = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "滤芯多久更换？"}]
    ids = ChatGLM3Format().ids(messages, chatglm3)
    sp = chatglm3.sp
    command = chatglm3.token_id
    newline = sp.encode("\n")
    assert newline == [13]  # byte fallback <0x0A>, as in ChatGLM3
    expected = ([command("[gMASK]"), command("sop"), command("<|system|>")] + newline + sp.encode("你是助手。")
                + [command("<|user|>")] + newline + sp.encode("滤芯多久更换？") + [command("<|assistant|>")])
    assert ids == expected
    assert ChatGLM3Format().render(messages) == "[gMASK]sop<|system|>\n你是助手。<|user|>\n滤芯多久更换？<|assistant|>"
    # command tokens are dropped on decode; the Chinese text comes back whole
    assert chatglm3.decode(ids) == "\n你是助手。\n滤芯多久更换？"


def test_chinese_round_trip(chatglm3):
    ids = chatglm3.encode(CHINESE)
    assert all(i < SP_VOCAB for i in ids)
    assert chatglm3.decode(ids) == CHINESE


def test_chatglm2_format(sp_model):
    tokenizer = SentencePieceTokenizer(sp_model, SentencePieceTokenizer.CHATGLM2_COMMANDS, ())
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                {"role": "user", "content": "滤芯多久更换？"}]
    text = ChatGLM2Format().render(messages)
    assert text == "[Round 1]\n\n问：你好\n\n答：你好！\n\n[Round 2]\n\n问：滤芯多久更换？\n\n答："
    ids = ChatGLM2Format().ids(messages, tokenizer)
    assert ids[:2] == [SP_VOCAB + 1, SP_VOCAB + 3]  # [gMASK], sop
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_ids == [2]


def test_format_is_chosen_from_the_checkpoint(tmp_path, sp_model):
    chatglm3_dir, chatglm2_dir, glm4_dir, tiktoken_dir = (tmp_path / n for n in ("c3", "c2", "g4", "tk"))
    for folder in (chatglm3_dir, chatglm2_dir, glm4_dir, tiktoken_dir):
        folder.mkdir()
    (chatglm3_dir / "tokenizer.model").write_bytes(sp_model)
    (chatglm2_dir / "tokenizer.model").write_bytes(sp_model)
    glm4_tokenizer_json(glm4_dir / "tokenizer.json")
    (tiktoken_dir / "tokenizer.model").write_bytes(tiktoken_ranks())
    assert isinstance(load_glm_tokenizer(chatglm3_dir, {"_name_or_path": "THUDM/chatglm3-6b"})[1], ChatGLM3Format)
    assert isinstance(load_glm_tokenizer(chatglm2_dir, {"_name_or_path": "THUDM/chatglm2-6b"})[1], ChatGLM2Format)
    assert isinstance(load_glm_tokenizer(glm4_dir, {})[1], GLM4Format)
    tokenizer, chat_format = load_glm_tokenizer(tiktoken_dir, {})
    assert isinstance(tokenizer, TiktokenTokenizer) and isinstance(chat_format, GLM4Format)


def test_glm4_tokenizer_json_format_ids(tmp_path):
    from ragglm.engine.tokenizers.tokenizer import BPETokenizer

    glm4_tokenizer_json(tmp_path / "tokenizer.json")
    tokenizer = BPETokenizer.from_file(tmp_path / "tokenizer.json", ["<|endoftext|>", "<|user|>", "<|observation|>"])
    ids = GLM4Format().ids([{"role": "user", "content": "滤芯多久更换？"}], tokenizer)
    special = {t: tokenizer.token_id(t) for t in GLM4_SPECIAL_TOKENS}
    assert ids[:3] == [special["[gMASK]"], special["<sop>"], special["<|user|>"]]
    assert ids[-1] == special["<|assistant|>"]
    assert tokenizer.decode(ids[3:-1]) == "\n滤芯多久更换？"
    assert len(tokenizer.eos_token_ids) == 3


def tiktoken_ranks() -> bytes:
    """Ranks: the 256 bytes, then a few merges, in tiktoken's file format."""
    tokens = [bytes([b]) for b in range(256)]
    for merge in (b"th", b"the", b" the", b"\xe6\xbb", b"\xe6\xbb\xa4", "滤芯".encode(), b"in", b"ing"):
        tokens.append(merge)
    return b"\n".join(base64.b64encode(t) + b" " + str(i).encode() for i, t in enumerate(tokens)) + b"\n"


def test_tiktoken_tokenizer_merges_and_round_trips():
    tokenizer = TiktokenTokenizer.from_bytes(tiktoken_ranks())
    assert tokenizer.token_id("<|endoftext|>") == 264 and tokenizer.token_id("[gMASK]") == 266
    assert tokenizer.encode(" the") == [258]
    assert tokenizer.encode("滤芯") == [261]
    text = "[gMASK]<sop><|user|>\n" + CHINESE + " thinking about the filter<|assistant|>"
    ids = tokenizer.encode(text)
    assert ids[:3] == [266, 268, 271] and ids[-1] == 272
    assert 258 in ids and 263 in ids  # " the" and "ing" merged
    assert tokenizer.decode(ids) == "\n" + CHINESE + " thinking about the filter"
    assert json.dumps(tokenizer.eos_token_ids) == "[264, 271, 273]"
