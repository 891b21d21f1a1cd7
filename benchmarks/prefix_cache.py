"""Time to first token with and without the prefix cache, on a stuffed document context.

The context is the example manuals (whole documents, every page) plus SQuAD passages from the shared
data folder, until the prompt reaches --context-tokens; the prompt is built by the answering pipeline
(system prompt, numbered sources in a stable order, then the question). Measured with SmolLM2 on CPU:

- first question, empty cache (and the same question with the cache switched off: the peer);
- a second, different question in the same process;
- a third question in a new process that finds the context's KV in the disk cache.

Each process warms up on a short unrelated prompt first, so the figures compare prefill work rather
than one-time start-up costs. Prints one JSON line.
Usage: python benchmarks/prefix_cache.py [--context-tokens 2000] [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from shared_data import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = (
    "How long does the filter of the AquaPure W3 last?",
    "What should I do when the R7 router keeps dropping the Wi-Fi connection?",
    "How do I reset the SmartLock S2 to factory settings?",
)


def context_hits(engine, context_tokens: int) -> list:
    """Whole manual pages, then SQuAD paragraphs, until the prompt holds context_tokens tokens."""
    from ragglm.connectors import load_file
    from ragglm.documents import Chunk, Hit

    hits = []
    for path in sorted((REPO / "examples" / "manuals").iterdir()):
        document = load_file(path)
        for page in document.pages:
            hits.append(Hit(Chunk(page.text, str(path.relative_to(REPO)), page.number, 0, len(page.text)), 1.0))
    data = shared_data_dir()
    paragraphs = []
    if data is not None and (data / "squad2_dev_articles1-8.json").is_file():
        articles = json.loads((data / "squad2_dev_articles1-8.json").read_text(encoding="utf-8"))["data"]
        paragraphs = [(article["title"], p["context"]) for article in articles for p in article["paragraphs"]]
    for title, text in paragraphs:
        if len(prompt_ids(engine, QUESTIONS[0], hits)) >= context_tokens:
            break
        hits.append(Hit(Chunk(text, f"squad2/{title}", None, 0, len(text)), 1.0))
    return hits


def prompt_ids(engine, question: str, hits: list) -> list[int]:
    from ragglm.pipelines.prompts import build_messages

    return engine.chat_ids(build_messages(question, hits, "en"))


def timed(engine, ids: list[int], use_cache: bool = True, max_new_tokens: int = 8) -> dict:
    result = engine.generate(ids, max_new_tokens=max_new_tokens, use_prefix_cache=use_cache)
    return {"ttft_s": round(result.ttft_s, 4), "cached_tokens": result.cached_tokens,
            "prompt_tokens": result.prompt_tokens, "token_ids": result.token_ids}


def load_engine(model: str, cache_dir: str):
    from ragglm.engine import Engine

    engine = Engine.from_pretrained(model, cache_dir=cache_dir)
    engine.generate(engine.tokenizer.encode("Warm up the kernels."), max_new_tokens=2, use_prefix_cache=False)
    return engine


def child(args) -> None:
    """The new process: load the model, ask one question over the same context, report timings."""
    started = time.perf_counter()
    engine = load_engine(args.model, args.cache_dir)
    load_s = time.perf_counter() - started
    hits = context_hits(engine, args.context_tokens)
    ids = prompt_ids(engine, QUESTIONS[2], hits)
    found = engine.cached_prefix_length(ids)
    with_disk = timed(engine, ids)
    without = timed(engine, ids, use_cache=False)
    print(json.dumps({"load_s": round(load_s, 3), "cached_prefix_length": found, "with_disk": with_disk,
                      "without_cache": without}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--context-tokens", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="ragglm-kv-bench-") as cache_dir:
        args.cache_dir = cache_dir
        engine = load_engine(args.model, cache_dir)
        hits = context_hits(engine, args.context_tokens)
        first_ids, second_ids = (prompt_ids(engine, q, hits) for q in QUESTIONS[:2])
        shared = next(i for i, (a, b) in enumerate(zip(first_ids, second_ids, strict=False)) if a != b)
        first_nocache = timed(engine, first_ids, use_cache=False)
        first = timed(engine, first_ids)
        second_nocache = timed(engine, second_ids, use_cache=False)
        second = timed(engine, second_ids)
        engine.prefix_cache.flush()  # the disk files must be complete before the next process looks
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--cache-dir", cache_dir,
                   "--model", args.model, "--context-tokens", str(args.context_tokens)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        other = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        disk_bytes = sum(p.stat().st_size for p in Path(cache_dir).rglob("*.kv"))
    new_process = other["with_disk"]
    print(json.dumps({
        "benchmark": "prefix_cache",
        "model": args.model,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "context_tokens": len(first_ids),
        "shared_prefix_tokens": shared,
        "first_ttft_s": first["ttft_s"],
        "first_ttft_nocache_s": first_nocache["ttft_s"],
        "second_ttft_s": second["ttft_s"],
        "second_ttft_nocache_s": second_nocache["ttft_s"],
        "second_cached_tokens": second["cached_tokens"],
        "second_vs_first": round(second["ttft_s"] / first["ttft_s"], 4),
        "second_speedup_vs_nocache": round(second_nocache["ttft_s"] / second["ttft_s"], 2),
        "new_process_ttft_s": new_process["ttft_s"],
        "new_process_ttft_nocache_s": other["without_cache"]["ttft_s"],
        "new_process_cached_tokens": new_process["cached_tokens"],
        "new_process_cached_prefix_length": other["cached_prefix_length"],
        "new_process_vs_first": round(new_process["ttft_s"] / first["ttft_s"], 4),
        "disk_cache_mb": round(disk_bytes / 2**20, 1),
        "memory_cache_mb": round(engine.prefix_cache.used_bytes / 2**20, 1),
        "greedy_equal": first["token_ids"] == first_nocache["token_ids"]
        and second["token_ids"] == second_nocache["token_ids"]
        and new_process["token_ids"] == other["without_cache"]["token_ids"],
        "goal": "second_vs_first <= 0.15 and new_process_vs_first <= 0.15",
        "goal_met": second["ttft_s"] <= 0.15 * first["ttft_s"] and new_process["ttft_s"] <= 0.15 * first["ttft_s"],
    }))


if __name__ == "__main__":
    main()
