"""Sentence splitting for Chinese and Western text that keeps character spans."""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

# A sentence ends after a terminator (with closing quotes/brackets), or at a blank line.
# Western '.', '!' and '?' only count when followed by whitespace, so "3.5" and "v1.2" hold.
_BOUNDARY = re.compile(
    r"""(
        [。！？；!?]+[”’"'）)\]」』]*        # Chinese terminators end a sentence at once
      | [.!?;]+[”’"')\]]*(?=\s)            # Western ones need following space
      | \n\s*\n                            # a blank line ends a paragraph
      | \n(?=\s*(?:[-*•·]|\d+[.)、]|\#))     # a list item or heading starts on a new line
    )""",
    re.VERBOSE,
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return (start, end) spans covering the sentences of text, whitespace trimmed."""
    spans = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        _append_trimmed(text, start, match.end(), spans)
        start = match.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))
