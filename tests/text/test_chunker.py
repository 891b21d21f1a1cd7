"""Chunk spans map back to the page text and never cut inside a jieba word."""

from ragglm.documents import Document, Page
from ragglm.text import Chunker, split_sentences, word_spans

ZH = ("智能门锁支持指纹、密码和门卡三种开锁方式。门锁使用四节电池供电，正常使用时电池可以使用约十个月。"
      "连续五次输入错误的密码后，门锁会锁定三分钟。") * 6
EN = "The filter lasts 12 months. Version 2.5 adds a leak sensor! Does it beep? Yes, twice.\n\nNew paragraph here."


def test_sentence_spans_keep_decimals_and_split_on_terminators():
    sentences = [EN[s:e] for s, e in split_sentences(EN)]
    assert sentences == ["The filter lasts 12 months.", "Version 2.5 adds a leak sensor!", "Does it beep?",
                         "Yes, twice.", "New paragraph here."]


def test_chunks_map_back_and_respect_words():
    chunker = Chunker(max_tokens=20, overlap_sentences=1)
    chunks = chunker.split(Document("lock.md", [Page(2, ZH)]))
    assert len(chunks) > 3
    boundaries = {s for s, _ in word_spans(ZH)} | {len(ZH)}
    for chunk in chunks:
        assert chunk.page == 2 and chunk.source == "lock.md"
        assert ZH[chunk.start:chunk.end] in chunk.text
        assert chunk.start in boundaries and chunk.end in boundaries
    assert chunks[0].start == 0 and chunks[-1].end == len(ZH)
