"""Excel .xlsx workbooks: each worksheet a page, its rows table rows "a | b | c" under the sheet name.

openpyxl reads in read_only mode, streaming rows instead of building every cell, and with the values
Excel last computed for formulas (data_only). The chunker repeats a table's first row (its header)
at the top of every chunk that starts inside the table.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from ragglm.connectors.ooxml import load_package
from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_CELLS", "load_xlsx"]

# Cells read across the workbook, empty ones inside a row included (a row is padded up to its last
# cell, so one cell far to the right costs the whole row). A million is a register of 100,000 rows
# by 10 columns; a crafted sheet fails here instead of filling memory.
MAX_CELLS = 1_000_000


def load_xlsx(path: Path | str, data: bytes | None = None) -> Document:
    try:
        from openpyxl.utils.exceptions import InvalidFileException
    except ImportError as exc:
        raise SourceError(str(path), "reading .xlsx needs openpyxl", "pip install openpyxl") from exc
    return load_package(path, data, ".xlsx", "xl/workbook.xml", _read, (InvalidFileException,))


def _read(source: str, data: bytes, names: list[str]) -> tuple[list[Page], str]:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        return _pages(source, workbook), workbook.properties.title or ""
    finally:
        workbook.close()


def _pages(source: str, workbook) -> list[Page]:
    pages, cells = [], 0
    for number, sheet in enumerate(workbook.worksheets, 1):
        lines = [f"# {sheet.title}"]
        for row in sheet.iter_rows(values_only=True):
            cells += len(row)
            if cells > MAX_CELLS:
                raise SourceError(source, f"has more than the {MAX_CELLS} cells ragglm reads",
                                  "split it into smaller workbooks or export the sheets needed as CSV")
            values = [_text(value) for value in row]
            while values and not values[-1]:
                values.pop()
            if values:
                lines.append(" | ".join(values))
        if len(lines) > 1:  # an empty sheet is no page
            pages.append(Page(number, "\n".join(lines)))
    return pages


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # Excel stores every number as a float: 12 not 12.0
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    # a line break inside a cell would end the row early; a "|" would add a column
    return " ".join(str(value).replace("|", "/").split())
