"""A grid of cells as the table rows every connector writes: one line per cell, empty columns and rows
dropped, merged and wrapped cells put back where a reader of one row needs them."""

from __future__ import annotations

__all__ = ["table_rows"]


def table_rows(rows: list[list[str | None]]) -> list[list[str]]:
    """Cells as one line each (None: a cell a merge covers); columns and rows empty throughout dropped.
    Fewer than two rows with two values is no table (a framed code listing, a note in a box): [] then."""
    rows = _filled_down(rows)
    # a line break inside a cell would end the row early; a "|" would add a column
    cells = [[" ".join((cell or "").replace("|", "/").split()) for cell in row] for row in rows]
    width = max((len(row) for row in cells), default=0)
    cells = [row + [""] * (width - len(row)) for row in cells]
    keep = [c for c in range(width) if any(row[c] for row in cells)]
    cells = _joined([[row[c] for c in keep] for row in cells if any(row[c] for c in keep)])
    if len(keep) < 2 or sum(1 for row in cells if sum(map(bool, row)) >= 2) < 2:
        return []  # also a framed listing with a rule down it: no row holds two values
    return cells


def _filled_down(rows: list[list[str | None]]) -> list[list[str | None]]:
    """A first-column cell merged over several rows is given to each of them: a row read alone (a chunk
    may hold only it) must still say which register or item it belongs to. pdfplumber marks a cell
    covered by a merge as None (an empty cell is ""), and in the first column only a vertical merge can
    cover one."""
    out = [list(row) for row in rows]
    for above, row in zip(out, out[1:], strict=False):
        if row and row[0] is None and above and above[0]:
            row[0] = above[0]
    return out


def _joined(rows: list[list[str]]) -> list[list[str]]:
    """Rows with a row holding one value, under a filled cell of the row above and not in the first of
    three or more columns, joined to that cell: a cell's second line that a rule drawn under each line
    of text made a row of its own ("Bit" over "definition", a description and its "1: Enabled.")."""
    out: list[list[str]] = []
    for row in rows:
        filled = [c for c, cell in enumerate(row) if cell]
        if out and len(row) >= 3 and len(filled) == 1 and filled[0] > 0 and out[-1][filled[0]]:
            out[-1][filled[0]] += " " + row[filled[0]]
        else:
            out.append(row)
    return out
