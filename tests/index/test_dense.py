"""Flat to IVF switch past the threshold; removal and persistence of the approximate index."""

from __future__ import annotations

import numpy as np
import pytest

from ragglm.index.dense import DenseIndex


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_switches_to_ivf_and_finds_exact_neighbours(tmp_path):
    dim = 32
    vectors = _unit(3000, dim, 0)
    index = DenseIndex(dim, approximate_from=2000, nprobe=64)
    index.add(np.arange(1500), vectors[:1500])
    assert not index.approximate
    index.add(np.arange(1500, 3000), vectors[1500:])
    assert index.approximate and len(index) == 3000
    # every stored vector is its own nearest neighbour (nprobe covers all lists here)
    for i in (0, 1499, 1500, 2999):
        assert index.search(vectors[i], 1)[0][0] == i
    exact = vectors @ vectors[7]
    top = [i for i, _ in index.search(vectors[7], 10)]
    assert top == np.argsort(-exact)[:10].tolist()
    index.remove(np.array([7, 8]))
    assert len(index) == 2998 and 7 not in [i for i, _ in index.search(vectors[7], 10)]
    index.save(tmp_path / "dense.faiss")
    loaded = DenseIndex.load(tmp_path / "dense.faiss", nprobe=64)
    assert loaded.approximate and len(loaded) == 2998
    assert loaded.search(vectors[42], 5) == index.search(vectors[42], 5)


def test_flat_index_is_exact():
    vectors = _unit(200, 16, 1)
    index = DenseIndex(16)
    index.add(np.arange(100, 300), vectors)
    query = _unit(1, 16, 2)[0]
    got = index.search(query, 5)
    expected = np.argsort(-(vectors @ query))[:5] + 100
    assert [i for i, _ in got] == expected.tolist()
    assert [s for _, s in got] == pytest.approx((vectors @ query)[expected - 100].tolist(), abs=1e-5)
