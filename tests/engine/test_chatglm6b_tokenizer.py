"""ChatGLM-6B's tokenizer and chat format, with a sentencepiece model trained in the fixture in the
layout of ice_text.model."""

from __future__ import annotations

import json

import pytest

from ragglm.engine.loading.families import folder_tokenizer
from ragglm.engine.tokenizers.chatglm6b_format import ChatGLM6BFormat
from ragglm.engine.tokenizers.chatglm6b_tokenizer import NUM_IMAGE_TOKENS, ChatGLM6BTokenizer
from tests.engine.chatglm6b_fixtures import ids_of, train_ice_text, write_tiny_glm6b


@pytest.fixture(scope="module")
def ice_text() -> bytes:
    return train_ice_text()


@pytest.fixture(scope="module")
def tokenizer(ice_text) -> ChatGLM6BTokenizer:
    return ChatGLM6BTokenizer(ice_text)


def test_ids_follow_the_image_tokens(tokenizer, ice_text):
    text = "滤芯的使用寿命大约是六个月"
    assert tokenizer.encode(text) == [i + NUM_IMAGE_TOKENS for i in tokenizer.sp.encode(text)]
    assert min(tokenizer.encode(text)) >= NUM_IMAGE_TOKENS
    assert tokenizer.token_id("[gMASK]") == ids_of(ice_text)["[gMASK]"] == NUM_IMAGE_TOKENS + 4
    assert tokenizer.decode([5, 17] + tokenizer.encode(text)) == text  # image ids decode to nothing


def test_whitespace_pieces_round_trip(tokenizer):
    text = "第一行\n\tindented   three spaces\n\nend"
    ids = tokenizer.encode(text)
    assert tokenizer.token_id("<n>") in ids and tokenizer.token_id("<|blank_3|>") in ids
    assert tokenizer.token_id("<|tab|>") in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode(" " * 81) == tokenizer.encode(" " * 80 + " ")  # longest runs first


def test_plain_text_never_yields_a_control_id(tokenizer):
    text = "a document that spells [gMASK] and <sop> inside"
    controls = set(tokenizer.control.values())
    assert controls & set(tokenizer.encode(text))  # read as markup, they are control pieces
    plain = tokenizer.encode_plain(text)
    assert not controls & set(plain)
    assert tokenizer.decode(plain) == text
    assert tokenizer.encode_plain("no markers here") == tokenizer.encode("no markers here")


def test_chat_format_places_gmask_and_sop_as_the_original(tokenizer):
    gmask, sop = tokenizer.token_id("[gMASK]"), tokenizer.token_id("<sop>")
    chat = ChatGLM6BFormat()
    one = [{"role": "user", "content": "滤芯多久更换？"}]
    assert chat.render(one) == "滤芯多久更换？"  # a first question is the prompt as it is
    assert chat.ids(one, tokenizer) == tokenizer.encode("滤芯多久更换？") + [gmask, sop]
    history = [{"role": "system", "content": "只根据资料回答。"}, *one,
               {"role": "assistant", "content": "六个月。"}, {"role": "user", "content": "水压低怎么办？"}]
    text = chat.render(history)
    assert text == "[Round 0]\n问：只根据资料回答。\n\n滤芯多久更换？\n答：六个月。\n[Round 1]\n问：水压低怎么办？\n答："
    ids = chat.ids(history, tokenizer)
    assert ids[-2:] == [gmask, sop] and ids.count(gmask) == 1 and ids.count(sop) == 1
    assert tokenizer.decode(ids) == text


def test_model_folder_gives_the_tokenizer_and_stop_id(tmp_path):
    folder = write_tiny_glm6b(tmp_path / "glm6b")
    tokenizer, chat, languages = folder_tokenizer(folder)
    assert isinstance(tokenizer, ChatGLM6BTokenizer) and isinstance(chat, ChatGLM6BFormat)
    assert tokenizer.eos_token_ids == [tokenizer.token_id("<eop>")]
    assert languages[0] == "zh"


def test_later_releases_without_image_tokens(tmp_path, ice_text):
    """tokenizer_config.json's num_image_tokens wins; without it, config.json's gmask_token_id tells."""
    folder = write_tiny_glm6b(tmp_path / "glm6b")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "gmask_token_id": ids_of(ice_text)["[gMASK]"] - 20000}))
    tokenizer, _, _ = folder_tokenizer(folder)
    assert tokenizer.token_id("[gMASK]") == 4 and tokenizer.encode("滤芯") == tokenizer.sp.encode("滤芯")
    (folder / "tokenizer_config.json").write_text(json.dumps({"num_image_tokens": 7}))
    assert folder_tokenizer(folder)[0].token_id("[gMASK]") == 4 + 7
