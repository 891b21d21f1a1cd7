"""Index build time, query latency (p50/p95) and memory at 10^4-10^6 chunks.

Chunks are ~80-token pieces drawn from the sentences of the shared Chinese and English sets
(half each), so vocabulary and lengths are real. Queries are real CMRC 2018 and SQuAD 2.0
questions, answered through IndexStore.search (BM25 + FAISS + fusion).

    python benchmarks/retrieval_scale.py --chunks 10000
    flock /tmp/ragglm-bigmem.lock python benchmarks/retrieval_scale.py --chunks 1000000 --vectors random

--vectors random replaces the embedding model by random unit vectors (same dimension) so the
index side can be measured where embedding a million chunks on a laptop CPU would take hours;
the embedding throughput measured at smaller sizes gives that part of the build time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import load_squad, shared_data_dir  # noqa: E402

from ragglm.documents import Chunk  # noqa: E402
from ragglm.index.embedder import Embedder  # noqa: E402
from ragglm.index.store import IndexStore  # noqa: E402
from ragglm.text.sentences import split_sentences  # noqa: E402

BATCH = 2000  # chunks per source added at once


class RandomEmbedder:
    """Stands in for the model when only the index side is measured."""

    def __init__(self, name: str, dimension: int):
        self.name, self.dimension = name, dimension
        self._rng = np.random.default_rng(0)

    def embed(self, texts, batch_size=64, progress=False):
        vectors = self._rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sentence_pool(data: Path) -> dict[str, list[str]]:
    pools = {"zh": [], "en": []}
    for language, name in (("zh", "cmrc2018_trial.json"), ("en", "squad2_dev_articles1-8.json")):
        for _, context in load_squad(data / name)[0]:
            pools[language] += [context[s:e] for s, e in split_sentences(context)]
    for line in (data / "longbench_passage_retrieval_zh.jsonl").read_text(encoding="utf-8").splitlines():
        context = json.loads(line)["context"]
        pools["zh"] += [context[s:e] for s, e in split_sentences(context) if len(context[s:e]) > 8]
    return pools


def synthetic_chunks(pools, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    chunks = []
    for n in range(count):
        language = "zh" if n % 2 == 0 else "en"
        pool, target = pools[language], 130 if language == "zh" else 400  # ~80 jieba tokens
        pieces, size = [], 0
        while size < target:
            sentence = pool[int(rng.integers(len(pool)))]
            pieces.append(sentence)
            size += len(sentence)
        chunks.append(("" if language == "zh" else " ").join(pieces))
    return chunks


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--vectors", choices=["model", "random"], default="model")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    data = shared_data_dir()
    texts = synthetic_chunks(sentence_pool(data), args.chunks)
    model = Embedder()
    embedder = model if args.vectors == "model" else RandomEmbedder(model.name, model.dimension)
    baseline_rss = rss_mb()

    store = IndexStore(embedder)
    started = time.perf_counter()
    for first in range(0, len(texts), BATCH):
        batch = texts[first : first + BATCH]
        store.add(f"part-{first // BATCH}", str(first),
                  [Chunk(t, f"part-{first // BATCH}", None, 0, len(t)) for t in batch])
    build_s = time.perf_counter() - started

    # components, measured on a sample so the split of the build time is known
    sample = texts[:2000]
    started = time.perf_counter()
    model.embed(sample)
    embed_per_s = len(sample) / (time.perf_counter() - started)
    from ragglm.index.sparse import SparseIndex

    started = time.perf_counter()
    SparseIndex().add(np.arange(len(sample)), sample)
    sparse_per_s = len(sample) / (time.perf_counter() - started)

    zh = [q for q, _, _ in load_squad(data / "cmrc2018_trial.json")[1]][: args.queries // 2]
    en = [q for q, _, _ in load_squad(data / "squad2_dev_articles1-8.json")[1]][: args.queries // 2]
    latency = {}
    for language, queries in (("zh", zh), ("en", en)):
        store.search(queries[0], 5)  # warm caches
        times = []
        for query in queries:
            started = time.perf_counter()
            store.search(query, 5)
            times.append(1000 * (time.perf_counter() - started))
        latency[language] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                             "p95_ms": round(float(np.percentile(times, 95)), 2)}

    folder = Path(tempfile.mkdtemp(prefix="ragglm-scale-"))
    try:
        started = time.perf_counter()
        store.save(folder / "index")
        save_s = time.perf_counter() - started
        size_mb = sum(f.stat().st_size for f in (folder / "index").iterdir()) / 2**20
        started = time.perf_counter()
        IndexStore.load(folder / "index", embedder)
        load_s = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(json.dumps({
        "benchmark": "retrieval_scale", "chunks": len(store), "vectors": args.vectors,
        "dense_index": "ivf" if store.dense.approximate else "flat",
        "build_s": round(build_s, 1), "chunks_per_s": round(len(store) / build_s, 1),
        "embed_chunks_per_s": round(embed_per_s, 1), "bm25_chunks_per_s": round(sparse_per_s, 1),
        "query_latency": latency, "rss_mb": round(rss_mb(), 1),
        "index_rss_mb": round(rss_mb() - baseline_rss, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "save_s": round(save_s, 1), "load_s": round(load_s, 1), "folder_mb": round(size_mb, 1),
    }))


if __name__ == "__main__":
    main()
