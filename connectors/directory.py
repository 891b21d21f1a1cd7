"""Walk paths, folders and URLs; load every supported source and report what could not be read."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ragglm.connectors.fetch import Fetched, fetch_url, is_url
from ragglm.connectors.formats import LOADERS, parse, supported
from ragglm.connectors.image import IMAGE_SUFFIXES
from ragglm.connectors.parallel import ParseJob, available_cores, parse_in_order
from ragglm.documents import Document
from ragglm.errors import SourceError

__all__ = ["LOADERS", "Collected", "LoadReport", "collect", "expand_paths", "iter_files", "iter_jobs", "load",
           "load_file", "load_many", "normalise_url", "worker_count"]


@dataclass
class LoadReport:
    documents: list[Document] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped on purpose, pages without text


@dataclass
class Collected:
    """What a list of paths and URLs stands for: files to read, URLs to fetch, folders walked."""
    files: list[Path] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"\0" in handle.read(8192)
    except OSError:
        return True


def iter_files(path: Path, include: Sequence[str] = (), exclude: Sequence[str] = (),
               notes: list[str] | None = None) -> Iterable[Path]:
    """Supported files under path in a stable order; hidden, binary and unsupported files are noted."""
    path = Path(path)
    if path.is_file():
        yield path
        return
    hidden: list[str] = []
    skipped: list[str] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders walked: symlink loops end here
    for root, dirs, files in os.walk(path, followlinks=True):
        info = os.stat(root)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        base = Path(root)
        relative_root = base.relative_to(path).as_posix()
        prefix = "" if relative_root == "." else relative_root + "/"
        hidden.extend(prefix + d + "/" for d in dirs if d.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _matches(prefix + d, exclude))
        for name in sorted(files):
            relative = prefix + name
            if name.startswith("."):
                hidden.append(relative)
            elif _matches(relative, exclude) or (include and not _matches(relative, include)):
                continue
            elif Path(name).suffix.lower() not in LOADERS or _looks_binary_text(base / name):
                skipped.append(relative)
            else:
                yield base / name
    if notes is not None:
        if hidden:
            notes.append(f"{path}: skipped {len(hidden)} hidden file(s) or folder(s): {_sample(hidden)}")
        if skipped:
            notes.append(f"{path}: skipped {len(skipped)} binary or unsupported file(s): {_sample(skipped)} "
                         f"(ragglm reads {supported()})")


def _looks_binary_text(path: Path) -> bool:
    """A .txt or .md file that holds binary data (NUL bytes) is skipped rather than indexed as noise."""
    return path.suffix.lower() in (".txt", ".md", ".markdown", ".text") and _looks_binary(path)


def _sample(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def collect(paths: Iterable[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Collected:
    """Expand paths into files and URLs; a path that yields nothing is an error naming it.

    Files come as resolved paths and URLs normalised, so that one source reached by two spellings
    (./docs and /abs/docs, a symlink, HTTP://Host:80/a#top) is one source.
    """
    found = Collected()
    for raw in paths:
        if is_url(str(raw)):
            found.urls.append(normalise_url(str(raw)))
            continue
        path = Path(raw)
        if not path.exists():
            found.errors.append(SourceError(str(raw), "no such file or folder", "check the path"))
            continue
        files = [file.resolve() for file in iter_files(path, include, exclude, found.notes)]
        if path.is_dir():
            found.folders.append(path.resolve())
        if not files:
            problem = "folder has no supported files" if path.is_dir() else "unsupported file type"
            found.errors.append(SourceError(str(raw), problem, f"ragglm reads {supported()}"))
        elif path.is_file() and path.suffix.lower() not in LOADERS:
            found.errors.append(SourceError(str(raw), "unsupported file type", f"ragglm reads {supported()}"))
            continue
        found.files.extend(files)
    found.files = list(dict.fromkeys(found.files))
    found.urls = list(dict.fromkeys(found.urls))
    return found


def normalise_url(url: str) -> str:
    """Scheme and host in lower case, no default port, no fragment: the URL as a source's name."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    if parts.port and parts.port != {"http": 80, "https": 443}.get(parts.scheme.lower()):
        host += f":{parts.port}"
    if parts.username:
        host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[SourceError]]:
    """Supported files under each path, and an error for each path that yields none."""
    found = collect(paths)
    return found.files, found.errors


def load_file(file: Path | str) -> Document:
    """One file or URL with the reader for its type; every failure becomes a SourceError naming it."""
    source = str(file)
    found = Collected(urls=[source]) if is_url(source) else Collected(files=[Path(file)])
    errors: list[SourceError] = []
    for job in iter_jobs(found, errors):
        return parse(job.source, job.data, job.content_type)
    raise errors[0]


def iter_jobs(found: Collected, errors: list[SourceError],
              unchanged: Callable[[str, str], bool] | None = None,
              skipped: list[str] | None = None, allow_private_urls: bool | None = None) -> Iterator[ParseJob]:
    """Read each file (or fetch each URL) when it is its turn, with its sha256; failures go to errors.

    unchanged(source, sha256) -> True skips a source (it goes to skipped): the index has it already.
    allow_private_urls: see fetch_url (None: the RAGGLM_ALLOW_PRIVATE_URLS setting decides).
    """
    readers = [(str(file), file.read_bytes) for file in found.files]
    readers += [(url, partial(fetch_url, url, allow_private=allow_private_urls)) for url in found.urls]
    for source, read in readers:
        try:
            data = read()
        except SourceError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            errors.append(SourceError(source, f"could not be read ({exc.strerror or exc})",
                                      "check the path and its permissions"))
            continue
        content_type = None
        if isinstance(data, Fetched):
            data, content_type = data.data, data.content_type or "text/html"
        digest = hashlib.sha256(data).hexdigest()
        if unchanged is not None and unchanged(source, digest):
            if skipped is not None:
                skipped.append(source)
            continue
        yield ParseJob(source, data, content_type, digest)


def load_many(paths: Iterable[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = (),
              workers: int | None = None) -> LoadReport:
    """Every readable document under paths, parsed in parallel; order follows the paths."""
    found = collect(paths, include, exclude)
    report = LoadReport(errors=list(found.errors), notes=list(found.notes))
    for _, result in parse_in_order(iter_jobs(found, report.errors), worker_count(found, workers)):
        if isinstance(result, SourceError):
            report.errors.append(result)
        else:
            report.documents.append(result)
            report.notes.extend(result.metadata.get("notes", []))
    return report


def worker_count(found: Collected, workers: int | None = None) -> int:
    """Parser processes: PDF and Office files are read in processes, where a file that takes too long
    or too much memory is stopped and reported; light files alone are read here (0)."""
    if workers is not None:
        return workers
    heavy = sum(1 for f in found.files if f.suffix.lower() in (".pdf", ".docx", ".xlsx", ".pptx", *IMAGE_SUFFIXES))
    return min(available_cores(), heavy)


def load(path_or_url: str | Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Document]:
    """Documents from one file, folder or URL; raises SourceError for the first source that fails."""
    report = load_many([path_or_url], include, exclude)
    if report.errors:
        raise report.errors[0]
    return report.documents
