"""Retrieval recall@5 on CMRC 2018 (zh) and SQuAD 2.0 (en): ragglm vs the usual stacks, one run.

Scoring (shared data README): every paragraph is one document; a question is a hit when one of
the top-k chunks comes from its own paragraph and contains a gold answer string. Also reported:
the mean characters of retrieved context at k. Dense weights were tuned on even-numbered
paragraphs only; "heldout" figures are the odd-numbered ones.

    python benchmarks/retrieval.py            # one JSON line
    python benchmarks/retrieval.py --sweep    # + recall by dense weight and chunk budget (tuning)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from shared_data import shared_data_dir

from ragglm.documents import Document, Page
from ragglm.index.embedder import Embedder
from ragglm.index.fusion import dense_weight, fuse_scores, reciprocal_rank_fusion
from ragglm.index.sparse import SparseIndex
from ragglm.index.store import CANDIDATES, IndexStore
from ragglm.text.chunker import Chunker
from ragglm.text.language import detect_language

SETS = {"cmrc2018": "cmrc2018_trial.json", "squad2": "squad2_dev_articles1-8.json"}
K = 5


def load_squad(path: Path):
    """[(paragraph id, context)], [(question, paragraph id, [answers])]; unanswerable ones dropped."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs, questions = [], []
    for article in data:
        for paragraph in article["paragraphs"]:
            pid = f"p{len(paragraphs)}"
            paragraphs.append((pid, paragraph["context"]))
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa.get("answers", []) if a["text"].strip()]
                if answers and not qa.get("is_impossible", False):
                    questions.append((qa["question"], pid, answers))
    return paragraphs, questions


def score(rankings: list[list], chunk_source: list[str], chunk_text: list[str], questions) -> dict:
    hits, chars = [], []
    for ranking, (_, pid, answers) in zip(rankings, questions, strict=False):
        top = [i for i, _ in ranking[:K]]
        hits.append(any(chunk_source[i] == pid and any(a in chunk_text[i] for a in answers) for i in top))
        chars.append(sum(len(chunk_text[i]) for i in top))
    return {"hits": hits, "chars": chars}


def summarise(result: dict, questions) -> dict:
    hits = np.array(result["hits"])
    heldout = np.array([int(pid[1:]) % 2 == 1 for _, pid, _ in questions])
    return {"recall@5": round(100 * hits.mean(), 2), "recall@5_heldout": round(100 * hits[heldout].mean(), 2),
            "mean_context_chars": round(float(np.mean(result["chars"])), 1)}


class SplitterCorpus:
    """LangChain RecursiveCharacterTextSplitter(300) chunks with FAISS/MiniLM and BM25-jieba."""

    def __init__(self, paragraphs, embedder: Embedder):
        from langchain_community.vectorstores import FAISS
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from ragglm.index.langchain_store import EmbedderEmbeddings

        splitter = RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=30)
        self.texts, self.sources = [], []
        for pid, context in paragraphs:
            for piece in splitter.split_text(context):
                self.texts.append(piece)
                self.sources.append(pid)
        self.faiss = FAISS.from_texts(self.texts, EmbedderEmbeddings(embedder),
                                      metadatas=[{"i": i} for i in range(len(self.texts))])
        self.bm25 = SparseIndex()
        self.bm25.add(np.arange(len(self.texts)), self.texts)

    def dense(self, vector: np.ndarray, depth: int) -> list[tuple[int, float]]:
        pairs = self.faiss.similarity_search_with_score_by_vector(vector.tolist(), k=depth)
        return [(d.metadata["i"], -float(s)) for d, s in pairs]  # FAISS gives L2 distance


def evaluate_set(name: str, path: Path, embedder: Embedder, sweep: bool) -> dict:
    paragraphs, questions = load_squad(path)
    out: dict = {"paragraphs": len(paragraphs), "questions": len(questions)}

    # ragglm default: the product path, IndexStore.search
    started = time.perf_counter()
    store = IndexStore(embedder)
    chunker = Chunker()
    for pid, context in paragraphs:
        store.add(pid, pid, chunker.split(Document(pid, [Page(None, context)])))
    build_s = time.perf_counter() - started
    ids = sorted(store.chunks)
    position = {chunk_id: n for n, chunk_id in enumerate(ids)}
    by_span = {_span(store.chunks[i]): n for n, i in enumerate(ids)}
    sources = [store.chunks[i].source for i in ids]
    texts = [store.chunks[i].text for i in ids]

    # rankings computed once (query vectors in one batch), then fused exactly as IndexStore.search
    query_vectors = embedder.embed([q for q, _, _ in questions], batch_size=128)
    lexical = [[(position[i], s) for i, s in store.sparse.search(q, CANDIDATES)] for q, _, _ in questions]
    dense = [[(position[i], s) for i, s in store.dense.search(v, CANDIDATES)] for v in query_vectors]
    weights = [dense_weight(embedder.name, detect_language(q)) for q, _, _ in questions]
    default = [fuse_scores(a, b, w, K) for a, b, w in zip(lexical, dense, weights, strict=True)]
    # the product path must give the same rankings: checked on a sample, which also times it
    started = time.perf_counter()
    sample = range(0, len(questions), max(1, len(questions) // 100))
    for n in sample:
        product = [by_span[_span(h.chunk)] for h in store.search(questions[n][0], K)]
        assert product == [i for i, _ in default[n]], f"store.search differs on {questions[n][0]!r}"
    query_ms = 1000 * (time.perf_counter() - started) / len(sample)
    out["ragglm"] = summarise(score(default, sources, texts, questions), questions)
    out["ragglm"].update(chunks=len(ids), build_s=round(build_s, 1), query_ms=round(query_ms, 1),
                         dense_weight=sorted(set(weights)))

    # ablations on ragglm chunks
    out["ragglm_chunks_bm25"] = summarise(score(lexical, sources, texts, questions), questions)
    out["ragglm_chunks_dense"] = summarise(score(dense, sources, texts, questions), questions)
    out["ragglm_chunks_rrf"] = summarise(score(
        [reciprocal_rank_fusion([a, b], K) for a, b in zip(lexical, dense, strict=False)], sources, texts, questions), questions)
    if sweep:
        out["sweep_dense_weight"] = {
            str(w): summarise(score([fuse_scores(a, b, w, K) for a, b in zip(lexical, dense, strict=False)],
                                    sources, texts, questions), questions)
            for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}

    # baselines on 300-character splitter chunks
    corpus = SplitterCorpus(paragraphs, embedder)
    base_dense = [corpus.dense(v, CANDIDATES) for v in query_vectors]
    base_lexical = [corpus.bm25.search(q, CANDIDATES) for q, _, _ in questions]
    out["langchain_faiss_minilm"] = summarise(score(base_dense, corpus.sources, corpus.texts, questions), questions)
    out["bm25_jieba"] = summarise(score(base_lexical, corpus.sources, corpus.texts, questions), questions)
    out["naive_rrf"] = summarise(score([reciprocal_rank_fusion([a, b], K) for a, b in zip(base_lexical, base_dense, strict=False)],
                                       corpus.sources, corpus.texts, questions), questions)
    best = max(out[b]["recall@5"] for b in ("langchain_faiss_minilm", "bm25_jieba", "naive_rrf"))
    out["margin_over_best_baseline"] = round(out["ragglm"]["recall@5"] - best, 2)
    return out


def _span(chunk) -> tuple:
    return chunk.source, chunk.page, chunk.start, chunk.end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--sweep", action="store_true", help="also report recall by dense weight")
    args = parser.parse_args()
    data = shared_data_dir(required=True)
    embedder = Embedder(args.embedder)
    result = {"benchmark": "retrieval", "k": K, "embedder": args.embedder,
              "chunker": {"max_tokens": Chunker().max_tokens, "overlap_sentences": Chunker().overlap_sentences}}
    for name, file in SETS.items():
        result[name] = evaluate_set(name, data / file, embedder, args.sweep)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
