"""BM25 over jieba search-mode tokens, lower-cased, stop words removed; incremental and persisted.

Postings are append-only arrays per term; a removed chunk is only marked dead (its length set to
zero) and its postings are dropped when the index is saved or when dead postings pile up. That
keeps add and remove O(chunk) while queries touch only the posting lists of the query's terms.
"""

from __future__ import annotations

import json
import re
import unicodedata
from array import array
from collections import Counter
from pathlib import Path

import jieba
import numpy as np

from ragglm.text.stopwords import STOP_WORDS

__all__ = ["SparseIndex", "tokenize", "TOKENIZER"]

TOKENIZER = "jieba-search-nfkc-lower-stop-v2"  # a saved index made by another tokenizer is rebuilt

jieba.setLogLevel(60)

# Han runs go through jieba; Latin letters and digits are split by this pattern directly, which
# gives jieba's own result for them ~100 times faster (it matters at 10^5+ chunks).
_RUNS = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)|([0-9a-z]+)")


def tokenize(text: str) -> list[str]:
    """Search-mode jieba tokens (long words also yield their parts), minus punctuation and stop words."""
    tokens = []
    for match in _RUNS.finditer(unicodedata.normalize("NFKC", text).lower()):
        han, latin = match.groups()
        for token in (jieba.cut_for_search(han) if han else (latin,)):
            if token not in STOP_WORDS:
                tokens.append(_light_stem(token))
    return tokens


def _light_stem(token: str) -> str:
    """Fold English plurals and possessives so "filters" matches "filter"; Chinese passes through."""
    if not token.isascii() or len(token) <= 3:
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


class SparseIndex:
    """Okapi BM25 keyed by the store's chunk ids."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._terms: dict[str, int] = {}
        self._docs: list[array] = []  # per term id: chunk ids
        self._freqs: list[array] = []  # per term id: term frequency in that chunk
        self._lengths = np.zeros(0, dtype=np.float32)  # by chunk id; 0 = absent or removed
        self._live = 0
        self._total_length = 0.0
        self._dead_postings = 0
        self._postings = 0

    def __len__(self) -> int:
        return self._live

    def ids(self) -> np.ndarray:
        return np.flatnonzero(self._lengths > 0)

    def add(self, ids, texts: list[str]) -> None:
        for chunk_id, text in zip(np.asarray(ids, dtype=np.int64).tolist(), texts, strict=False):
            self.add_tokens(chunk_id, tokenize(text))

    def add_tokens(self, chunk_id: int, tokens: list[str]) -> None:
        if chunk_id < len(self._lengths) and self._lengths[chunk_id] > 0:
            raise ValueError(f"chunk id {chunk_id} is already in the sparse index")
        self._grow(chunk_id + 1)
        # an empty chunk still counts as present, with the smallest length
        length = max(len(tokens), 1)
        self._lengths[chunk_id] = length
        self._live += 1
        self._total_length += length
        for term, freq in Counter(tokens).items():
            term_id = self._terms.get(term)
            if term_id is None:
                term_id = self._terms[term] = len(self._docs)
                self._docs.append(array("q"))
                self._freqs.append(array("f"))
            self._docs[term_id].append(chunk_id)
            self._freqs[term_id].append(freq)
            self._postings += 1

    def remove(self, ids) -> None:
        for chunk_id in np.asarray(ids, dtype=np.int64).tolist():
            if chunk_id < len(self._lengths) and self._lengths[chunk_id] > 0:
                self._total_length -= float(self._lengths[chunk_id])
                self._lengths[chunk_id] = 0
                self._live -= 1
                self._dead_postings += 1  # estimate; exact count is found on compaction
        if self._dead_postings > 0.25 * max(self._postings, 1):
            self.compact()

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_tokens(tokenize(query), k)

    def search_tokens(self, tokens: list[str], k: int) -> list[tuple[int, float]]:
        if self._live == 0 or k < 1:
            return []
        average = self._total_length / self._live
        scores = np.zeros(len(self._lengths), dtype=np.float32)
        touched = False
        for term, query_freq in Counter(tokens).items():
            term_id = self._terms.get(term)
            if term_id is None:
                continue
            docs = np.frombuffer(self._docs[term_id], dtype=np.int64)
            freqs = np.frombuffer(self._freqs[term_id], dtype=np.float32)
            lengths = self._lengths[docs]
            alive = lengths > 0
            df = int(alive.sum())
            if df == 0:
                continue
            idf = np.log(1.0 + (self._live - df + 0.5) / (df + 0.5))
            norm = self.k1 * (1.0 - self.b + self.b * lengths / average)
            weight = idf * freqs * (self.k1 + 1.0) / (freqs + norm)
            scores[docs] += np.where(alive, weight, 0.0).astype(np.float32) * query_freq
            touched = True
        if not touched:
            return []
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(int(i), float(scores[i])) for i in order]

    def compact(self) -> None:
        """Drop postings of removed chunks and terms no live chunk uses."""
        terms, docs_out, freqs_out = {}, [], []
        postings = 0
        for term, term_id in self._terms.items():
            docs = np.frombuffer(self._docs[term_id], dtype=np.int64)
            keep = self._lengths[docs] > 0
            if not keep.any():
                continue
            terms[term] = len(docs_out)
            docs_out.append(array("q", docs[keep].tobytes()))
            freqs_out.append(array("f", np.frombuffer(self._freqs[term_id], dtype=np.float32)[keep].tobytes()))
            postings += int(keep.sum())
        self._terms, self._docs, self._freqs = terms, docs_out, freqs_out
        self._postings, self._dead_postings = postings, 0

    def save(self, folder: Path) -> None:
        """Two files: sparse.json (parameters, vocabulary) and sparse.npz (postings, lengths)."""
        self.compact()
        folder = Path(folder)
        vocabulary = sorted(self._terms, key=self._terms.get)
        counts = np.array([len(self._docs[self._terms[t]]) for t in vocabulary], dtype=np.int64)
        docs = np.concatenate([np.frombuffer(self._docs[self._terms[t]], dtype=np.int64) for t in vocabulary]) \
            if vocabulary else np.zeros(0, dtype=np.int64)
        freqs = np.concatenate([np.frombuffer(self._freqs[self._terms[t]], dtype=np.float32) for t in vocabulary]) \
            if vocabulary else np.zeros(0, dtype=np.float32)
        np.savez(folder / "sparse.npz", counts=counts, docs=docs, freqs=freqs, lengths=self._lengths)
        meta = {"k1": self.k1, "b": self.b, "tokenizer": TOKENIZER, "terms": vocabulary}
        (folder / "sparse.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        folder = Path(folder)
        meta = json.loads((folder / "sparse.json").read_text(encoding="utf-8"))
        arrays = np.load(folder / "sparse.npz")
        index = cls(meta["k1"], meta["b"])
        index._lengths = arrays["lengths"].astype(np.float32)
        offsets = np.concatenate([[0], np.cumsum(arrays["counts"])])
        docs, freqs = arrays["docs"], arrays["freqs"]
        for term_id, term in enumerate(meta["terms"]):
            index._terms[term] = term_id
            index._docs.append(array("q", docs[offsets[term_id] : offsets[term_id + 1]].tobytes()))
            index._freqs.append(array("f", freqs[offsets[term_id] : offsets[term_id + 1]].tobytes()))
        index._live = int((index._lengths > 0).sum())
        index._total_length = float(index._lengths.sum())
        index._postings = int(len(docs))
        return index

    @staticmethod
    def exists(folder: Path) -> bool:
        """True when folder holds a sparse index made with this tokenizer."""
        meta = Path(folder) / "sparse.json"
        if not meta.is_file() or not (Path(folder) / "sparse.npz").is_file():
            return False
        return json.loads(meta.read_text(encoding="utf-8")).get("tokenizer") == TOKENIZER

    def _grow(self, size: int) -> None:
        if size > len(self._lengths):
            grown = np.zeros(max(size, 2 * len(self._lengths), 1024), dtype=np.float32)
            grown[: len(self._lengths)] = self._lengths
            self._lengths = grown
