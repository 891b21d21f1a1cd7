"""Plain text and Markdown files in UTF-8 (with or without BOM), UTF-16 with BOM, GBK or GB18030."""

from __future__ import annotations

from pathlib import Path

from ragglm.connectors.charset import decode_bytes
from ragglm.documents import Document, Page

__all__ = ["load_text", "decode_bytes"]


def load_text(path: Path, data: bytes | None = None) -> Document:
    data = Path(path).read_bytes() if data is None else data
    text = decode_bytes(data, str(path)).replace("\r\n", "\n").replace("\r", "\n")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), Path(path).stem)
    return Document(str(path), [Page(None, text.strip())], title=title)
