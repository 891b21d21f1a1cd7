"""Sentence splitting for Chinese and Western text that keeps character spans.

A sentence ends after a terminator (with closing quotes/brackets), or at a blank line:

- Chinese terminators ``。！？；!?`` end a sentence at once;
- Western ``.!?;`` only count when followed by whitespace, so "3.5" and "v1.2" hold;
- a blank line ends a paragraph;
- a line break ends a sentence when a list item or heading starts on the new line.

The rules were once one regex scanned with ``finditer``. On a long run of "." that regex
re-read the rest of the run from every position, so 40 KB of dots took most of a minute. The
scanner below finds the same boundaries but reads each run of terminators once.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

_CHINESE_END = re.compile(r"[。！？；!?]+[”’\"'）)\]」』]*")
_WESTERN_END = re.compile(r"[.!?;]+[”’\"')\]]*")
_LINE_END = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•·]|\d+[.)、]|\#))")
# Every boundary starts at one of these characters.
_CANDIDATE = re.compile(r"[。！？；!?.;\n]")
_CHINESE_START = re.compile(r"[。！？；!?]")
_CHINESE_TERMINATORS = frozenset("。！？；!?")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return (start, end) spans covering the sentences of text, whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    start = 0
    for end in _boundaries(text):
        _append_trimmed(text, start, end, spans)
        start = end
    _append_trimmed(text, start, len(text), spans)
    return spans


def _boundaries(text: str):
    """Yield the end of each boundary, left to right, as a regex scan would find them."""
    western = _WesternRuns(text)
    position = 0
    while (found := _CANDIDATE.search(text, position)) is not None:
        end, position = _boundary_at(text, found.start(), western)
        if end is not None:
            yield end


def _boundary_at(text: str, at: int, western: _WesternRuns) -> tuple[int | None, int]:
    """(end of the boundary starting at at, or None; where scanning goes on)."""
    char = text[at]
    if char in _CHINESE_TERMINATORS:
        end = _CHINESE_END.match(text, at).end()
        return end, end
    if char == "\n":
        line_end = _LINE_END.match(text, at)
        return (line_end.end(), line_end.end()) if line_end else (None, at + 1)
    end = western.end_at(at)
    if end is None:
        # every later "." or ";" of this run fails the same way: only a "!" or "?" inside it,
        # which ends a sentence whatever follows, can still end one
        return None, western.skip_from(at)
    return end, end


class _WesternRuns:
    """Ends of Western terminator runs, each run read once however often it is asked about.

    A run of ".!?;" ends a sentence only when the run and its closing quotes are followed by
    whitespace. Asked from any position inside the run the answer is the same, so it is kept.
    """

    def __init__(self, text: str):
        self._text = text
        self._run_end = -1  # end of the terminators of the run last read
        self._end: int | None = None  # where that run's sentence ends, None if it does not

    def end_at(self, at: int) -> int | None:
        if at >= self._run_end:
            self._read(at)
        return self._end

    def skip_from(self, at: int) -> int:
        """Where scanning resumes after a run that ends no sentence, from at inside it."""
        chinese = _CHINESE_START.search(self._text, at + 1, self._run_end)
        return chinese.start() if chinese else self._run_end

    def _read(self, at: int) -> None:
        text = self._text
        match = _WESTERN_END.match(text, at)
        end = match.end()
        self._run_end = at + len(match.group().rstrip("”’\"')]"))
        self._end = end if end < len(text) and text[end].isspace() else None


def _append_trimmed(text: str, start: int, end: int, spans: list) -> None:
    # str.strip runs in C: a span of megabytes of blanks costs no Python loop per character
    stripped = text[start:end].lstrip()
    start = end - len(stripped)
    end = start + len(stripped.rstrip())
    if end > start:
        spans.append((start, end))
