"""Fuzz every connector and the text pipeline with seeded hostile inputs; one JSON line of figures.

Each input is parsed as `KnowledgeBase.add` parses it (PDF, DOCX and images in parser processes with
their time and memory bounds, the rest in this process) and its text chunked. A crash is an exception that
escapes as anything but a per-file SourceError; over budget is a file that took longer than the
parse budget plus a margin.

    python benchmarks/fuzz_connectors.py --count 5000 --seed 0
    python benchmarks/fuzz_connectors.py --count 500 --kinds damaged_image image_bomb odd_image misnamed_image
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter

from fuzz_inputs import inputs

from ragglm.connectors.image import IMAGE_SUFFIXES
from ragglm.connectors.parallel import ParseJob, parse_budget_s, parse_in_order
from ragglm.documents import Document
from ragglm.errors import SourceError
from ragglm.text.chunker import Chunker

HEAVY = (".pdf", ".docx", *IMAGE_SUFFIXES)  # read in parser processes, as KnowledgeBase.add reads them


def run(seed: int, count: int, workers: int, kinds: list[str] | None = None) -> dict:
    chunker = Chunker()
    outcomes: Counter = Counter()
    crashes: list[str] = []
    slowest = (0.0, "")
    started = time.perf_counter()
    batch = list(inputs(seed, count, kinds))
    for heavy in (True, False):
        jobs = [ParseJob(name, data) for _, name, data in batch if name.endswith(HEAVY) == heavy]
        clock = time.perf_counter()
        try:
            for job, result in parse_in_order(iter(jobs), workers if heavy else 0):
                took = time.perf_counter() - clock
                try:
                    if isinstance(result, Document):
                        chunker.split(result)
                        outcomes["read"] += 1
                    elif isinstance(result, SourceError):
                        outcomes["clean_error"] += 1
                        outcomes["timed_out"] += "took more than" in str(result)  # stopped at the budget
                    else:
                        crashes.append(f"{job.source}: {type(result).__name__}")
                except Exception as exc:  # noqa: BLE001 - counted: this is what the benchmark looks for
                    crashes.append(f"{job.source}: chunker {type(exc).__name__}: {exc}")
                took = time.perf_counter() - clock
                slowest = max(slowest, (took, job.source))
                clock = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - a crash of the whole run
            crashes.append(f"run: {type(exc).__name__}: {exc}")
    budget = parse_budget_s()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "benchmark": "fuzz_connectors", "seed": seed, "inputs": count, "kinds": dict(Counter(k for k, *_ in batch)),
        "read": outcomes["read"], "clean_errors": outcomes["clean_error"], "timed_out": outcomes["timed_out"],
        "crashes": len(crashes),
        "crash_examples": crashes[:5], "parse_budget_s": budget,
        "slowest_s": round(slowest[0], 2), "slowest_input": os.path.basename(slowest[1]),
        "over_budget": int(slowest[0] > budget + 5), "total_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_parser_process": round(children),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kinds", nargs="*", help="only these kinds of input (see fuzz_inputs.KINDS)")
    args = parser.parse_args()
    print(json.dumps(run(args.seed, args.count, args.workers, args.kinds)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
