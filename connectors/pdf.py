"""PDF pages numbered as a viewer shows them; files encrypted with an empty user password (RC4, AES) open;
pages without a text layer are read by OCR."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ragglm.connectors.ocr import OCR_INSTALL, ocr_available, ocr_mode
from ragglm.connectors.ocr_pages import ocr_images, render_pdf_pages
from ragglm.connectors.pdf_cleanup import clean_pages
from ragglm.connectors.pdf_spacing import join_tight_pairs, spaced_pages, tight_pairs
from ragglm.connectors.pdf_tables import PageDrawing, Table, put_tables, tabulate
from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_PAGES", "load_pdf", "read_pdf_pages"]

_PASSWORD_FIX = ("remove the password (for example: qpdf --decrypt --password=PASSWORD in.pdf out.pdf) "
                 "or export an unprotected copy")
_REDOWNLOAD_FIX = "download or export the file again"
_OCR_FIX = "check that the pages hold legible text, or run OCR on it first (for example: ocrmypdf in.pdf out.pdf)"
_MIN_TEXT_CHARS = 16  # fewer visible characters than this on a page: read it by OCR (RAGGLM_OCR=auto)


_EDGE_BAND = 0.08  # running headers and footers sit in the top and bottom 8% of a page
# More pages than any manual has: a crafted page tree can list one page a hundred thousand times
MAX_PAGES = 5000


def read_pdf_pages(data: bytes, source: str
                   ) -> tuple[list[str], list[bool], str | None, list[set[str]], list[list[Table]]]:
    """Raw text per page, whether each page draws an image, the title from the metadata, per page
    the text fragments printed near the top or bottom edge, and per page its ruled tables (each
    stands in the raw text as a mark line, see pdf_tables)."""
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
        texts, images, edges, drawings = [], [], [], {}
        for number, page in enumerate(reader.pages, 1):
            try:
                low, high = float(page.mediabox.bottom), float(page.mediabox.top)
                band = _EDGE_BAND * (high - low)
                at_edge: set[str] = set()
                drawing = PageDrawing(body=(low + band, high - band))

                def visit(text, cm, tm, *_, at_edge=at_edge, low=low, high=high, band=band, drawing=drawing):
                    drawing.visit_text(text, cm, tm)
                    y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                    if text.strip() and (y >= high - band or y <= low + band):
                        at_edge.add(text.strip())

                texts.append(page.extract_text(visitor_text=visit, visitor_operand_before=drawing.visit_operator)
                             or "")
                edges.append(at_edge)
                if drawing.has_grid():  # only these pages are searched for tables; the rest drop theirs
                    drawings[number - 1] = drawing
            except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SourceError(source, f"page {number} is damaged ({exc})", _REDOWNLOAD_FIX) from exc
            images.append(not texts[-1].strip() and _draws_image(page))
        title = reader.metadata.get("/Title") if reader.metadata else None
        texts, tables = tabulate(data, texts, drawings)
    except SourceError:
        raise
    except FileNotDecryptedError as exc:
        raise SourceError(source, "the PDF is protected by a password", _PASSWORD_FIX) from exc
    except DependencyError as exc:
        raise SourceError(source, f"its encryption needs an extra package ({exc})",
                          "pip install cryptography") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise SourceError(source, f"not a readable PDF ({exc})", _REDOWNLOAD_FIX) from exc
    return texts, images, str(title).strip() if title else None, edges, tables


def _draws_image(page) -> bool:
    try:
        objects = page.get("/Resources", {}).get("/XObject", {})
        return any(obj.get_object().get("/Subtype") == "/Image" for obj in objects.values())
    except (AttributeError, KeyError, TypeError):
        return False


def load_pdf(path: Path, data: bytes | None = None) -> Document:
    """Pages with clean text; pages without a text layer are OCR'd (RAGGLM_OCR: auto, always, never),
    or kept empty and listed in metadata notes and warnings when they cannot be."""
    source = str(path)
    data = Path(path).read_bytes() if data is None else data
    raw_pages, images, title, edges, tables = read_pdf_pages(data, source)
    suspects = spaced_pages(raw_pages)
    if suspects:  # characters spread apart on the page, split by spaces in the text
        for index, pairs in tight_pairs(data, suspects).items():
            raw_pages[index] = join_tight_pairs(raw_pages[index], pairs)
    # tables go in after cleaning: it joins wrapped lines, and a row is no wrapped line
    texts = [put_tables(text, found) for text, found in zip(clean_pages(raw_pages, edges), tables, strict=True)]
    metadata: dict = {"page_count": len(texts), "ocr_pages": [], "warnings": [], "notes": [],
                      "tables": sum(map(len, tables))}
    mode = ocr_mode()
    wanted = [n for n, text in enumerate(texts, 1) if mode == "always" or (mode == "auto" and _needs_ocr(text))]
    if wanted:
        _ocr_into(texts, wanted, data, source, mode, metadata)
    pages = [Page(number, text) for number, text in enumerate(texts, 1)]
    metadata["text_layer_pages"] = sum(1 for p in pages if p.text.strip() and p.number not in metadata["ocr_pages"])
    empty = [page.number for page in pages if not page.text.strip()]
    if pages and len(empty) == len(pages):
        kind = "scanned images" if any(images) else "blank pages"
        problem = f"no text layer on any of its {len(pages)} page(s) ({kind})"
        if metadata.get("ocr_missing"):
            raise SourceError(source, problem + " and the OCR engine is not installed", OCR_INSTALL)
        if mode == "never":
            raise SourceError(source, problem + " and OCR is off", "read it with --ocr auto (or RAGGLM_OCR=auto)")
        raise SourceError(source, problem + " and OCR found no text on them either", _OCR_FIX)
    if empty:
        scanned = [n for n in empty if images[n - 1]]
        metadata["pages_without_text"] = empty
        if not metadata.get("ocr_missing") and not metadata.get("ocr_failed_pages"):
            metadata["notes"].append(_empty_note(source, empty, scanned, mode))
    return Document(source, pages, title=title or Path(path).stem, metadata=metadata)


def _needs_ocr(text: str) -> bool:
    """No text layer, or a few characters only (a stamp, a page number over a scan)."""
    return sum(1 for c in text if not c.isspace()) < _MIN_TEXT_CHARS


def _ocr_into(texts: list[str], wanted: list[int], data: bytes, source: str, mode: str, metadata: dict) -> None:
    """Replace the text of the wanted pages by what OCR reads on them, where it reads more."""
    if not ocr_available():
        metadata["ocr_missing"] = True
        metadata["warnings"].append(
            f"{source}: page(s) {_listed(wanted)} have no text layer and need OCR, which is not installed; "
            f"they were not indexed (install it with: {OCR_INSTALL})")
        return
    read, failed = ocr_images(source, render_pdf_pages(data, wanted), len(wanted))
    numbers = sorted(read)
    for number, text in zip(numbers, clean_pages([read[n] for n in numbers]), strict=True):
        if mode == "always" or _visible(text) > _visible(texts[number - 1]):
            texts[number - 1] = text
            metadata["ocr_pages"].append(number)
    if failed:
        metadata["ocr_failed_pages"] = sorted(failed)
        reasons = "; ".join(f"page {n}: {failed[n]}" for n in sorted(failed)[:3])
        metadata["warnings"].append(f"{source}: OCR failed on page(s) {_listed(sorted(failed))} ({reasons}); "
                                    "the other pages were indexed")


def _visible(text: str) -> int:
    return sum(1 for c in text if not c.isspace())


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:20])) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


def _empty_note(source: str, empty: list[int], scanned: list[int], mode: str) -> str:
    listed = _listed(empty)
    if scanned and mode == "never":
        return (f"{source}: page(s) {listed} have no text layer (scanned image) and were not indexed "
                "(OCR is off: --ocr auto or RAGGLM_OCR=auto reads them)")
    if scanned:
        return f"{source}: page(s) {listed} have no text layer and OCR found no text on them"
    return f"{source}: page(s) {listed} have no text (blank)"
