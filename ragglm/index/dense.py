"""Inner-product FAISS index over chunk ids: exact while small, IVF once past a size threshold."""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path

import faiss
import numpy as np

from ragglm.errors import IndexMismatchError

__all__ = ["DenseIndex", "APPROXIMATE_FROM", "DamagedIndexError"]

# Below this many vectors an exact scan answers in a few milliseconds (384 dims, 2 cores);
# above it an IVF index keeps queries near-constant while recall@10 stays above 0.95.
APPROXIMATE_FROM = 50_000


class DamagedIndexError(IndexMismatchError):
    """A saved vector index that cannot be read back as written (truncated, damaged or crafted).

    Exit code 3, as for a model file that cannot be loaded: the file, not the command, is at fault."""

    exit_code = 3

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: the saved vector index cannot be used: {problem}; "
                         "rebuild the index into a new folder: ragglm index DOCS --kb NEW_FOLDER")

    def __reduce__(self):
        return DamagedIndexError, (self.path, self.problem)


class DenseIndex:
    def __init__(self, dimension: int, approximate_from: int = APPROXIMATE_FROM, nprobe: int = 24):
        self.dimension = dimension
        self.approximate_from = approximate_from
        self.nprobe = nprobe
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._source: Path | None = None  # the file it was loaded from, named when it does not fit

    def __len__(self) -> int:
        return self._index.ntotal

    @property
    def approximate(self) -> bool:
        return isinstance(faiss.downcast_index(self._index), faiss.IndexIVF)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dimension)
        self._check_dimension(vectors.shape[-1])
        ids = np.asarray(ids, dtype=np.int64)
        if not self.approximate and len(self) + len(ids) >= self.approximate_from:
            old_ids, old_vectors = self._flat_contents()
            self._index = self._train_ivf(np.concatenate([old_vectors, vectors]))
            if len(old_ids):
                self._index.add_with_ids(old_vectors, old_ids)
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(self) == 0:
            return []
        self._check_dimension(vector.shape[-1])
        scores, ids = self._index.search(vector.reshape(1, -1).astype(np.float32), min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=False) if i >= 0]

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, approximate_from: int = APPROXIMATE_FROM, nprobe: int = 24,
             dimension: int | None = None) -> DenseIndex:
        """The index saved at path; dimension, when given, is the one its vectors must have."""
        _check_layout(Path(path))
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as exc:  # what faiss raises for a file it cannot parse
            raise DamagedIndexError(path, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__) from exc
        dense = cls(index.d, approximate_from, nprobe)
        dense._index = index
        dense._source = Path(path)
        if dimension is not None:
            dense._check_dimension(dimension)
        if dense.approximate:
            faiss.downcast_index(index).nprobe = dense.nprobe
        return dense

    def _check_dimension(self, dimension: int) -> None:
        # faiss checks nothing here: a query of another width reads past its buffer
        if dimension != self.dimension:
            where = self._source or "the vector index"
            raise IndexMismatchError(f"{where} holds {self.dimension}-dimensional vectors, but the embedder gives "
                                     f"{dimension}; rebuild the index into a new folder: "
                                     "ragglm index DOCS --kb NEW_FOLDER")

    def _flat_contents(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), dtype=np.float32)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, n)
        return ids, vectors

    def _train_ivf(self, sample: np.ndarray):
        # about 4*sqrt(n) lists, trained on at most 64 points per list (faiss's own guidance)
        lists = max(16, int(4 * math.sqrt(max(len(sample), self.approximate_from))))
        rng = np.random.default_rng(0)
        if len(sample) > 64 * lists:
            sample = sample[rng.choice(len(sample), 64 * lists, replace=False)]
        lists = min(lists, max(1, len(sample) // 39))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, lists, faiss.METRIC_INNER_PRODUCT)
        ivf.train(sample)
        ivf.nprobe = self.nprobe
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns it now
        return ivf


# -- the saved layout, walked before faiss reads it ------------------------------------------------
#
# faiss sizes every buffer from the counts in the file before reading it, so a crafted count makes
# it allocate up to terabytes. The two layouts this class writes (an ID map over a flat
# inner-product index, or an IVF-flat index with array inverted lists) are walked here, each count
# checked against the bytes that remain, so faiss only ever reads a file whose sizes are consistent.

_HEADER = struct.Struct("<iqqq?i")  # d, ntotal, two unused fields, is_trained, metric_type
_INNER_PRODUCT = 0


class _Walk:
    def __init__(self, path: Path, data):
        self.path, self.data, self.at = path, data, 0

    def fail(self, problem: str) -> DamagedIndexError:
        return DamagedIndexError(self.path, problem)

    def take(self, size: int, what: str) -> bytes:
        if size > len(self.data) - self.at:
            raise self.fail(f"{what} needs {size} bytes at offset {self.at}, but the file ends "
                            f"{len(self.data) - self.at} bytes later")
        self.at += size
        return self.data[self.at - size:self.at]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def fourcc(self, expected: tuple[bytes, ...]) -> bytes:
        code = self.take(4, "a section tag")
        if code not in expected:
            raise self.fail(f"found section {code!r} at offset {self.at - 4} where "
                            f"{' or '.join(map(repr, expected))} belongs (not an index ragglm writes)")
        return code

    def header(self, dimension: int | None) -> tuple[int, int]:
        d, ntotal, _, _, _, metric = _HEADER.unpack(self.take(_HEADER.size, "an index header"))
        if d <= 0 or ntotal < 0 or metric != _INNER_PRODUCT:
            raise self.fail(f"its header gives dimension {d}, {ntotal} vectors, metric {metric}")
        if dimension is not None and d != dimension:
            raise self.fail(f"its parts disagree on the dimension ({dimension} and {d})")
        return d, ntotal

    def vector(self, item_size: int, what: str) -> int:
        """Skip a length-prefixed array; its length."""
        n = self.u64(f"the length of {what}")
        self.take(n * item_size, what)
        return n


def _check_layout(path: Path) -> None:
    try:
        with open(path, "rb") as file:
            if file.seek(0, 2) == 0:
                raise DamagedIndexError(path, "it is empty")
            # mapped rather than read: an index of a million vectors is gigabytes
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _walk_layout(_Walk(path, data))
    except OSError as exc:
        raise DamagedIndexError(path, f"it cannot be read ({exc.strerror or exc})") from exc


def _walk_layout(walk: _Walk) -> None:
    if walk.fourcc((b"IxM2", b"IwFl")) == b"IxM2":
        _walk_id_map(walk)
    else:
        _walk_ivf(walk)
    if walk.at != len(walk.data):
        raise walk.fail(f"{len(walk.data) - walk.at} unexpected bytes follow the index")


def _walk_flat(walk: _Walk, dimension: int | None) -> tuple[int, int]:
    walk.fourcc((b"IxFI",))
    d, ntotal = walk.header(dimension)
    words = walk.vector(4, "the vectors")  # stored as a count of 4-byte words
    if words != ntotal * d:
        raise walk.fail(f"it claims {ntotal} vectors of {d} dimensions but stores {words} values")
    return d, ntotal


def _walk_id_map(walk: _Walk) -> None:
    d, ntotal = walk.header(None)
    _walk_flat(walk, d)
    if walk.vector(8, "the ids") != ntotal:
        raise walk.fail(f"it claims {ntotal} vectors but stores another number of ids")


def _walk_ivf(walk: _Walk) -> None:
    d, ntotal = walk.header(None)
    nlist = walk.u64("the list count")
    walk.u64("nprobe")
    _walk_flat(walk, d)  # the coarse quantizer
    if walk.take(1, "the direct map type") != b"\0":
        raise walk.fail("it keeps a direct map, which ragglm never writes")
    walk.vector(8, "the direct map")
    walk.fourcc((b"ilar",))
    if walk.u64("the list count") != nlist or walk.u64("the code size") != 4 * d:
        raise walk.fail("its inverted lists disagree with the index on the list count or the code size")
    sizes = _list_sizes(walk, nlist)
    if sum(sizes) != ntotal:
        raise walk.fail(f"it claims {ntotal} vectors but its lists hold {sum(sizes)}")
    for size in sizes:
        walk.take(size * (4 * d + 8), "a list's vectors and ids")


def _list_sizes(walk: _Walk, nlist: int) -> list[int]:
    kind = walk.fourcc((b"full", b"sprs"))
    n = walk.u64("the list sizes")
    raw = walk.take(n * 8, "the list sizes")
    values = struct.unpack(f"<{n}Q", raw)
    if kind == b"full":
        if n != nlist:
            raise walk.fail(f"it has {nlist} lists but {n} list sizes")
        return list(values)
    sizes = [0] * nlist  # sparse: (list number, size) pairs for the lists that are not empty
    for number, size in zip(values[::2], values[1::2], strict=False):
        if number >= nlist:
            raise walk.fail(f"a list size names list {number} of {nlist}")
        sizes[number] = size
    return sizes
