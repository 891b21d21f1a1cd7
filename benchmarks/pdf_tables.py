"""PDF reading speed with and without the ruled-table search, on the shared vendor manuals; one JSON line.

Each PDF of ../shared/data/pdfs is read by load_pdf (OCR off: text layers only) twice in turn, with the
table search and with it turned off (no page laid out by pdfplumber), best of --repeat runs each.
Figures: pages/s both ways, their ratio, pages searched (those whose drawing shows a grid) and tables
found per file.

    python benchmarks/pdf_tables.py --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from shared_data import shared_data_dir

os.environ["RAGGLM_OCR"] = "never"

from ragglm.connectors import pdf_tables  # noqa: E402
from ragglm.connectors.pdf import load_pdf  # noqa: E402


def _timed(path, search: bool, repeat: int) -> tuple[float, object]:
    limit = pdf_tables.MAX_TABLE_PAGES
    pdf_tables.MAX_TABLE_PAGES = limit if search else 0
    try:
        best, document = float("inf"), None
        for _ in range(repeat):
            started = time.perf_counter()
            document = load_pdf(path)
            best = min(best, time.perf_counter() - started)
        return best, document
    finally:
        pdf_tables.MAX_TABLE_PAGES = limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    folder = shared_data_dir(required=True) / "pdfs"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    searched = {"calls": 0}
    find = pdf_tables.find_tables

    def counting(data, indices):
        searched["calls"] += len(indices)
        return find(data, indices)

    pdf_tables.find_tables = counting
    load = os.getloadavg()[0]
    pages = tables = 0
    with_s = without_s = 0.0
    per_file = {}
    for path in files:
        plain_s, _ = _timed(path, False, args.repeat)
        before = searched["calls"]
        table_s, document = _timed(path, True, args.repeat)
        found = document.metadata["tables"]
        pages += len(document.pages)
        tables += found
        with_s += table_s
        without_s += plain_s
        per_file[path.relative_to(folder).as_posix()] = {
            "pages": len(document.pages), "searched_pages": (searched["calls"] - before) // args.repeat,
            "tables": found, "s_with": round(table_s, 2), "s_without": round(plain_s, 2)}
    print(json.dumps({
        "benchmark": "pdf_tables", "files": len(files), "pages": pages, "tables": tables,
        "searched_pages": sum(f["searched_pages"] for f in per_file.values()),
        "pages_per_s_with_tables": round(pages / with_s, 1), "pages_per_s_without": round(pages / without_s, 1),
        "time_ratio": round(with_s / without_s, 2), "load_average_at_start": load,
        "per_file": per_file}, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
