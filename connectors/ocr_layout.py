"""Put the text boxes an OCR engine finds on a page into reading order: columns, then top to bottom.

An engine returns boxes (a word, a phrase or a whole line each) in no reliable order. Boxes are
grouped into bands split by wide vertical gaps; a band with an empty vertical strip through it is read
as columns, left then right, unless its boxes pair up row by row across the strip (a table, read
row by row). Chinese is joined without spaces between characters. Boxes inside a ruled grid the image
shows (ocr_tables.py) become that table's rows instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragglm.connectors.ocr_tables import RuledTable, table_cells
from ragglm.connectors.pdf_cleanup import is_cjk, join_wrapped_lines
from ragglm.connectors.table_rows import table_rows

__all__ = ["OcrBox", "page_text", "reading_order"]

_CJK_SPACE = re.compile(r"(?<=[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef])[ \t]+"
                        r"(?=[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef])")
_BAND_GAP = 1.2  # a vertical gap this many line heights wide separates bands of text
_GUTTER = 0.02  # an empty strip this share of the page width can separate two columns
_ROW_PAIRED = 0.6  # this share of boxes with a partner on the same row makes a table, not columns
_CELL_GAP = 1.5  # boxes on one line further apart than this many line heights are cells, not one phrase
_PROSE_CHARS = 24  # boxes this long on both sides are columns of prose even when rows align


@dataclass(frozen=True)
class OcrBox:
    """A text box in page pixels: left, top, right, bottom, the text and the engine's confidence."""
    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    score: float = 1.0

    @property
    def height(self) -> float:
        return max(1.0, self.y1 - self.y0)

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


def _lines(boxes: list[OcrBox]) -> list[list[OcrBox]]:
    """Boxes grouped into text lines (vertical centres within half a line height), top to bottom."""
    lines: list[list[OcrBox]] = []
    for box in sorted(boxes, key=lambda b: (b.cy, b.x0)):
        if lines:
            line = lines[-1]
            top, bottom = min(b.y0 for b in line), max(b.y1 for b in line)
            overlap = min(bottom, box.y1) - max(top, box.y0)
            if overlap >= 0.5 * min(box.height, bottom - top):
                line.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.x0) for line in lines]


def _bands(boxes: list[OcrBox]) -> list[list[OcrBox]]:
    """Boxes split where no box spans a vertical gap wider than _BAND_GAP line heights."""
    ordered = sorted(boxes, key=lambda b: b.y0)
    heights = sorted(b.height for b in boxes)
    gap = _BAND_GAP * heights[len(heights) // 2]
    bands: list[list[OcrBox]] = [[ordered[0]]]
    bottom = ordered[0].y1
    for box in ordered[1:]:
        if box.y0 - bottom > gap:
            bands.append([])
        bands[-1].append(box)
        bottom = max(bottom, box.y1)
    return bands


def _gutter(boxes: list[OcrBox], width: float) -> float | None:
    """The x of the widest empty vertical strip through the boxes, if wide enough for a column gap."""
    spans = sorted((b.x0, b.x1) for b in boxes)
    best, at = 0.0, None
    right = spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 - right > best:
            best, at = x0 - right, (x0 + right) / 2
        right = max(right, x1)
    return at if at is not None and best >= _GUTTER * width else None


def _are_columns(left: list[OcrBox], right: list[OcrBox]) -> bool:
    """Whether the two sides of an empty strip run as two columns rather than pair up row by row
    (table cells) or hold a line or two beside a block (a page number beside the body)."""
    top, bottom = min(b.y0 for b in left + right), max(b.y1 for b in left + right)
    for side in (left, right):
        if len(_lines(side)) < 3 or max(b.y1 for b in side) - min(b.y0 for b in side) < 0.5 * (bottom - top):
            return False
    def paired(side: list[OcrBox], other: list[OcrBox]) -> float:
        hits = sum(1 for b in side if any(o.y0 <= b.cy <= o.y1 for o in other))
        return hits / len(side)

    if min(paired(left, right), paired(right, left)) < _ROW_PAIRED:
        return True
    return all(sum(len(b.text) for b in side) / len(side) >= _PROSE_CHARS for side in (left, right))


def reading_order(boxes: list[OcrBox], width: float | None = None, depth: int = 0) -> list[list[OcrBox]]:
    """Text lines (boxes left to right) in reading order: bands top to bottom, columns left to right."""
    if not boxes:
        return []
    width = width or max(b.x1 for b in boxes) - min(b.x0 for b in boxes)
    bands = _bands(boxes)
    out: list[list[OcrBox]] = []
    for band in bands:
        at = _gutter(band, width) if depth < 8 and len(band) > 1 else None
        if at is not None:
            left = [b for b in band if b.x1 <= at]
            right = [b for b in band if b.x0 >= at]
            if _are_columns(left, right):
                out += reading_order(left, width, depth + 1) + reading_order(right, width, depth + 1)
                continue
        out += _lines(band)
    return out


def _joined(line: list[OcrBox]) -> str:
    """The boxes of a line left to right; Chinese runs on, unless the boxes stand apart (table cells)."""
    text, right = "", None
    for box in line:
        piece = _CJK_SPACE.sub("", " ".join(box.text.split()))
        if not piece:
            continue
        apart = right is not None and box.x0 - right > _CELL_GAP * box.height
        if text and (apart or not (is_cjk(text[-1]) and is_cjk(piece[0]))):
            text += " "
        text += piece
        right = box.x1
    return text


def page_text(boxes: list[OcrBox], width: float | None = None, tables: Sequence[RuledTable] = ()) -> str:
    """The page's text: one line per text line, lines a paragraph wrapped at the margin joined; the
    boxes inside a ruled table as its rows ("a | b | c", header first), where the table stands."""
    placed = [(table, table_rows(table_cells(table, boxes, _joined))) for table in tables]
    placed = sorted(((t, rows) for t, rows in placed if rows), key=lambda item: item[0].box[1])
    outside = [b for b in boxes if not any(t.holds((b.x0 + b.x1) / 2, b.cy) for t, _ in placed)]
    blocks: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        text = "\n".join(join_wrapped_lines([line for line in prose if line], marked=False, cjk_runs_on=True))
        if text.strip():
            blocks.append(text.strip())
        prose.clear()

    for line in reading_order(outside, width):
        while placed and placed[0][0].box[1] <= min(b.y0 for b in line):
            flush()  # table rows must not be joined as wrapped prose
            blocks.append("\n".join(" | ".join(row) for row in placed.pop(0)[1]))
        prose.append(_joined(line))
    flush()
    blocks += ["\n".join(" | ".join(row) for row in rows) for _, rows in placed]
    return "\n".join(blocks).strip()
