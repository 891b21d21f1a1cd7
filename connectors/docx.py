"""Word .docx files: paragraphs with headings marked, and tables row by row, in document order."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["load_docx"]


def load_docx(path: Path, data: bytes | None = None) -> Document:
    try:
        import docx
    except ImportError as exc:
        raise SourceError(str(path), "reading .docx needs python-docx", "pip install python-docx") from exc
    data = Path(path).read_bytes() if data is None else data
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SourceError(str(path), f"not a readable .docx file ({exc})",
                          "open it in Word or LibreOffice and save it again as .docx") from exc
    blocks = [text for text in _blocks(document) if text.strip()]
    title = (document.core_properties.title or "").strip() or Path(path).stem
    return Document(str(path), [Page(None, "\n".join(blocks))], title=title)


def _blocks(document):
    """Body paragraphs and tables in the order they appear."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            style = (item.style.name if item.style is not None else "") or ""
            level = style.rsplit(" ", 1)[-1] if style.lower().startswith("heading") else ""
            prefix = "#" * int(level) + " " if level.isdigit() else ""
            yield prefix + item.text
        elif isinstance(item, Table):
            for row in item.rows:
                cells = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    if not cells or cells[-1] != text:  # merged cells repeat their text
                        cells.append(text)
                yield " | ".join(cells)
