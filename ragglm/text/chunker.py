"""Pack whole sentences into chunks of a token budget; long sentences break at jieba words."""

from __future__ import annotations

import re
from dataclasses import dataclass

import jieba

from ragglm.documents import Chunk, Document
from ragglm.text.language import detect_language
from ragglm.text.sentences import split_sentences

__all__ = ["Chunker", "count_tokens", "word_spans", "is_heading", "table_rows"]

jieba.setLogLevel(60)  # jieba prints its dictionary loading to stderr otherwise

_HEADING = re.compile(
    r"^\s*(#{1,6}\s+.+"                                  # Markdown
    r"|第[一二三四五六七八九十百\d]+[章节部分篇].{0,40}"     # 第三章 安装
    r"|[一二三四五六七八九十]+、.{1,40}"                     # 三、注意事项
    r"|\d+(\.\d+)*\.?\s+[^\s。！？.!?][^。！？.!?]{0,60})$"              # 2.3 Filter replacement
)


# A table is never cut inside a row; a "row" longer than this many chunk budgets is no real table
# row (a generated line full of " | ") and is cut between words like a long sentence.
_MAX_ROW_BUDGETS = 4
_CELL_SEPARATOR = " | "


def is_heading(line: str) -> bool:
    """A short single line that looks like a section title."""
    return "\n" not in line and len(line) <= 80 and bool(_HEADING.match(line))


# jieba segments each run of these characters as a whole (its default "han" pattern), and its
# time grows faster than the run: a megabyte of "a", "-" or "中" with no break took most of a
# minute. Runs longer than _MAX_RUN are cut every _MAX_RUN characters before jieba sees them;
# only there can a word be split, so text without such runs gets exactly jieba's words.
_MAX_RUN = 256
_RUN_CHAR = r"[\u4E00-\u9FD5a-zA-Z0-9+#&._%\-]"
_LONG_RUN = re.compile(rf"(?<!{_RUN_CHAR}){_RUN_CHAR}{{{_MAX_RUN + 1},}}")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each jieba word, whitespace excluded; no word is longer than _MAX_RUN."""
    spans = []
    start = 0
    for cut in [*_run_cuts(text), len(text)]:
        spans.extend((start + s, start + e) for word, s, e in jieba.tokenize(text[start:cut])
                     if not word.isspace())
        start = cut
    return spans


def _run_cuts(text: str) -> list[int]:
    """Offsets that split every run jieba would take whole into pieces of at most _MAX_RUN."""
    cuts = []
    for run in _LONG_RUN.finditer(text):
        cuts.extend(range(run.start() + _MAX_RUN, run.end(), _MAX_RUN))
    return cuts


def count_tokens(text: str) -> int:
    return len(word_spans(text))


@dataclass
class Chunker:
    """Token budgets per page language, measured on CMRC 2018 and SQuAD 2.0 (README, "Retrieval").

    jieba cuts Chinese into ~1.5-character words but English into ~5-character ones, so one
    budget for both gives Chinese chunks a third of the text. Chinese pages get max_tokens *
    zh_token_ratio. 80 tokens is ~340 English characters; 200 is ~270 Chinese ones: five chunks
    stay under 2,000 characters either way. BM25 recall@5 on CMRC by Chinese budget:
    80: 90.4%, 150: 95.2%, 200: 96.8%, 250: 97.5% (mean context 570, 1028, 1370, 1639 chars).
    """

    max_tokens: int = 80
    overlap_sentences: int = 1
    zh_token_ratio: float = 2.5

    def __post_init__(self):
        if self.max_tokens < 1 or self.zh_token_ratio <= 0:
            raise ValueError(f"max_tokens must be at least 1 and zh_token_ratio positive, "
                             f"got {self.max_tokens} and {self.zh_token_ratio}")
        if self.overlap_sentences < 0:
            raise ValueError(f"overlap_sentences must be >= 0, got {self.overlap_sentences}")

    def split(self, document: Document) -> list[Chunk]:
        chunks = []
        for page in document.pages:
            chunks.extend(self.split_text(page.text, document.source, page.number))
        return chunks

    def budget(self, text: str) -> int:
        """Tokens per chunk for this page: more for Chinese, whose jieba words are shorter."""
        if self.zh_token_ratio != 1.0 and detect_language(text[:4000]) == "zh":
            return max(1, round(self.max_tokens * self.zh_token_ratio))
        return self.max_tokens

    def split_text(self, text: str, source: str, page: int | None = None) -> list[Chunk]:
        budget = self.budget(text)
        units = self._units(text, budget)
        chunks: list[Chunk] = []
        heading: str | None = None
        i = 0
        while i < len(units):
            if units[i][3]:
                heading = _heading_text(text[units[i][0] : units[i][1]])
            first = i
            header = units[first][4]
            tokens = header[1] if header else 0  # the carried header row takes room like body text
            while i < len(units) and (i == first or tokens + units[i][2] <= budget):
                if i > first and units[i][3]:
                    break  # a new section starts a new chunk
                tokens += units[i][2]
                i += 1
            start, end = units[first][0], units[i - 1][1]
            body = text[start:end]
            first_line = body.split("\n", 1)[0]
            carried = [] if heading is None or heading in first_line else [heading]
            if header:
                carried.append(header[0])
            chunks.append(Chunk("\n".join([*carried, body]), source, page, start, end, heading))
            if i < len(units) and not units[i][3]:
                # step back for overlap, but always move forward by at least one unit
                back = max(first + 1, i - self.overlap_sentences)
                # shrink the overlap until the next chunk still reaches a new unit, and never
                # repeat a heading as body: it is carried in the text already
                while back < i and (units[back][3] or
                                    _cost(units[back : i + 1]) > budget):
                    back += 1
                i = back
        return chunks

    def _units(self, text: str, budget: int) -> list[tuple[int, int, int, bool, tuple[str, int] | None]]:
        """(start, end, tokens, heading?, header row carried before it): sentences or word-aligned
        pieces of long ones, and table rows whole, each with its table's first row."""
        units: list = []
        position = 0
        for rows in table_rows(text):
            units.extend(self._prose(text, position, rows[0][0], budget))
            header_text = text[rows[0][0] : rows[0][1]]
            header = (header_text, count_tokens(header_text))
            units.append((*rows[0], header[1], False, None))
            for start, end in rows[1:]:
                tokens = count_tokens(text[start:end])
                if tokens <= _MAX_ROW_BUDGETS * budget:
                    units.append((start, end, tokens, False, header))
                else:
                    units.extend((s, e, n, False, header) for s, e, n in self._fit(text, start, end, budget))
            position = rows[-1][1]
        units.extend(self._prose(text, position, len(text), budget))
        return units

    def _prose(self, text: str, start: int, end: int, budget: int) -> list:
        units = []
        for s, e in split_sentences(text[start:end]):
            s, e = start + s, start + e
            if is_heading(text[s:e]):
                units.append((s, e, count_tokens(text[s:e]), True, None))
            else:
                units.extend((ps, pe, n, False, None) for ps, pe, n in self._fit(text, s, e, budget))
        return units

    @staticmethod
    def _fit(text: str, start: int, end: int, budget: int) -> list[tuple[int, int, int]]:
        words = [(start + s, start + e) for s, e in word_spans(text[start:end])]
        if len(words) <= budget:
            return [(start, end, len(words))]
        pieces = []
        for i in range(0, len(words), budget):
            group = words[i : i + budget]
            pieces.append((group[0][0], group[-1][1], len(group)))
        return pieces


def table_rows(text: str) -> list[list[tuple[int, int]]]:
    """Tables in text, each as the (start, end) of its rows: runs of two or more consecutive lines
    holding cells joined by " | ", as the connectors write every table row."""
    tables, run = [], []
    position = 0
    for line in text.split("\n"):
        content = line.strip()
        if _CELL_SEPARATOR in line and content:
            start = position + line.index(content[0])
            run.append((start, start + len(content)))
        else:
            if len(run) >= 2:
                tables.append(run)
            run = []
        position += len(line) + 1
    if len(run) >= 2:
        tables.append(run)
    return tables


def _cost(units) -> int:
    """Tokens a chunk made of units holds, its first unit's carried header row included."""
    header = units[0][4] if units else None
    return sum(u[2] for u in units) + (header[1] if header else 0)


def _heading_text(line: str) -> str:
    return line.strip().lstrip("#").strip()
