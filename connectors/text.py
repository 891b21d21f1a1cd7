"""Plain text and Markdown files, decoded as UTF-8 (with or without BOM) or GB18030."""

from __future__ import annotations

from pathlib import Path

from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["load_text", "decode_bytes"]


def decode_bytes(data: bytes, source: str) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SourceError(source, "text is neither UTF-8 nor GB18030", "save the file as UTF-8")


def load_text(path: Path) -> Document:
    text = decode_bytes(path.read_bytes(), str(path)).replace("\r\n", "\n")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), path.stem)
    return Document(str(path), [Page(None, text.strip())], title=title)
