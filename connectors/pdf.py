"""PDF pages with their printed numbers; encrypted files with an empty user password open."""

from __future__ import annotations

from pathlib import Path

from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["load_pdf"]


def load_pdf(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SourceError(str(path), "the PDF needs a password", "remove the password or export an unprotected copy")
        pages = [Page(number, _clean(page.extract_text() or "")) for number, page in enumerate(reader.pages, 1)]
    except SourceError:
        raise
    except FileNotDecryptedError as exc:
        raise SourceError(str(path), "the PDF needs a password", "remove the password or export an unprotected copy") from exc
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise SourceError(str(path), f"not a readable PDF ({exc})", "re-export or re-download the file") from exc
    title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    return Document(str(path), pages, title=str(title) if title else path.stem)


def _clean(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()
