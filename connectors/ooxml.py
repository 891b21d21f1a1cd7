"""What the Office Open XML readers (.xlsx, .pptx) share: the size bound, checked on the zip
directory before openpyxl or python-pptx unpack anything, and one error for a damaged file."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import ParseError

from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_UNPACKED_BYTES", "check_archive", "load_package", "unreadable"]

# Far above real workbooks and decks (their XML compresses ten to twenty times): a zip bomb fails
# here, before a parser inflates it.
MAX_UNPACKED_BYTES = 256 * 2**20

# What a damaged package makes the parsers raise, besides their own error classes.
_DAMAGED = (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, IndexError, ParseError,
            EOFError)


def load_package(path: Path | str, data: bytes | None, suffix: str, required: str,
                 read: Callable[[str, bytes, list[str]], tuple[list[Page], str]],
                 errors: tuple[type[BaseException], ...] = ()) -> Document:
    """A Document from read(source, data, member names) -> (pages, title), run once the archive is
    within bounds; what read raises for a damaged file becomes a SourceError for this file."""
    source = str(path)
    data = Path(path).read_bytes() if data is None else data
    names = check_archive(source, data, suffix, required)
    try:
        pages, title = read(source, data, names)
    except SourceError:
        raise
    except (*_DAMAGED, *errors) as exc:
        raise unreadable(source, suffix, exc) from exc
    return Document(source, pages or [Page(None, "")], title=title.strip() or Path(source).stem)


def unreadable(source: str, suffix: str, exc: BaseException | str) -> SourceError:
    program = "PowerPoint" if suffix == ".pptx" else "Excel"
    return SourceError(source, f"not a readable {suffix} file ({exc})",
                       f"open it in {program} or LibreOffice and save it again as {suffix}")


def check_archive(source: str, data: bytes, suffix: str, required: str) -> list[str]:
    """The member names of a readable zip that holds required and unpacks within the bound."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
        raise unreadable(source, suffix, exc) from exc
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise SourceError(source, f"unpacks to {unpacked / 2**20:.0f} MB, more than ragglm reads "
                                  f"({MAX_UNPACKED_BYTES // 2**20} MB)", "split it into smaller files")
    names = [member.filename for member in members]
    if required not in names:
        raise unreadable(source, suffix, f"no {required}")
    return names
