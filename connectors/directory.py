"""Walk paths and folders, load every supported file, and report what could not be read."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ragglm.documents import Document
from ragglm.errors import SourceError

__all__ = ["LOADERS", "LoadReport", "expand_paths", "iter_files", "load", "load_file", "load_many"]


def _loaders() -> dict[str, Callable[[Path], Document]]:
    from ragglm.connectors.pdf import load_pdf
    from ragglm.connectors.text import load_text
    from ragglm.connectors.web import load_html

    return {".pdf": load_pdf, ".md": load_text, ".markdown": load_text, ".txt": load_text,
            ".html": load_html, ".htm": load_html}


LOADERS = _loaders()


@dataclass
class LoadReport:
    documents: list[Document] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)


def iter_files(path: Path) -> Iterable[Path]:
    """Supported files under path, hidden ones skipped, in a stable order."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in LOADERS:
                yield Path(root) / name


def load(path: str | Path) -> list[Document]:
    """Documents from one file or folder; raises SourceError for the first one that fails."""
    report = load_many([path])
    if report.errors:
        raise report.errors[0]
    return report.documents


def load_file(file: Path) -> Document:
    """One file with the loader for its suffix; every failure becomes a SourceError naming it."""
    loader = LOADERS.get(file.suffix.lower())
    if loader is None:
        raise SourceError(str(file), "unsupported file type", f"ragglm reads {', '.join(sorted(LOADERS))}")
    try:
        return loader(file)
    except SourceError:
        raise
    except (OSError, UnicodeError) as exc:
        raise SourceError(str(file), f"could not be read ({exc})") from exc


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[SourceError]]:
    """Supported files under each path, and an error for each path that yields none."""
    files: list[Path] = []
    errors: list[SourceError] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            errors.append(SourceError(str(raw), "no such file or folder", "check the path"))
            continue
        found = list(iter_files(path))
        if not found:
            problem = "folder has no supported files" if path.is_dir() else "unsupported file type"
            errors.append(SourceError(str(raw), problem, f"ragglm reads {', '.join(sorted(LOADERS))}"))
        files.extend(found)
    return files, errors


def load_many(paths: Iterable[str | Path]) -> LoadReport:
    files, errors = expand_paths(paths)
    report = LoadReport(errors=errors)
    for file in files:
        try:
            report.documents.append(load_file(file))
        except SourceError as exc:
            report.errors.append(exc)
    return report
