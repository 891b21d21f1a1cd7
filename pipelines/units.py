"""The units an answer quotes: sentences, with every table row its own unit and list numbers kept
with their item (the sentence splitter reads "... board 1. Connect" as ending at "1.")."""

from __future__ import annotations

import re

from ragglm.text.sentences import split_sentences

__all__ = ["answer_units", "table_header"]

# "1." "2)" "b." "三、" alone, or at the end of a unit: the number of the item that follows
_TRAILING_MARKER = re.compile(r"(?:^|\s)(?:\d{1,3}|[a-zA-Z]|[一二三四五六七八九十]{1,3})[.)、）]$")


def answer_units(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of text in reading order."""
    spans: list[tuple[int, int]] = []
    for start, end in split_sentences(text):
        spans.extend(_table_rows(text, start, end) or [(start, end)])
    return [span for span in _markers_moved_forward(text, spans) if not _is_rule(text[span[0]:span[1]])]


def table_header(text: str, span: tuple[int, int]) -> str | None:
    """The first row of the table a row unit belongs to; None for text that is not a table row, or the header."""
    if not _is_row(text[span[0]:span[1]]):
        return None
    lines_before = text[:span[0]].split("\n")[:-1]
    header = None
    for line in reversed(lines_before):
        if not _is_row(line):
            break
        header = line.strip()
    return header


def _is_rule(line: str) -> bool:
    """A Markdown table's |---|---| line under its header."""
    return "-" in line and set(line.strip()) <= set("|-: ")


def _is_row(line: str) -> bool:
    """Table rows as the connectors write them: "a | b | c", with or without outer bars."""
    return " | " in line or line.count("|") >= 2


def _table_rows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """One span per line when the unit is a table (two or more rows), else []."""
    lines, offset, rows = text[start:end].split("\n"), start, []
    for line in lines:
        stripped = line.strip()
        if stripped:
            lead = len(line) - len(line.lstrip())
            rows.append((offset + lead, offset + lead + len(stripped)))
        offset += len(line) + 1
    table_lines = sum(_is_row(text[a:b]) for a, b in rows)
    return rows if table_lines >= 2 else []


def _markers_moved_forward(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A unit ending in a bare item number gives the number to the next unit (a unit that is only a
    number merges with the next)."""
    fixed: list[tuple[int, int]] = []
    carried = None  # start of a marker carried to the next unit
    for index, (start, end) in enumerate(spans):
        if carried is not None:
            start, carried = carried, None
        marker = _TRAILING_MARKER.search(text[start:end])
        if marker and index + 1 < len(spans):
            carried = start + marker.start() + (1 if marker.group(0)[0].isspace() else 0)
            end = carried
            while end > start and text[end - 1].isspace():
                end -= 1
            if end <= start:
                continue
        fixed.append((start, end))
    return fixed
