"""Pack whole sentences into chunks of a token budget; long sentences break at jieba words."""

from __future__ import annotations

import re
from dataclasses import dataclass

import jieba

from ragglm.documents import Chunk, Document
from ragglm.text.sentences import split_sentences

__all__ = ["Chunker", "count_tokens", "word_spans"]

jieba.setLogLevel(60)  # jieba prints its dictionary loading to stderr otherwise

_HEADING = re.compile(r"^\s*(#{1,6}\s+.+|第[一二三四五六七八九十\d]+[章节部分].*|\d+(\.\d+)*\s+\S.{0,60})$")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each jieba word, whitespace excluded."""
    spans = []
    for word, start, end in jieba.tokenize(text):
        if not word.isspace():
            spans.append((start, end))
    return spans


def count_tokens(text: str) -> int:
    return len(word_spans(text))


@dataclass
class Chunker:
    max_tokens: int = 120
    overlap_sentences: int = 1

    def split(self, document: Document) -> list[Chunk]:
        chunks = []
        for page in document.pages:
            chunks.extend(self._split_page(page.text, document.source, page.number))
        return chunks

    def _split_page(self, text: str, source: str, page: int | None) -> list[Chunk]:
        units = []  # (start, end, tokens): sentences, or word-aligned pieces of long ones
        for start, end in split_sentences(text):
            units.extend(self._fit(text, start, end))
        chunks: list[Chunk] = []
        heading = None
        i = 0
        while i < len(units):
            first = i
            tokens = 0
            while i < len(units) and (i == first or tokens + units[i][2] <= self.max_tokens):
                tokens += units[i][2]
                i += 1
            start, end = units[first][0], units[i - 1][1]
            heading = self._heading_before(text, units, first) or heading
            body = text[start:end]
            shown = body if heading is None or heading in body.split("\n", 1)[0] else f"{heading}\n{body}"
            chunks.append(Chunk(shown, source, page, start, end, heading))
            if i < len(units):
                # step back for overlap, but always move forward by at least one unit
                i = max(first + 1, i - self.overlap_sentences)
        return chunks

    def _fit(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        words = [(start + s, start + e) for s, e in word_spans(text[start:end])]
        if len(words) <= self.max_tokens:
            return [(start, end, len(words))]
        pieces = []
        for i in range(0, len(words), self.max_tokens):
            group = words[i : i + self.max_tokens]
            pieces.append((group[0][0], group[-1][1], len(group)))
        return pieces

    @staticmethod
    def _heading_before(text: str, units, first: int) -> str | None:
        """The nearest heading-like line at or before the chunk's first unit."""
        for j in range(first, -1, -1):
            line = text[units[j][0] : units[j][1]]
            if "\n" not in line and _HEADING.match(line):
                return line.strip().lstrip("#").strip()
        return None
