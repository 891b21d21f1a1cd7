"""Turn the raw text of PDF pages into clean text: running headers and footers removed, wrapped lines joined.

Text extracted from a PDF keeps the printed line breaks, so a Chinese sentence wrapped at the right
margin comes out cut in two, an English word split by a hyphen stays split, and the header and page
number printed on every page land inside the body. Rows of a table are separate lines and must stay so.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["clean_pages", "is_cjk", "join_wrapped_lines", "running_lines"]

_CJK_CHAR = re.compile(r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_TERMINATOR = tuple(".!?:;。！？：；")
_LIST_START = re.compile(r"^\s*([-•●▪◆■*]\s|[①-⑳]|\(?\d{1,2}[.)、．]\s*\S|\d+(\.\d+)+\s|[（(]\d+[)）])")
_SPACE_RUN = re.compile(r"[ \t\u00a0]{3,}")
_EDGE_LINES = 3  # how many lines at the top and bottom of a page can be a running header or footer


def is_cjk(char: str) -> bool:
    return bool(char) and bool(_CJK_CHAR.match(char))


def _width(text: str) -> int:
    """Printed width in half-width cells: a CJK character is as wide as two Latin ones."""
    return sum(2 if is_cjk(c) else 1 for c in text)


def _edge_key(line: str) -> str:
    """Page numbers and dates differ from page to page; the rest of a running line does not."""
    return re.sub(r"\d+", "#", " ".join(line.split())).lower()


def running_lines(pages: list[list[str]], edges: list[set[str]] | None = None) -> list[set[int]]:
    """Indices, per page, of lines at the page edges that repeat across at least half the pages.

    edges, when known, holds per page the text fragments printed near the top or bottom of the page:
    a line counts only if it holds one of them, since the order of text in a PDF need not follow the page.
    """
    if len(pages) < 2:
        return [set() for _ in pages]
    zones: list[list[tuple[int, str]]] = []
    counts: Counter[str] = Counter()
    for lines in pages:
        filled = [i for i, line in enumerate(lines) if line.strip()]
        if edges is not None:
            placed = edges[len(zones)]
            filled = [i for i in filled if any(piece in lines[i] for piece in placed)]
        edge = sorted(set(filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]))
        keyed = [(i, ("top" if i in filled[:_EDGE_LINES] else "bottom") + "|" + _edge_key(lines[i]))
                 for i in edge]
        zones.append(keyed)
        counts.update({key for _, key in keyed})
    needed = max(2, (len(pages) + 1) // 2)
    return [{i for i, key in keyed if counts[key] >= needed} for keyed in zones]


def _ends_marked(pages: list[list[str]]) -> bool:
    """Word and similar producers end every hard line break with a space and soft wraps without one."""
    filled = [line for lines in pages for line in lines if line.strip()]
    if not filled:
        return False
    marked = sum(1 for line in filled if line != line.rstrip())
    return marked / len(filled) > 0.3


def _join(left: str, right: str) -> str:
    if left.endswith("-") and len(left) > 1 and left[-2].isalpha() and right[:1].islower():
        return left[:-1] + right  # a word hyphenated at the margin
    if left.endswith("-") or is_cjk(left[-1]) or is_cjk(right[0]):
        return left + right
    return left + " " + right


def join_wrapped_lines(lines: list[str], marked: bool, cjk_runs_on: bool = False) -> list[str]:
    """Join lines that a paragraph wrapped at the margin; keep real breaks (rows, list items, code).

    cjk_runs_on: a full line with Chinese on either side of the break carries on (OCR of prose, where
    lines such as "9月" + "23日" or "“" + "！自在" break anywhere); otherwise both sides must be Chinese."""
    widths = [_width(line.strip()) for line in lines if line.strip()]
    full = 0.8 * max(widths, default=0)
    out: list[str] = []
    marked_wrap = full_before = False  # how the line above ended
    for raw in lines:
        text = raw.rstrip()
        body = text.strip()
        if not body:
            out.append("")
            marked_wrap = full_before = False
            continue
        if out and out[-1] and (marked_wrap or (full_before and _continues(out[-1], body, marked, cjk_runs_on))):
            out[-1] = _join(out[-1], body)
        else:
            out.append(text)
        code = _is_code(text)
        marked_wrap = marked and raw == text and not code
        full_before = _width(body) >= full and not body.endswith(_TERMINATOR) and not code
    return [_SPACE_RUN.sub("  ", line) for line in out]


def _continues(above: str, line: str, marked: bool, cjk_runs_on: bool = False) -> bool:
    """Whether line carries on the sentence of a full-width line above rather than starting a row."""
    if _starts_block(line):
        return False
    if (is_cjk(above[-1]) or is_cjk(line[0])) if cjk_runs_on else (is_cjk(above[-1]) and is_cjk(line[0])):
        return not marked  # with marks, a CJK line ending in a space is a real break
    return line[0].islower()


def _is_code(line: str) -> bool:
    return line.rstrip().endswith((";", "{", "}"))


def _starts_block(line: str) -> bool:
    return bool(_LIST_START.match(line))


def clean_pages(raw_pages: list[str], edges: list[set[str]] | None = None) -> list[str]:
    """Clean text per page, in the same order; an empty string stays empty.

    edges: per page, the text fragments printed near the top or bottom edge (see running_lines)."""
    pages = [text.replace("\r\n", "\n").replace("\r", "\n").split("\n") for text in raw_pages]
    drop = running_lines(pages, edges)
    marked = _ends_marked(pages)
    cleaned = []
    for lines, dropped in zip(pages, drop, strict=True):
        kept = [line for i, line in enumerate(lines) if i not in dropped]
        text = "\n".join(join_wrapped_lines(kept, marked))
        cleaned.append(re.sub(r"\n{3,}", "\n\n", text).strip("\n").rstrip())
    return cleaned

