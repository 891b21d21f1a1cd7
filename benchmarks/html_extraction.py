"""Main-content extraction on the article extraction benchmark (181 real pages with ground truth).

Prints one JSON line. Each extractor is scored with the benchmark's own evaluate.py (4-gram
shingle F1, precision and recall, averaged over pages), loaded from the data folder in place:

- shipped: connectors.web.load_html on the page bytes (charset decoding, trafilatura with the
  tag filter as fallback), the text indexed; shipped_body is the same without the "# title" line
  load_html puts first, which the ground truth leaves out;
- trafilatura: trafilatura.extract with its defaults, alone;
- tag_filter: connectors.web.tag_filter_text, the reader used before trafilatura, alone.

empty counts pages that gave no text; seconds is the time for all pages.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
import time
from pathlib import Path

from shared_data import shared_data_dir


def _scorer(folder: Path):
    spec = importlib.util.spec_from_file_location("article_benchmark_evaluate", folder / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score(scorer, truth: dict, predicted: dict[str, str], seconds: float) -> dict:
    counts = [scorer.string_shingle_matching(true=truth[key].get("articleBody", ""), pred=predicted[key])
              for key in truth]
    metrics = scorer.metrics_from_tp_fp_fns(counts)
    return {**{name: round(value, 4) for name, value in metrics.items()},
            "empty": sum(not text.strip() for text in predicted.values()), "seconds": round(seconds, 1)}


def _run(extract, pages: dict[str, bytes]) -> tuple[dict[str, str], float]:
    started = time.perf_counter()
    predicted = {key: extract(key, data) for key, data in pages.items()}
    return predicted, time.perf_counter() - started


def main() -> None:
    import logging

    import trafilatura

    from ragglm.connectors.web import load_html, tag_filter_text

    folder = shared_data_dir(required=True) / "article_extraction_benchmark"
    if not (folder / "evaluate.py").is_file():
        sys.exit(f"{folder}: the article extraction benchmark is absent")
    scorer = _scorer(folder)
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = {key: gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes()) for key in truth}
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

    def shipped(key: str, data: bytes) -> str:
        return load_html(f"{key}.html", data, "text/html").pages[0].text

    def body(text: str) -> str:
        first, _, rest = text.partition("\n\n")
        return rest if first.startswith("# ") and "\n" not in first else text

    results = {"pages": len(pages)}
    predicted, seconds = _run(shipped, pages)
    results["shipped"] = _score(scorer, truth, predicted, seconds)
    results["shipped_body"] = _score(scorer, truth, {k: body(v) for k, v in predicted.items()}, seconds)
    predicted, seconds = _run(lambda key, data: trafilatura.extract(data.decode("utf-8")) or "", pages)
    results["trafilatura"] = _score(scorer, truth, predicted, seconds)
    predicted, seconds = _run(lambda key, data: tag_filter_text(data.decode("utf-8"))[1], pages)
    results["tag_filter"] = _score(scorer, truth, predicted, seconds)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
