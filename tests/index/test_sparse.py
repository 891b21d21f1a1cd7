"""BM25 scores against a direct implementation of the formula; incremental removal; persistence."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from ragglm.index.sparse import SparseIndex, tokenize

TEXTS = [
    "智能门锁支持指纹、密码、门卡和机械钥匙四种开锁方式。",
    "门锁使用4节AA碱性电池供电，电池可以使用约10个月。",
    "连续5次输入错误的密码后，门锁会锁定3分钟。",
    "The AquaPure W3 filter lasts six months before it must be replaced.",
    "Replace the filters when the indicator light turns red.",
    "电量不足时，门锁每次开锁都会发出语音提示。",
]


def reference_bm25(docs: list[list[str]], query: list[str], k1=1.2, b=0.75) -> list[float]:
    n = len(docs)
    average = sum(max(len(d), 1) for d in docs) / n
    scores = []
    for doc in docs:
        tf, length, total = Counter(doc), max(len(doc), 1), 0.0
        for term, qf in Counter(query).items():
            df = sum(1 for d in docs if term in d)
            if df == 0 or term not in tf:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            total += qf * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * length / average))
        scores.append(total)
    return scores


def test_tokenize_lowercases_drops_stop_words_and_punctuation_and_splits_long_words():
    tokens = tokenize("中华人民共和国的Filters是什么？")
    assert "中华" in tokens and "人民" in tokens and "中华人民共和国" in tokens  # search mode
    assert "filter" in tokens  # lower-cased, plural folded
    assert "的" not in tokens and "什么" not in tokens and "？" not in tokens


@pytest.mark.parametrize("query", ["门锁电池能用多久", "how long does the filter last", "密码 错误 锁定"])
def test_scores_match_reference_formula(query):
    index = SparseIndex()
    index.add(np.arange(len(TEXTS)), TEXTS)
    expected = reference_bm25([tokenize(t) for t in TEXTS], tokenize(query))
    got = dict(index.search(query, len(TEXTS)))
    for chunk_id, value in enumerate(expected):
        assert got.get(chunk_id, 0.0) == pytest.approx(value, rel=1e-5, abs=1e-6)
    ranked = [i for i, _ in index.search(query, 3)]
    assert ranked == sorted(range(len(TEXTS)), key=lambda i: (-expected[i], i))[:len(ranked)]


def test_removal_scores_like_an_index_built_without_the_removed_chunks(tmp_path):
    index = SparseIndex()
    index.add(np.arange(len(TEXTS)), TEXTS)
    index.remove([1, 4])
    fresh = SparseIndex()
    keep = [i for i in range(len(TEXTS)) if i not in (1, 4)]
    fresh.add(np.array(keep), [TEXTS[i] for i in keep])
    for query in ("门锁电池", "replace filter", "密码"):
        got, expected = index.search(query, 10), fresh.search(query, 10)
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected])
    assert len(index) == len(keep) and index.ids().tolist() == keep
    index.save(tmp_path)
    loaded = SparseIndex.load(tmp_path)
    assert loaded.search("门锁电池", 10) == index.search("门锁电池", 10)
    loaded.add([9], ["门锁电池电池电池"])
    assert loaded.search("门锁电池", 1)[0][0] == 9


def test_duplicate_id_is_refused():
    index = SparseIndex()
    index.add([0], ["门锁"])
    with pytest.raises(ValueError, match="already"):
        index.add([0], ["电池"])
