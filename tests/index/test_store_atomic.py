"""A save killed at any step leaves the old index or the new one, and the next save leaves no debris.

The kill is injected in a forked child: every file-system call a save makes (opens, writes of the
FAISS and numpy files, fsyncs, renames, removals) counts as two steps, one before and one after it,
and the child exits on the spot at step N, for every N until a save runs to the end.
"""

from __future__ import annotations

import builtins
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import faiss
import numpy as np
import pytest

from ragglm.documents import Document, Page
from ragglm.index.store import IndexStore
from ragglm.text.chunker import Chunker

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kills are injected in a forked child")

KILLED = 86
QUERY = "How do I reset the router?"
OLD = {"filter.txt": "The AquaPure W3 filter lasts six months. Replace it when the light turns red.",
       "router.txt": "To reset the R7 router, hold the reset button for ten seconds."}
NEW = {"router.txt": "The R9 router resets when you unplug it for a minute and plug it back in.",
       "lock.txt": "门锁电池能用一年左右，电量低时会发出提示音。"}


class _RememberingEmbedder:
    """The real embedder, asked once per text: the kill loop searches the same query many times."""

    def __init__(self, embedder):
        self.embedder, self.name, self.dimension = embedder, embedder.name, embedder.dimension
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.embedder.embed(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


@pytest.fixture(scope="module")
def remembering(embedder) -> _RememberingEmbedder:
    return _RememberingEmbedder(embedder)


def _build(embedder, documents: dict[str, str]) -> IndexStore:
    store = IndexStore(embedder)
    for source, text in documents.items():
        store.add(source, f"hash-{text}", Chunker(max_tokens=40).split(Document(source, [Page(None, text)])))
    return store


@pytest.fixture(scope="module")
def stores(remembering) -> dict[str, IndexStore]:
    return {"old": _build(remembering, OLD), "new": _build(remembering, NEW)}


def _which(folder: Path, embedder, stores) -> str:
    """"old" or "new": the content the index in folder holds, which must be all of one of them."""
    loaded = IndexStore.load(folder, embedder)
    for name, store in stores.items():
        if loaded.sources == store.sources:
            assert loaded.chunks == store.chunks
            assert [h.chunk for h in loaded.search(QUERY, 2)] == [h.chunk for h in store.search(QUERY, 2)]
            return name
    raise AssertionError(f"{folder} holds neither index: {sorted(loaded.sources)}")


class _Kill:
    """Counts the file-system calls of a save and ends the process at the given one."""

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.at:
            os._exit(KILLED)

    def wrap(self, function):
        def counted(*args, **kwargs):
            self.step()
            result = function(*args, **kwargs)
            self.step()
            return result

        return counted

    def install(self) -> None:
        for name in ("open", "replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync"):
            setattr(os, name, self.wrap(getattr(os, name)))
        builtins.open = io.open = self.wrap(io.open)
        shutil.rmtree = self.wrap(shutil.rmtree)
        faiss.write_index = self.wrap(faiss.write_index)
        np.savez = self.wrap(np.savez)


def _save_killed_at(store: IndexStore, folder: Path, step: int) -> bool:
    """Save store to folder in a child killed at step; True when the save ran to the end instead."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _Kill(step).install()
            store.save(folder)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED), f"the save killed at step {step} failed on its own (exit code {code})"
    return code == 0


def _assert_tidy(folder: Path) -> None:
    """Only the pointer, the lock file and the one version it names are left, and nothing beside folder."""
    current = json.loads((folder / "index.json").read_text(encoding="utf-8"))["current"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([".lock", "index.json", current])
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def _legacy_copy(store: IndexStore, folder: Path, scratch: Path) -> None:
    """folder as saves wrote it before versions existed: the files directly in it."""
    store.save(scratch)
    current = json.loads((scratch / "index.json").read_text(encoding="utf-8"))["current"]
    shutil.copytree(scratch / current, folder)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["versioned", "legacy"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_index(tmp_path, remembering, stores, layout):
    pristine = tmp_path / "pristine" / "index"
    if layout == "legacy":
        _legacy_copy(stores["old"], pristine, tmp_path / "scratch" / "index")
    else:
        stores["old"].save(pristine)
    seen = []
    for step in itertools.count(1):
        folder = tmp_path / f"killed-at-{step}" / "index"
        shutil.copytree(pristine, folder)
        completed = _save_killed_at(stores["new"], folder, step)
        seen.append(_which(folder, remembering, stores))
        stores["old"].save(folder)  # one more save sweeps whatever the killed one left
        assert _which(folder, remembering, stores) == "old"
        _assert_tidy(folder)
        shutil.rmtree(folder.parent)
        if completed:
            break
    assert seen[-1] == "new"
    assert seen == sorted(seen, key=["old", "new"].index), "the pointer moved back to the old index"
    assert seen.count("old") > 10 and seen.count("new") > 1  # kills before and after the switch


def test_legacy_folder_loads_and_the_first_save_converts_it(tmp_path, remembering, stores):
    folder = tmp_path / "kb" / "index"
    _legacy_copy(stores["old"], folder, tmp_path / "scratch" / "index")
    assert IndexStore.exists(folder)
    assert _which(folder, remembering, stores) == "old"
    assert (folder / "dense.faiss").is_file()  # loading alone leaves the old layout alone
    stores["new"].save(folder)
    assert _which(folder, remembering, stores) == "new"
    _assert_tidy(folder)


def test_folder_without_sparse_index_is_rebuilt_on_load(tmp_path, remembering, stores):
    folder = tmp_path / "index"
    stores["old"].save(folder)
    current = json.loads((folder / "index.json").read_text(encoding="utf-8"))["current"]
    (folder / current / "sparse.npz").unlink()
    assert _which(folder, remembering, stores) == "old"


def test_exists_needs_the_pointer_and_the_version_it_names(tmp_path, stores):
    folder = tmp_path / "index"
    assert not IndexStore.exists(folder)
    stores["old"].save(folder)
    assert IndexStore.exists(folder)
    current = json.loads((folder / "index.json").read_text(encoding="utf-8"))["current"]
    shutil.rmtree(folder / current)
    assert not IndexStore.exists(folder)


def _finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_versions_of_live_writers_are_spared_and_those_of_dead_ones_removed(tmp_path, remembering, stores):
    folder = tmp_path / "index"
    stores["old"].save(folder)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            writing = folder / f"v000009-{live.pid}-abcd1234"
            abandoned = folder / f"v000009-{_finished_pid()}-abcd1234"
            pointer_tmp = folder / f".index.json.{_finished_pid()}-abcd1234.tmp"
            for path in (writing, abandoned):
                path.mkdir()
                (path / "index.json").write_text("{}")
            pointer_tmp.write_text("{}")
            unrelated = folder / "notes.txt"
            unrelated.write_text("kept")
            assert _which(folder, remembering, stores) == "old"  # loading tidies too
            assert writing.is_dir() and unrelated.is_file()
            assert not abandoned.exists() and not pointer_tmp.exists()
            stale = time.time() - 2 * 3600
            os.utime(writing, (stale, stale))  # a writer that old is hung, or its pid was reused
            stores["new"].save(folder)
            assert not writing.exists() and unrelated.is_file()
        finally:
            live.kill()


def test_staging_folders_of_the_old_save_are_removed_once_stale(tmp_path, stores):
    folder = tmp_path / "index"
    staging, fresh = tmp_path / ".index.k2j4_x9a", tmp_path / ".index.old-12345"
    for path in (staging, fresh):
        path.mkdir()
        (path / "index.json").write_text("{}")
    stale = time.time() - 2 * 3600
    os.utime(staging, (stale, stale))
    stores["old"].save(folder)
    assert not staging.exists()
    assert fresh.is_dir()  # an old-style save may be using it right now
