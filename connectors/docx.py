"""Word .docx files: paragraphs with headings marked, and tables row by row, in document order."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_UNPACKED_BYTES", "MAX_PARAGRAPHS", "load_docx"]

# Bounds far above real documents: a zip bomb or a crafted body fails here, before python-docx
MAX_UNPACKED_BYTES = 256 * 2**20
MAX_PARAGRAPHS = 200_000


def load_docx(path: Path, data: bytes | None = None) -> Document:
    try:
        import docx
    except ImportError as exc:
        raise SourceError(str(path), "reading .docx needs python-docx", "pip install python-docx") from exc
    data = Path(path).read_bytes() if data is None else data
    _check_size(str(path), data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SourceError(str(path), f"not a readable .docx file ({exc})",
                          "open it in Word or LibreOffice and save it again as .docx") from exc
    blocks = [text for text in _blocks(document) if text.strip()]
    title = (document.core_properties.title or "").strip() or Path(path).stem
    return Document(str(path), [Page(None, "\n".join(blocks))], title=title)


def _check_size(source: str, data: bytes) -> None:
    """Refuse what would unpack past MAX_UNPACKED_BYTES or hold more than MAX_PARAGRAPHS paragraphs."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
            if unpacked > MAX_UNPACKED_BYTES:
                raise SourceError(source, f"unpacks to {unpacked / 2**20:.0f} MB, more than ragglm reads "
                                          f"({MAX_UNPACKED_BYTES // 2**20} MB)", "split it into smaller files")
            body = archive.read("word/document.xml") if "word/document.xml" in archive.namelist() else b""
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as exc:
        raise SourceError(source, f"not a readable .docx file ({exc})",
                          "open it in Word or LibreOffice and save it again as .docx") from exc
    paragraphs = body.count(b"<w:p>") + body.count(b"<w:p ")
    if paragraphs > MAX_PARAGRAPHS:
        raise SourceError(source, f"has {paragraphs} paragraphs, more than the {MAX_PARAGRAPHS} ragglm reads",
                          "split it into smaller files")


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
