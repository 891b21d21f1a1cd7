"""Uploaded files kept in a knowledge base's files folder, under sanitised names.

A file replacing one of the same name keeps the old bytes aside until its indexing succeeds, so a
failed upload leaves both the folder and the index as they were.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from ragglm.connectors.formats import LOADERS, supported

__all__ = ["StoredFile", "UploadRejected", "safe_name", "store_upload"]

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
BACKUPS = ".replaced"  # hidden: never listed, never indexed


class UploadRejected(Exception):
    """A file refused before indexing (unsupported type, empty, no usable name)."""


@dataclass
class StoredFile:
    path: Path
    backup: Path | None  # the earlier file of the same name, restored if this one fails
    new: bool  # no file of this name was there before

    def keep(self) -> None:
        if self.backup is not None:
            self.backup.unlink(missing_ok=True)

    def undo(self) -> None:
        if self.backup is not None:
            os.replace(self.backup, self.path)
        elif self.new:
            self.path.unlink(missing_ok=True)


def safe_name(name: str) -> str:
    """The last part of a client's file name, without characters a file system or a shell would trip on.

    Browsers and curl may send a whole path ("../../etc/passwd", "C:\\docs\\a.pdf"): only its last part
    is kept, and leading dots go so that nothing becomes hidden or climbs a folder."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/")).rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".").strip()
    return base[:200]


def store_upload(files: Path, name: str, data: bytes) -> StoredFile:
    clean = safe_name(name)
    if not clean:
        raise UploadRejected(f"{name!r} is not a usable file name")
    if Path(clean).suffix.lower() not in LOADERS:
        raise UploadRejected(f"{clean}: unsupported file type; use one of {supported()}")
    if not data:
        raise UploadRejected(f"{clean}: the file is empty")
    target = (files / clean).resolve()
    if target.parent != files.resolve():  # the name was cleaned, so this holds; checked all the same
        raise UploadRejected(f"{name!r} would be stored outside the knowledge base")
    if target.exists() and target.read_bytes() == data:
        return StoredFile(target, None, new=False)
    staging = files / f".incoming-{uuid.uuid4().hex}"
    staging.write_bytes(data)
    backup = None
    if target.exists():
        (files / BACKUPS).mkdir(exist_ok=True)
        backup = files / BACKUPS / f"{uuid.uuid4().hex}-{clean}"
        os.replace(target, backup)
    os.replace(staging, target)
    return StoredFile(target, backup, new=backup is None)
