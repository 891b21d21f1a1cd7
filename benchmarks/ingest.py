"""Ingestion speed on the shared vendor PDFs: ragglm's reader and indexer beside plain pypdf.

Prints one JSON line. pypdf_* is PdfReader + decrypt("") + extract_text on every page in one process,
over the same files in the same run; ragglm_parse_* is connectors.load_many (decryption, cleanup,
header removal, parallel over the cores); index_* is KnowledgeBase.add into a fresh folder (parse,
chunk, embed with the default embedder, FAISS, save); chunks_embedded_per_s counts time inside the
embedder only; reindex_unchanged_s is a second add over the same folder.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def shared_pdfs() -> Path:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (os.environ.get("RAGGLM_SHARED_DATA"), repo.parent / "shared" / "data",
                      repo.parent.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate and (Path(candidate) / "pdfs").is_dir():
            return Path(candidate) / "pdfs"
    sys.exit("benchmarks/ingest.py: ../shared/data/pdfs is absent (set RAGGLM_SHARED_DATA)")


def plain_pypdf(files: list[Path]) -> tuple[int, float]:
    from pypdf import PdfReader

    started = time.perf_counter()
    pages = 0
    for file in files:
        reader = PdfReader(file)
        if reader.is_encrypted:
            reader.decrypt("")
        for page in reader.pages:
            page.extract_text()
            pages += 1
    return pages, time.perf_counter() - started


def main() -> None:
    from ragglm.connectors import load_many
    from ragglm.connectors.parallel import available_cores
    from ragglm.index import embedder as embedder_module
    from ragglm.knowledge_base import KnowledgeBase

    folder = shared_pdfs()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".pdf")

    pypdf_pages, pypdf_s = plain_pypdf(files)

    started = time.perf_counter()
    report = load_many([folder])
    parse_s = time.perf_counter() - started
    parse_pages = sum(len(d.pages) for d in report.documents)

    embed_time = [0.0]
    original = embedder_module.Embedder.embed

    def timed(self, texts, *args, **kwargs):
        began = time.perf_counter()
        try:
            return original(self, texts, *args, **kwargs)
        finally:
            embed_time[0] += time.perf_counter() - began

    embedder_module.Embedder.embed = timed
    with tempfile.TemporaryDirectory() as scratch:
        kb = KnowledgeBase(Path(scratch) / "kb")
        kb.search("warm up", 1)  # the embedder model loads outside the timed part
        embed_time[0] = 0.0
        started = time.perf_counter()
        ingest = kb.add([folder])
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        again = kb.add([folder])
        reindex_s = time.perf_counter() - started
    print(json.dumps({
        "benchmark": "ingest",
        "files": len(files),
        "pages": parse_pages,
        "cores": available_cores(),
        "pypdf_pages_per_s": round(pypdf_pages / pypdf_s, 1),
        "ragglm_parse_pages_per_s": round(parse_pages / parse_s, 1),
        "parse_speed_vs_pypdf": round((parse_pages / parse_s) / (pypdf_pages / pypdf_s), 2),
        "index_pages_per_s": round(ingest.pages / index_s, 1),
        "chunks": ingest.chunks,
        "chunks_embedded_per_s": round(ingest.chunks / embed_time[0], 1),
        "index_total_s": round(index_s, 2),
        "reindex_unchanged_s": round(reindex_s, 2),
        "reindex_unchanged_files": len(again.unchanged),
        "errors": len(report.errors) + len(ingest.errors),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
