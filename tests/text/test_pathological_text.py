"""Text with no natural breaks (long runs of one character) is split and chunked in linear work."""

from __future__ import annotations

import random
import re

import jieba
import pytest

from ragglm.text import chunker as chunker_module
from ragglm.text import sentences
from ragglm.text.chunker import Chunker, word_spans
from ragglm.text.sentences import split_sentences

PATHOLOGICAL = {
    "dots": "." * 200_000,
    "semicolons": ";" * 200_000,
    "dots and bangs": "!." * 100_000,
    "dots and quotes": ".)" * 100_000,
    "letters": "a" * 200_000,
    "dashes": "-" * 200_000,
    "han": "中" * 50_000,
    "blank lines": "\n \t" * 100_000,
    "list markers": "\n1" * 100_000,
}


class _CountingPattern:
    """A compiled pattern that adds up how many characters its matches read."""

    def __init__(self, pattern: re.Pattern, counter: list[int]):
        self._pattern, self._counter = pattern, counter

    def match(self, text, pos=0, endpos=None):
        found = self._pattern.match(text, pos, len(text) if endpos is None else endpos)
        self._counter[0] += (found.end() - pos) if found else 1
        return found


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_sentence_splitting_reads_each_character_a_bounded_number_of_times(name, monkeypatch):
    text = PATHOLOGICAL[name]
    read = [0]
    for attribute in ("_CHINESE_END", "_WESTERN_END", "_LINE_END"):
        monkeypatch.setattr(sentences, attribute, _CountingPattern(getattr(sentences, attribute), read))
    spans = split_sentences(text)
    assert read[0] <= 3 * len(text)
    _assert_sentence_spans(text, spans)


def test_long_dot_run_is_one_sentence():
    text = "Intro text. " + "." * 200_000 + " Outro text."
    assert [text[s:e] for s, e in split_sentences(text)] == ["Intro text.", "." * 200_000, "Outro text."]


def test_splitting_matches_the_single_regex_rules_on_random_text():
    # the rules written as one regex: fine on short text, quadratic on long terminator runs
    boundary = re.compile(r"""[。！？；!?]+[”’"'）)\]」』]*|[.!?;]+[”’"')\]]*(?=\s)|\n\s*\n"""
                          r"""|\n(?=\s*(?:[-*•·]|\d+[.)、]|\#))""")
    alphabet = list("ab1 .!?;\n\t”’\"')]）」』。！？；-*•·#、2\r\u3000")
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        ends = [0, *(m.end() for m in boundary.finditer(text)), len(text)]
        pieces = [_trimmed(text, s, e) for s, e in zip(ends, ends[1:], strict=False)]
        assert split_sentences(text) == [piece for piece in pieces if piece[0] < piece[1]], text


def test_word_spans_cut_long_runs_and_leave_ordinary_text_alone():
    ordinary = "智能门锁支持指纹密码门卡和机械钥匙四种开锁方式 and https://example.com/a-b_c.html 2.5%"
    assert word_spans(ordinary) == [(s, e) for w, s, e in jieba.tokenize(ordinary) if not w.isspace()]
    assert word_spans("a" * 600) == [(0, 256), (256, 512), (512, 600)]
    text = "前面的句子。" + "-" * 700 + "后面"
    spans = word_spans(text)
    assert (6 + 256, 6 + 512) in spans
    assert all(text[s:e].strip() for s, e in spans)
    assert [e for _, e in spans[:-1]] == [s for s, _ in spans[1:]]  # no gaps: nothing but words here


@pytest.mark.parametrize("name", ["dots", "letters", "dashes", "han", "dots and bangs"])
def test_chunking_hands_jieba_bounded_pieces_and_covers_the_text(name, monkeypatch):
    text = PATHOLOGICAL[name]
    pieces = []
    tokenize = jieba.tokenize

    def counting_tokenize(piece, *args, **kwargs):
        pieces.append(len(piece))
        return tokenize(piece, *args, **kwargs)

    monkeypatch.setattr(chunker_module.jieba, "tokenize", counting_tokenize)
    chunks = Chunker().split_text(text, "s")
    assert max(pieces) <= 256
    assert sum(pieces) <= 2 * len(text)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.start <= previous.end < chunk.end  # touching or overlapping, always moving on
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]


def test_long_run_inside_prose_keeps_sentence_and_chunk_spans_exact():
    text = "门锁使用4节电池供电。" + "中" * 5000 + "。The lock keeps 100 fingerprints. " + "x" * 3000 + " End."
    chunks = Chunker(max_tokens=40).split_text(text, "s")
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    piece = text[start:end]
    start += len(piece) - len(piece.lstrip())
    return start, start + len(piece.strip())


def _assert_sentence_spans(text: str, spans: list[tuple[int, int]]) -> None:
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        assert not text[previous_end:start].strip()
        previous_end = end
    assert not text[previous_end:].strip()
