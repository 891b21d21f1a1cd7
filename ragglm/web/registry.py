"""Several knowledge bases served at once, each with its folder of uploaded originals and its indexer."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragglm.integrations.openai_api import KB_MODEL_ID
from ragglm.knowledge_base import KnowledgeBase
from ragglm.web.jobs import Indexer, JobBoard

__all__ = ["KnowledgeBases", "Library", "open_knowledge_bases"]


@dataclass
class Library:
    """One knowledge base as the web API sees it."""
    name: str
    kb: object  # a KnowledgeBase
    files: Path  # uploaded originals, kept so that a re-index works after a restart
    indexer: Indexer = field(init=False)

    def __post_init__(self):
        self.files.mkdir(parents=True, exist_ok=True)


class KnowledgeBases:
    """Named knowledge bases in the order given; the first answers the plain "ragglm" model."""

    def __init__(self, libraries: Sequence[Library]):
        if not libraries:
            raise ValueError("KnowledgeBases needs at least one knowledge base")
        self.jobs = JobBoard()
        self._libraries = {library.name: library for library in libraries}
        for library in libraries:
            library.indexer = Indexer(library, self.jobs)

    @classmethod
    def of(cls, named: dict[str, object]) -> KnowledgeBases:
        """From {name: KnowledgeBase}; one kept in memory gets a temporary folder for its files."""
        return cls([Library(name, kb, _files_folder(kb)) for name, kb in named.items()])

    @property
    def first(self):
        return next(iter(self._libraries.values())).kb

    def names(self) -> list[str]:
        return list(self._libraries)

    def get(self, name: str) -> Library | None:
        return self._libraries.get(name)

    def model_ids(self) -> list[str]:
        return [KB_MODEL_ID] + [f"{KB_MODEL_ID}:{name}" for name in self._libraries]

    def for_model(self, model_id: str):
        """The KnowledgeBase behind "ragglm" (the first) or "ragglm:NAME"; None for any other model."""
        if model_id == KB_MODEL_ID:
            return self.first
        prefix, _, name = model_id.partition(":")
        library = self._libraries.get(name) if prefix == KB_MODEL_ID else None
        return library.kb if library else None

    def stop(self) -> None:
        for library in self._libraries.values():
            library.indexer.stop()


def open_knowledge_bases(folders: Sequence[Path] = (), root: Path | None = None, **settings) -> KnowledgeBases:
    """Knowledge bases from folders and from each sub-folder of root (made when root has none);
    none at all gives one in memory. They share the first one's generator."""
    folders = list(folders)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        folders += found or [root / "default"]
    named: dict[str, KnowledgeBase] = {}
    shared = {}
    for folder in folders or [None]:
        kb = KnowledgeBase(folder, **settings, **shared)
        shared = shared or {"generator": kb.generator}
        named[_unique(_name(folder), named)] = kb
    return KnowledgeBases.of(named)


def _name(folder: Path | None) -> str:
    if folder is None:
        return "docs"
    # the name travels in URL paths and model ids: keep it to characters that need no escaping there
    return re.sub(r"[^\w.-]+", "-", Path(folder).resolve().name).strip("-") or "kb"


def _unique(name: str, taken: dict) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _files_folder(kb) -> Path:
    if kb.path is None:
        return Path(tempfile.mkdtemp(prefix="ragglm-files-"))
    return Path(kb.path).resolve() / "files"
