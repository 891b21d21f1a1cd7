"""Tables on scanned pages: where the image shows a ruled grid, the OCR boxes inside it become rows of cells.

A scanned register map read line by line loses which value sits in which column. The rules a printed
table draws survive scanning, so they are found in the image itself: long runs of dark pixels across
(row rules) and down (column rules). Rules that share their left and right ends stack into one table;
the OCR boxes whose centres fall inside it are placed in its cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RuledTable", "find_ruled_tables", "table_cells"]

_DARK = 128  # grey level below which a pixel is ink
_MIN_RULE_SHARE = 0.15  # a row rule spans at least this share of the image's width
_END_TOLERANCE = 0.01  # rules whose ends lie this share of the width apart belong to one table
_COLUMN_RULE_COVER = 0.85  # a column rule is dark over this share of its table's height
_MIN_GAP = 6  # pixels: rules closer than this are one thick or doubled rule


@dataclass(frozen=True)
class RuledTable:
    """A grid in image pixels: the y of each row rule and the x of each column rule, top-left first."""
    rows: tuple[int, ...]
    columns: tuple[int, ...]

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.columns[0], self.rows[0], self.columns[-1], self.rows[-1]

    def holds(self, x: float, y: float) -> bool:
        left, top, right, bottom = self.box
        return left <= x <= right and top <= y <= bottom


def find_ruled_tables(gray: np.ndarray) -> list[RuledTable]:
    """The ruled grids of a page image (h, w) of grey levels, top to bottom: at least three row rules
    and three column rules, so a boxed note or an underline is no table."""
    dark = gray < _DARK  # (h, w)
    height, width = dark.shape
    rules = _long_runs(dark, int(_MIN_RULE_SHARE * width))
    tables = []
    for stack in _stacks(rules, width):
        rows = _merged([y for y, _, _ in stack])
        left, right = min(r[1] for r in stack), max(r[2] for r in stack)
        for grid in _joined_by_columns(dark, rows, left, right):
            columns = _column_rules(dark, grid[0], grid[-1], left, right)
            if len(grid) >= 3 and len(columns) >= 3:
                tables.append(RuledTable(tuple(grid), tuple(columns)))
    return sorted(tables, key=lambda table: table.rows[0])


def _column_rules(dark: np.ndarray, top: int, bottom: int, left: int, right: int) -> list[int]:
    """x of the lines drawn down from top to bottom between left and right."""
    cover = dark[top:bottom + 1, left:right + 1].mean(axis=0)  # (right - left + 1,) ink share per column
    return _merged([left + int(x) for x in np.flatnonzero(cover >= _COLUMN_RULE_COVER)])


def _joined_by_columns(dark: np.ndarray, rows: list[int], left: int, right: int) -> list[list[int]]:
    """Row rules split where no two lines run down between neighbours: a boxed note under a table
    shares its width but is not more of its rows."""
    grids = [[rows[0]]]
    for above, below in zip(rows, rows[1:], strict=False):
        if len(_column_rules(dark, above, below, left, right)) >= 2:
            grids[-1].append(below)
        else:
            grids.append([below])
    return grids


def _long_runs(dark: np.ndarray, min_length: int) -> list[tuple[int, int, int]]:
    """(y, x0, x1) of each row's longest run of ink when it is at least min_length pixels long."""
    height, width = dark.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = dark
    edges = np.diff(padded, axis=1)  # (h, w + 1): +1 where a run starts, -1 one past where it ends
    starts_y, starts_x = np.nonzero(edges == 1)
    _, ends_x = np.nonzero(edges == -1)  # row-major order pairs each start with its end
    lengths = ends_x - starts_x
    keep = lengths >= min_length
    runs: dict[int, tuple[int, int, int]] = {}
    for y, x0, x1 in zip(starts_y[keep], starts_x[keep], ends_x[keep], strict=True):
        if y not in runs or x1 - x0 > runs[y][2] - runs[y][1]:
            runs[int(y)] = (int(y), int(x0), int(x1) - 1)
    return [runs[y] for y in sorted(runs)]


def _stacks(rules: list[tuple[int, int, int]], width: int) -> list[list[tuple[int, int, int]]]:
    """Rules grouped by shared ends, in top-to-bottom order within each group."""
    tolerance = max(3, int(_END_TOLERANCE * width))
    stacks: list[list[tuple[int, int, int]]] = []
    for rule in rules:
        for stack in stacks:
            _, x0, x1 = stack[-1]
            if abs(rule[1] - x0) <= tolerance and abs(rule[2] - x1) <= tolerance:
                stack.append(rule)
                break
        else:
            stacks.append([rule])
    return stacks


def _merged(positions: list[int]) -> list[int]:
    """Runs of neighbouring positions (a rule's thickness) as one position each, their middle."""
    out: list[list[int]] = []
    for position in positions:
        if out and position - out[-1][-1] < _MIN_GAP:
            out[-1].append(position)
        else:
            out.append([position])
    return [(run[0] + run[-1]) // 2 for run in out]


def table_cells(table: RuledTable, boxes: list, join) -> list[list[str]]:
    """The table as rows of cell texts: each box (x0, y0, x1, y1, text) in the cell holding its centre,
    a cell's boxes joined by join (a list of boxes on one line -> text) line by line, top to bottom."""
    cells: dict[tuple[int, int], list] = {}
    for box in boxes:
        x, y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        row = int(np.searchsorted(table.rows, y)) - 1
        column = int(np.searchsorted(table.columns, x)) - 1
        if 0 <= row < len(table.rows) - 1 and 0 <= column < len(table.columns) - 1:
            cells.setdefault((row, column), []).append(box)
    return [[_cell_text(cells.get((row, column), []), join) for column in range(len(table.columns) - 1)]
            for row in range(len(table.rows) - 1)]


def _cell_text(boxes: list, join) -> str:
    lines: list[list] = []
    for box in sorted(boxes, key=lambda b: ((b.y0 + b.y1) / 2, b.x0)):
        if lines and (box.y0 + box.y1) / 2 < max(b.y1 for b in lines[-1]):
            lines[-1].append(box)
        else:
            lines.append([box])
    return " ".join(join(sorted(line, key=lambda b: b.x0)) for line in lines)
