"""Load on `ragglm serve` over loopback: N requests, C at a time, with the official openai client.

Starts the server as a subprocess on a free 127.0.0.1 port, sends a sequential warm-up series (the
peer: one request at a time, i.e. the service time), then the concurrent load, and prints one JSON
line: failures, p50/p95 latency, throughput, and the p50 ratio to the sequential series. Stops by
itself after --deadline-s whatever happens.

    python benchmarks/server_load.py --requests 200 --concurrency 8

--soak instead sends distinct prompts (1,000 unless --requests says) to the plain model, C at a
time, and reports the failures and the server's resident memory after the first 100 and at the end:
memory that keeps growing with distinct prompts is a leak, or a cache without a bound.

    python benchmarks/server_load.py --soak --concurrency 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How long does the AquaPure W3 filter last?",
    "How do I reset the R7 router to factory settings?",
    "How many devices can connect to the R7 at once?",
    "What is the default address of the router admin page?",
    "What does a solid red status light on the router mean?",
    "What water pressure does the AquaPure W3 need?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="[default: 200, or 1000 with --soak]")
    parser.add_argument("--soak", action="store_true", help="distinct prompts to the plain model; RSS over time")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=12, help="requests in the one-at-a-time series")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--docs", default=str(REPO / "examples" / "manuals"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--deadline-s", type=float, default=1800.0)
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 1000 if args.soak else 200

    started = time.monotonic()
    deadline = started + args.deadline_s
    port = _free_port()
    server = _start_server(args, port)
    try:
        startup_s = _wait_until_healthy(server, port, deadline)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="load-test",
                               max_retries=0, timeout=max(60.0, args.deadline_s))
        if args.soak:
            report = _soak(args, client, server.pid, deadline)
            report.update(server_startup_s=_round(startup_s), wall_s=_round(time.monotonic() - started))
            print(json.dumps(report))
            return

        def one(index: int) -> float:
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed before this request was sent")
            messages = [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]
            sent = time.perf_counter()
            if index % 4 == 3:  # every fourth request streams
                chunks = list(client.chat.completions.create(model="ragglm", messages=messages,
                                                             max_tokens=args.max_tokens, stream=True))
                if not any(c.choices and c.choices[0].finish_reason for c in chunks):
                    raise RuntimeError("stream ended without a finish_reason")
            else:
                completion = client.chat.completions.create(model="ragglm", messages=messages,
                                                            max_tokens=args.max_tokens)
                if completion.choices[0].message.content is None:
                    raise RuntimeError("empty completion")
            return time.perf_counter() - sent

        sequential = [one(i) for i in range(args.sequential)]
        failures, errors, latencies = 0, [], []
        load_started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(one, i) for i in range(args.requests)]
            for future in concurrent.futures.as_completed(futures):
                try:
                    latencies.append(future.result())
                except Exception as exc:  # counted and reported, never raised
                    failures += 1
                    if len(errors) < 3:
                        errors.append(f"{exc.__class__.__name__}: {exc}"[:200])
        load_s = time.perf_counter() - load_started
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    seq_p50 = statistics.median(sequential)
    p50 = statistics.median(latencies) if latencies else None
    print(json.dumps({
        "benchmark": "server_load", "model": args.model, "max_tokens": args.max_tokens, "top_k": args.top_k,
        "requests": args.requests, "concurrency": args.concurrency, "completed": len(latencies),
        "failures": failures, "errors": errors,
        "p50_s": _round(p50), "p95_s": _round(_percentile(latencies, 95)), "max_s": _round(max(latencies, default=None)),
        "throughput_rps": _round(len(latencies) / load_s if load_s else None),
        "sequential_p50_s": _round(seq_p50), "p50_vs_sequential": _round(p50 / seq_p50 if p50 else None),
        "server_startup_s": _round(startup_s), "wall_s": _round(time.monotonic() - started),
    }))


def _start_server(args, port: int) -> subprocess.Popen:
    env = {**os.environ, "RAGGLM_API_KEY": "load-test", "RAGGLM_TOP_K": str(args.top_k),
           "RAGGLM_MODEL": args.model}
    docs = [] if args.soak else ["--docs", args.docs]  # the soak asks the plain model only
    return subprocess.Popen(
        [sys.executable, "-c", "from ragglm.cli import main; main()", "serve", *docs,
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--max-pending", str(max(64, args.concurrency * 2))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _soak(args, client: openai.OpenAI, pid: int, deadline: float) -> dict:
    """args.requests distinct prompts, args.concurrency at a time; RSS sampled every 100 answers."""
    def one(index: int) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError("deadline passed before this request was sent")
        completion = client.chat.completions.create(
            model=args.model, max_tokens=args.max_tokens,
            messages=[{"role": "user", "content": _distinct_prompt(index)}])
        if completion.choices[0].message.content is None:
            raise RuntimeError("empty completion")

    failures, errors, rss_mb = 0, [], {}
    load_started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(args.requests)]
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            try:
                future.result()
            except Exception as exc:  # counted and reported, never raised
                failures += 1
                if len(errors) < 3:
                    errors.append(f"{exc.__class__.__name__}: {exc}"[:200])
            if done % 100 == 0 or done == args.requests:
                rss_mb[done] = _rss_mb(pid)
    load_s = time.perf_counter() - load_started
    first, last = rss_mb.get(min(100, args.requests)), rss_mb.get(args.requests)
    return {
        "benchmark": "server_soak", "model": args.model, "max_tokens": args.max_tokens,
        "requests": args.requests, "concurrency": args.concurrency, "failures": failures, "errors": errors,
        "rss_mb_after_100": first, "rss_mb_end": last,
        "rss_end_vs_after_100": _round(last / first if first and last else None),
        "rss_mb_every_100": rss_mb, "throughput_rps": _round(args.requests / load_s if load_s else None),
        "prefix_cache_mb": os.environ.get("RAGGLM_PREFIX_CACHE_MB", "default"),
    }


def _distinct_prompt(index: int) -> str:
    # each prompt differs early on, so no two share a long cached prefix
    colours = ["red", "green", "blue", "amber", "violet", "teal", "grey"]
    return f"Request {index}: write one short sentence about the number {index * 7919 % 10007} " \
           f"and the colour {colours[index % len(colours)]}."


def _rss_mb(pid: int) -> float | None:
    """The process's resident memory in MiB (Linux), None where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _wait_until_healthy(server: subprocess.Popen, port: int, deadline: float) -> float:
    started = time.monotonic()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("the server did not become healthy before the deadline")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _round(value):
    return None if value is None else round(value, 4)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
