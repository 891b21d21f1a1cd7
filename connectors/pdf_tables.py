"""Ruled tables on PDF pages, as the table rows every connector writes ("a | b | c", header first).

Text extraction reads a table as loose cells, one after another, with nothing to tell a row from the
next or a value from its column. pdfplumber finds ruled tables from the lines a page draws, but it
lays out every character of a page, a tenth of a second or more each: run on every page of a long
manual it would use much of the parse budget. So the drawing is read while pypdf extracts the text
(the same pass, no second parse): only a page that draws rules at three or more distinct positions
across and down goes to pdfplumber, and only those pages are laid out. The text pypdf drew inside a
table's box is then replaced by the table's rows, so no cell is read twice.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field

from ragglm.connectors.table_rows import table_rows

__all__ = ["MAX_SEGMENTS", "MAX_TABLE_PAGES", "TABLE_BUDGET_S", "PageDrawing", "Table", "find_tables",
           "put_tables", "table_mark", "tabulate"]

MAX_TABLE_PAGES = 300  # pages of one file laid out for tables; the rest keep their text as extracted
TABLE_BUDGET_S = 30.0  # at most, and at most a quarter of the per-file parse budget; later pages keep their text
MAX_SEGMENTS = 5000  # rules on a page past which it is a drawing (a schematic), not a table
_THIN = 2.0  # a rectangle thinner than this is a rule
_NEAR = 1.5  # points of slack when placing text inside a table's box
_MARK = "\x00table{}\x00"


def table_mark(index: int) -> str:
    """The line standing for a page's index-th table until the page text is cleaned."""
    return _MARK.format(index)


@dataclass
class Table:
    rows: list[list[str]]  # the first row is the header
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF user space (y up)
    columns: tuple[float, ...] = ()  # x of the column rules, to match a table continued on the next page

    def text(self) -> str:
        return "\n".join(" | ".join(row) for row in self.rows)


@dataclass
class PageDrawing:
    """What pypdf's text extraction passes by on one page: each piece of text with the point it was
    drawn at, and the distinct positions of the rules drawn. Its methods are pypdf visitors."""
    pieces: list[tuple[str, float, float]] = field(default_factory=list)
    across: set[int] = field(default_factory=set)  # y of horizontal rules
    down: set[int] = field(default_factory=set)  # x of vertical rules
    segments: int = 0
    body: tuple[float, float] = (float("-inf"), float("inf"))  # y range between running footer and header
    _point: tuple[float, float] | None = None

    def visit_text(self, text, cm, tm, *_) -> None:
        x, y = _apply(cm, tm[4], tm[5])
        self.pieces.append((text, x, y))

    def visit_operator(self, operator, operands, cm, tm) -> None:
        try:
            if operator == b"re":
                x, y, w, h = (float(v) for v in operands)
                (x0, y0), (x1, y1) = _apply(cm, x, y), _apply(cm, x + w, y + h)
                if abs(y1 - y0) <= _THIN or abs(x1 - x0) <= _THIN:
                    self._rule(x0, y0, x1, y1)
                else:  # a box: its four sides
                    self._rule(x0, y0, x1, y0)
                    self._rule(x0, y1, x1, y1)
                    self._rule(x0, y0, x0, y1)
                    self._rule(x1, y0, x1, y1)
            elif operator == b"m":
                self._point = _apply(cm, float(operands[0]), float(operands[1]))
            elif operator == b"l":
                point = _apply(cm, float(operands[0]), float(operands[1]))
                if self._point is not None:
                    self._rule(*self._point, *point)
                self._point = point
        except (ValueError, TypeError, IndexError):
            pass  # a malformed operator draws nothing the table search could use

    def _rule(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.segments += 1
        if abs(y1 - y0) <= _THIN and abs(x1 - x0) > 3 * _THIN:
            self.across.add(round((y0 + y1) / 2))
        elif abs(x1 - x0) <= _THIN and abs(y1 - y0) > 3 * _THIN:
            self.down.add(round((x0 + x1) / 2))

    def has_grid(self) -> bool:
        """Rules at three or more positions each way: two rows by two columns at least. A frame
        around a code listing or a rule under a running header is not one."""
        return len(self.across) >= 3 and len(self.down) >= 3 and self.segments <= MAX_SEGMENTS

    def text_without(self, tables: list[Table]) -> tuple[str, list[Table]]:
        """The page text with the pieces drawn inside each table's box replaced by its mark line,
        and the tables that replaced some text (one that covered none is left out: its cells are
        not in the text as pieces this page drew, and adding it would read them twice).

        A mark goes where the table's first piece was drawn, or before the first body text below
        the table when that comes earlier: some producers draw every table after the page's text."""
        covered = {i for i, table in enumerate(tables)
                   if any(_holds(table.box, x, y) for _, x, y in self.pieces)}
        out, placed = [], []
        for text, x, y in self.pieces:
            inside = next((i for i in covered if _holds(tables[i].box, x, y)), None)
            due = [i for i in sorted(covered, key=lambda i: -tables[i].box[3])
                   if i not in placed and (i == inside or (text.strip() and self.body[0] < y < tables[i].box[1] - _NEAR))]
            for i in due:
                placed.append(i)
                out.append(f"\n\n{table_mark(len(placed) - 1)}\n\n")
            if inside is None:
                out.append(text)
        return "".join(out), [tables[i] for i in placed]

    def opens_with(self, table: Table) -> bool:
        """Whether no text of the page body stands above table."""
        return not any(text.strip() and table.box[3] + _NEAR < y < self.body[1] for text, _, y in self.pieces)

    def ends_with(self, table: Table) -> bool:
        """Whether no text of the page body stands below table."""
        return not any(text.strip() and self.body[0] < y < table.box[1] - _NEAR for text, _, y in self.pieces)


def _apply(cm, x: float, y: float) -> tuple[float, float]:
    return x * cm[0] + y * cm[2] + cm[4], x * cm[1] + y * cm[3] + cm[5]


def _holds(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    x0, y0, x1, y1 = box
    return x0 - _NEAR <= x <= x1 + _NEAR and y0 - _NEAR <= y <= y1 + _NEAR


def find_tables(data: bytes, indices: list[int]) -> dict[int, list[Table]]:
    """Per 0-based page index, the ruled tables pdfplumber finds there, in reading order. Empty when
    pdfplumber is not installed or cannot open the file: the text as extracted stands."""
    try:
        import pdfplumber
    except ImportError:
        return {}
    logging.getLogger("pdfminer").setLevel(logging.ERROR)  # its notes on recoverable syntax are noise here
    found: dict[int, list[Table]] = {}
    started, budget_s = time.monotonic(), _budget_s()
    try:
        with pdfplumber.open(io.BytesIO(data), pages=[i + 1 for i in indices]) as pdf:
            for page in pdf.pages:
                if time.monotonic() - started > budget_s:
                    break
                tables = _page_tables(page)
                page.close()  # drops its laid-out characters
                if tables:
                    found[page.page_number - 1] = tables
    except Exception:  # noqa: BLE001 - pdfminer raises its own types for damaged files; the text stands
        return {}
    return found


def _budget_s() -> float:
    from ragglm.connectors.parallel import (
        parse_budget_s,  # parallel imports the readers, this one too
    )

    return min(TABLE_BUDGET_S, parse_budget_s() / 4)


def _page_tables(page) -> list[Table]:
    x0, top0, _, _ = page.mediabox
    if page.rotation or x0 or top0:  # pdfplumber's coordinates only map plainly onto pypdf's here
        return []
    height = float(page.height)
    tables = []
    for found in page.find_tables():
        rows = table_rows(found.extract())
        if not rows:
            continue
        left, top, right, bottom = (float(v) for v in found.bbox)
        columns = tuple(sorted({round(float(c[0])) for c in found.cells} | {round(float(c[2])) for c in found.cells}))
        tables.append(Table(rows, (left, height - bottom, right, height - top), columns))
    tables.sort(key=lambda t: (-t.box[3], t.box[0]))
    return tables


def _carry_headers(tables: list[list[Table]], drawings: dict[int, PageDrawing]) -> None:
    """A table that ends its page and goes on at the top of the next (nothing between, the same
    column rules) lends its header to the rest when the next page does not repeat it."""
    for index in range(1, len(tables)):
        if not tables[index - 1] or not tables[index]:
            continue
        last, first = tables[index - 1][-1], tables[index][0]
        same_rules = len(last.columns) == len(first.columns) and all(
            abs(a - b) <= 2 for a, b in zip(last.columns, first.columns, strict=True))
        header = last.rows[0]
        if (same_rules and len(header) == len(first.rows[0]) and first.rows[0] != header
                and drawings[index - 1].ends_with(last) and drawings[index].opens_with(first)):
            first.rows.insert(0, list(header))


def tabulate(data: bytes, texts: list[str], drawings: dict[int, PageDrawing]) -> tuple[list[str], list[list[Table]]]:
    """Page texts with the ruled tables of the pages drawing a grid put in as mark lines, and per
    page the tables those marks stand for (see put_tables)."""
    texts, tables = list(texts), [[] for _ in texts]
    gridded = sorted(i for i, drawing in drawings.items() if drawing.has_grid())[:MAX_TABLE_PAGES]
    for index, found in find_tables(data, gridded).items() if gridded else ():
        texts[index], tables[index] = drawings[index].text_without(found)
    _carry_headers(tables, drawings)
    return texts, tables


def put_tables(text: str, tables: list[Table]) -> str:
    """The cleaned page text with each mark line replaced by its table's rows."""
    for index, table in enumerate(tables):
        text = text.replace(table_mark(index), table.text(), 1)
    return text
