"""Which reader handles which file: by suffix for files, by Content-Type (then suffix) for URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ragglm.connectors.docx import load_docx
from ragglm.connectors.image import IMAGE_SUFFIXES, load_image
from ragglm.connectors.pdf import load_pdf
from ragglm.connectors.pptx import load_pptx
from ragglm.connectors.text import load_text
from ragglm.connectors.web import load_html
from ragglm.connectors.xlsx import load_xlsx
from ragglm.documents import Document
from ragglm.errors import SourceError

__all__ = ["LOADERS", "SUFFIX_OF_MIME", "how_read", "parse", "supported"]

LOADERS: dict[str, Callable[..., Document]] = {
    ".pdf": load_pdf, ".md": load_text, ".markdown": load_text, ".txt": load_text, ".text": load_text,
    ".html": load_html, ".htm": load_html, ".docx": load_docx, ".xlsx": load_xlsx, ".pptx": load_pptx,
    **dict.fromkeys(IMAGE_SUFFIXES, load_image),
}
SUFFIX_OF_MIME = {"application/pdf": ".pdf", "text/html": ".html", "application/xhtml+xml": ".html",
         "text/plain": ".txt", "text/markdown": ".md", "text/x-markdown": ".md",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
         "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
         "image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tiff", "image/bmp": ".bmp",
         "image/webp": ".webp"}


def how_read(document: Document) -> dict:
    """How a document was read: pages, pages from a text layer, pages read by OCR, tables found."""
    from ragglm.text.chunker import table_rows  # jieba comes with it: loaded when a report is made

    meta = document.metadata
    ocr = meta.get("ocr_pages", [])
    read = {"pages": len(document.pages),
            "text_layer_pages": meta.get("text_layer_pages",
                                         sum(1 for p in document.pages if p.text.strip() and p.number not in ocr)),
            "ocr_pages": ocr, "tables": sum(len(table_rows(page.text)) for page in document.pages)}
    if meta.get("ocr_failed_pages"):
        read["ocr_failed_pages"] = meta["ocr_failed_pages"]
    if meta.get("pages_without_text"):
        read["pages_without_text"] = meta["pages_without_text"]
    return read


def supported() -> str:
    return ", ".join(sorted(LOADERS))


def _suffix(source: str, content_type: str | None) -> str:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in SUFFIX_OF_MIME:
        return SUFFIX_OF_MIME[mime]
    if content_type is not None:  # a URL: its path may still say what it is
        suffix = PurePosixPath(urlparse(source).path).suffix.lower()
        return suffix if suffix in LOADERS else ".html"
    return Path(source).suffix.lower()


def parse(source: str, data: bytes, content_type: str | None = None) -> Document:
    """A Document from the bytes of source; content_type is given for fetched URLs."""
    suffix = _suffix(source, content_type)
    loader = LOADERS.get(suffix)
    if loader is None:
        raise SourceError(source, "unsupported file type", f"ragglm reads {supported()}")
    try:
        if loader is load_html:
            return load_html(source, data, content_type)
        return loader(Path(source) if content_type is None else source, data)
    except SourceError:
        raise
    except (OSError, UnicodeError, ValueError) as exc:
        raise SourceError(source, f"could not be read ({exc})") from exc
