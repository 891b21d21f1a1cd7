"""Chunk boundaries, token budget, overlap, headings and spans on real Chinese and English text."""

from __future__ import annotations

import json

import jieba
import pytest

from ragglm.documents import Document, Page
from ragglm.text.chunker import Chunker, count_tokens, is_heading
from ragglm.text.sentences import split_sentences

LONG_ZH = ("智能门锁支持指纹密码门卡和机械钥匙四种开锁方式并且可以通过手机应用远程查看开锁记录"
           "管理临时密码设置常开模式以及接收低电量提醒和异常告警信息")


def _jieba_boundaries(text: str) -> set[int]:
    return {start for _, start, _ in jieba.tokenize(text)} | {len(text)}


def test_long_sentence_is_cut_only_between_jieba_words():
    chunker = Chunker(max_tokens=7, overlap_sentences=0, zh_token_ratio=1.0)
    chunks = chunker.split_text(LONG_ZH, "lock.md")
    assert len(chunks) > 3
    boundaries = _jieba_boundaries(LONG_ZH)
    for chunk in chunks:
        assert chunk.start in boundaries and chunk.end in boundaries
        assert count_tokens(LONG_ZH[chunk.start:chunk.end]) <= 7
    # together the pieces cover the sentence without gaps or overlap
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]
    assert chunks[0].start == 0 and chunks[-1].end == len(LONG_ZH)


def test_chunks_break_at_sentence_ends_when_sentences_fit():
    text = ("门锁使用4节AA碱性电池供电。正常使用时电池可以使用约10个月！电量不足时会发出语音提示，此后仍可开锁约200次。"
            "The lock keeps 100 fingerprints. It locks for three minutes after five wrong codes? Yes.")
    sentences = split_sentences(text)
    starts, ends = {s for s, _ in sentences}, {e for _, e in sentences}
    longest = max(count_tokens(text[s:e]) for s, e in sentences)
    for budget in (longest, longest + 5, 3 * longest):
        for chunk in Chunker(max_tokens=budget, overlap_sentences=0, zh_token_ratio=1.0).split_text(text, "s"):
            assert chunk.start in starts and chunk.end in ends


def test_overlap_repeats_whole_sentences_and_stays_in_budget():
    text = "".join(f"第{i}条规定说明门锁的一项功能和使用注意事项。" for i in range(1, 13))
    sentences = split_sentences(text)
    chunks = Chunker(max_tokens=30, overlap_sentences=1, zh_token_ratio=1.0).split_text(text, "s")
    assert len(chunks) > 2
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        last_sentence = next(s for s in sentences if s[1] == previous.end)
        assert chunk.start == last_sentence[0]  # the next chunk starts with the previous one's last sentence
        assert chunk.end > previous.end  # and always reaches new text
    for chunk in chunks:
        inner = [s for s in sentences if chunk.start <= s[0] and s[1] <= chunk.end]
        assert sum(count_tokens(text[s:e]) for s, e in inner) <= 30


def test_headings_are_carried_into_chunk_text_and_spans_map_back(manuals):
    text = (manuals / "smartlock-s2-guide.md").read_text(encoding="utf-8")
    chunks = Chunker(max_tokens=10).split(Document("guide.md", [Page(None, text)]))
    battery = [c for c in chunks if "应急供电口" in c.text]
    assert battery and all(c.heading == "电池与应急供电" for c in battery)
    assert all(c.text.startswith("电池与应急供电") for c in battery)
    for chunk in chunks:
        body = text[chunk.start:chunk.end]
        assert chunk.text.endswith(body)
        assert chunk.text in (body, f"{chunk.heading}\n{body}")
        # no chunk straddles two sections
        assert sum(1 for s, e in split_sentences(body) if is_heading(body[s:e])) <= 1


def test_heading_patterns():
    assert is_heading("## 首次设置")
    assert is_heading("第三章 安装与调试")
    assert is_heading("2.3 Filter replacement")
    assert not is_heading("门锁使用 4 节 AA 碱性电池供电。")
    assert not is_heading("3.5 liters of water flow through the filter every minute.")


@pytest.mark.parametrize("name", ["cmrc2018_trial.json", "squad2_dev_articles1-8.json"])
def test_spans_map_back_on_real_paragraphs(shared_data, name):
    data = json.loads((shared_data / name).read_text(encoding="utf-8"))["data"]
    contexts = [p["context"] for article in data for p in article["paragraphs"]][:40]
    chunker = Chunker()
    for n, context in enumerate(contexts):
        chunks = chunker.split(Document(f"p{n}", [Page(3, context)]))
        assert chunks and all(c.page == 3 and c.source == f"p{n}" for c in chunks)
        assert all(c.text == context[c.start:c.end] for c in chunks)  # no headings in these sets
        sentence_ends = {e for _, e in split_sentences(context)}
        for chunk in chunks:
            if chunk.end not in sentence_ends:  # a sentence over budget: cut between words
                sentence = next((s, e) for s, e in split_sentences(context) if s <= chunk.end < e)
                words = {sentence[0] + w for w in _jieba_boundaries(context[sentence[0]:sentence[1]])}
                assert chunk.end in words
        covered = set().union(*(range(c.start, c.end) for c in chunks))
        assert all(context[i].isspace() for i in range(len(context)) if i not in covered)


def test_chinese_pages_get_a_larger_token_budget():
    chunker = Chunker(max_tokens=40)
    assert chunker.budget(LONG_ZH) == 100 and chunker.budget("The filter lasts six months.") == 40
    text = "门锁使用四节电池供电。" * 40
    chunks = chunker.split_text(text, "s")
    assert max(count_tokens(c.text) for c in chunks) > 40
    assert all(sum(count_tokens(c.text[s:e]) for s, e in split_sentences(c.text)) <= 100 for c in chunks)


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="max_tokens"):
        Chunker(max_tokens=0)
