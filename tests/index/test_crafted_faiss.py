"""A damaged or crafted dense.faiss is refused with the file and the fix, before faiss sizes a buffer."""

import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragglm.documents import Chunk
from ragglm.errors import IndexMismatchError
from ragglm.index.dense import DamagedIndexError, DenseIndex
from ragglm.index.store import IndexStore

REPO = Path(__file__).resolve().parents[2]
HEADER = 4 + 4 + 8 + 8 + 8 + 1 + 4  # fourcc, d, ntotal, two unused, is_trained, metric


def _vectors(rows: int, dim: int) -> np.ndarray:
    vectors = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # each its own best inner product


def _saved(path: Path, rows: int = 5, dim: int = 4, approximate_from: int = 50_000) -> Path:
    index = DenseIndex(dim, approximate_from=approximate_from)
    index.add(np.arange(rows), _vectors(rows, dim))
    index.save(path)
    return path


def _refused(path: Path, *words: str, dimension: int | None = None) -> str:
    started = time.monotonic()
    with pytest.raises(IndexMismatchError) as caught:
        DenseIndex.load(path, dimension=dimension)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert "ragglm index DOCS --kb NEW_FOLDER" in message
    for word in words:
        assert word in message
    return message


@pytest.mark.parametrize("rows, approximate_from", [(5, 50_000), (400, 100)])
def test_indexes_as_written_still_load(tmp_path, rows, approximate_from):
    path = _saved(tmp_path / "dense.faiss", rows, 4, approximate_from)
    loaded = DenseIndex.load(path, dimension=4)
    assert len(loaded) == rows and loaded.approximate == (rows >= approximate_from)
    assert loaded.search(_vectors(rows, 4)[3], 1)[0][0] == 3


def test_an_ivf_index_with_mostly_empty_lists_still_loads(tmp_path):
    index = DenseIndex(4, approximate_from=100)
    index.add(np.arange(400), _vectors(400, 4))
    index.remove(np.arange(3, 400))  # lists are then saved sparsely
    index.save(tmp_path / "dense.faiss")
    assert len(DenseIndex.load(tmp_path / "dense.faiss")) == 3


@pytest.mark.parametrize("approximate_from", [50_000, 100])
def test_a_truncated_index_is_refused(tmp_path, approximate_from):
    path = _saved(tmp_path / "dense.faiss", 400, 4, approximate_from)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = pytest.raises(DamagedIndexError, DenseIndex.load, path).value
    assert error.exit_code == 3
    _refused(path, "the file ends")


def test_an_empty_or_foreign_file_is_refused(tmp_path):
    (tmp_path / "empty.faiss").write_bytes(b"")
    _refused(tmp_path / "empty.faiss", "empty")
    (tmp_path / "other.faiss").write_bytes(b"IxF2" + bytes(64))
    _refused(tmp_path / "other.faiss", "not an index ragglm writes")


def test_a_crafted_vector_count_is_refused_before_faiss_allocates(tmp_path):
    path = _saved(tmp_path / "dense.faiss")
    data = bytearray(path.read_bytes())
    at = 2 * HEADER  # the flat index's vector array length, after both headers
    data[at:at + 8] = struct.pack("<Q", 2**39)  # 2 TiB of floats
    path.write_bytes(bytes(data))
    _refused(path, f"needs {2**41} bytes")


def test_a_header_that_disagrees_with_the_data_is_refused(tmp_path):
    path = _saved(tmp_path / "dense.faiss")
    data = bytearray(path.read_bytes())
    data[8:16] = struct.pack("<q", 6)  # ntotal of the ID map: one more than stored
    path.write_bytes(bytes(data))
    _refused(path, "claims 6 vectors")


def test_trailing_bytes_are_refused(tmp_path):
    path = _saved(tmp_path / "dense.faiss")
    path.write_bytes(path.read_bytes() + b"extra")
    _refused(path, "5 unexpected bytes")


def test_another_dimension_is_refused_with_the_file(tmp_path):
    path = _saved(tmp_path / "dense.faiss")
    _refused(path, "4-dimensional", "gives 8", dimension=8)
    loaded = DenseIndex.load(path)
    with pytest.raises(IndexMismatchError, match=r"dense\.faiss holds 4-dimensional vectors.*gives 3"):
        loaded.search(np.ones(3, dtype=np.float32), 2)
    with pytest.raises(IndexMismatchError, match="gives 3"):
        loaded.add(np.array([9]), np.ones((1, 3), dtype=np.float32))


class _Embedder:
    """Stands in for the packaged embedder (same name) without loading a model."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, dimension: int):
        self.dimension = dimension

    def embed(self, texts, progress=False):
        return np.ones((len(texts), self.dimension), dtype=np.float32)


def _kb(folder: Path, dimension: int) -> Path:
    store = IndexStore(_Embedder(dimension))
    text = "The filter lasts twelve months."
    store.add("a.md", "hash-a", [Chunk(text, "a.md", None, 0, len(text))])
    store.save(folder)
    return next(folder.rglob("dense.faiss"))


def test_a_store_with_a_truncated_index_names_the_file(tmp_path):
    dense = _kb(tmp_path / "kb", 4)
    dense.write_bytes(dense.read_bytes()[:-10])
    with pytest.raises(DamagedIndexError, match=r"dense\.faiss.*ragglm index DOCS --kb NEW_FOLDER"):
        IndexStore.load(tmp_path / "kb", _Embedder(4))


def test_a_store_searched_with_another_dimension_names_the_file(tmp_path):
    _kb(tmp_path / "kb", 4)
    store = IndexStore.load(tmp_path / "kb", _Embedder(8))
    with pytest.raises(IndexMismatchError, match=r"dense\.faiss holds 4-dimensional vectors"):
        store.search("filter", 3)


def test_cli_refuses_a_truncated_index_with_one_line(tmp_path):
    dense = _kb(tmp_path / "kb" / "index", 384)  # where a knowledge-base folder keeps its index
    dense.write_bytes(dense.read_bytes()[:100])
    done = subprocess.run([sys.executable, "-m", "ragglm.cli", "search", "--kb", str(tmp_path / "kb"), "filter"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragglm: error: "), done.stderr
    assert "dense.faiss" in lines[0] and "ragglm index DOCS --kb NEW_FOLDER" in lines[0]
