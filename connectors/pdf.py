"""PDF pages numbered as a viewer shows them; files encrypted with an empty user password (RC4, AES) open."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ragglm.connectors.pdf_cleanup import clean_pages
from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_PAGES", "load_pdf", "read_pdf_pages"]

_PASSWORD_FIX = ("remove the password (for example: qpdf --decrypt --password=PASSWORD in.pdf out.pdf) "
                 "or export an unprotected copy")
_REDOWNLOAD_FIX = "download or export the file again"
_OCR_FIX = "run OCR on it first, for example: ocrmypdf in.pdf out.pdf"


_EDGE_BAND = 0.08  # running headers and footers sit in the top and bottom 8% of a page
# More pages than any manual has: a crafted page tree can list one page a hundred thousand times
MAX_PAGES = 5000


def read_pdf_pages(data: bytes, source: str) -> tuple[list[str], list[bool], str | None, list[set[str]]]:
    """Raw text per page, whether each page draws an image, the title from the metadata, and per page
    the text fragments printed near the top or bottom edge."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise SourceError(source, "not a PDF file (no %PDF header)", "check that the file is really a PDF")
    if b"%%EOF" not in data[-4096:]:
        raise SourceError(source, "the PDF is truncated (no end-of-file marker)", _REDOWNLOAD_FIX)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its recoverable-syntax warnings are noise here
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SourceError(source, "the PDF is protected by a password", _PASSWORD_FIX)
        if len(reader.pages) > MAX_PAGES:
            raise SourceError(source, f"has {len(reader.pages)} pages, more than the {MAX_PAGES} ragglm reads",
                              "split it into smaller PDFs")
        texts, images, edges = [], [], []
        for number, page in enumerate(reader.pages, 1):
            try:
                low, high = float(page.mediabox.bottom), float(page.mediabox.top)
                band = _EDGE_BAND * (high - low)
                at_edge: set[str] = set()

                def visit(text, cm, tm, *_, at_edge=at_edge, low=low, high=high, band=band):
                    y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                    if text.strip() and (y >= high - band or y <= low + band):
                        at_edge.add(text.strip())

                texts.append(page.extract_text(visitor_text=visit) or "")
                edges.append(at_edge)
            except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SourceError(source, f"page {number} is damaged ({exc})", _REDOWNLOAD_FIX) from exc
            images.append(not texts[-1].strip() and _draws_image(page))
        title = reader.metadata.get("/Title") if reader.metadata else None
    except SourceError:
        raise
    except FileNotDecryptedError as exc:
        raise SourceError(source, "the PDF is protected by a password", _PASSWORD_FIX) from exc
    except DependencyError as exc:
        raise SourceError(source, f"its encryption needs an extra package ({exc})",
                          "pip install cryptography") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise SourceError(source, f"not a readable PDF ({exc})", _REDOWNLOAD_FIX) from exc
    return texts, images, str(title).strip() if title else None, edges


def _draws_image(page) -> bool:
    try:
        objects = page.get("/Resources", {}).get("/XObject", {})
        return any(obj.get_object().get("/Subtype") == "/Image" for obj in objects.values())
    except (AttributeError, KeyError, TypeError):
        return False


def load_pdf(path: Path, data: bytes | None = None) -> Document:
    """Pages with clean text; pages without a text layer are kept empty and listed in metadata notes."""
    source = str(path)
    raw_pages, images, title, edges = read_pdf_pages(Path(path).read_bytes() if data is None else data, source)
    texts = clean_pages(raw_pages, edges)
    pages = [Page(number, text) for number, text in enumerate(texts, 1)]
    empty = [page.number for page in pages if not page.text.strip()]
    if pages and len(empty) == len(pages):
        kind = "scanned images" if any(images) else "blank pages"
        raise SourceError(source, f"no text layer on any of its {len(pages)} page(s) ({kind})", _OCR_FIX)
    metadata: dict = {"page_count": len(pages)}
    if empty:
        scanned = [n for n in empty if images[n - 1]]
        metadata["pages_without_text"] = empty
        metadata["notes"] = [_empty_note(source, empty, scanned)]
    return Document(source, pages, title=title or Path(path).stem, metadata=metadata)


def _empty_note(source: str, empty: list[int], scanned: list[int]) -> str:
    listed = ", ".join(map(str, empty))
    if scanned:
        return (f"{source}: page(s) {listed} have no text layer (scanned image) and were not indexed; "
                f"{_OCR_FIX}")
    return f"{source}: page(s) {listed} have no text (blank)"
