"""How long `ragglm ask` takes in a new process, against importing torch and sentence-transformers.

A question answered by extract needs the embedder (torch and sentence-transformers) and the saved
index, nothing more: its floor is that import. Each round runs every command once, in turn, so the
machine's load falls alike on all of them; the figures are medians over rounds and the ratio is the
median of each round's own ratio (goal: at most 2). Bad input and --help should take well under
a second: they import neither. The knowledge base is built once from examples/manuals in a
temporary folder. Prints one JSON line.

    python benchmarks/cli_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAGGLM = [sys.executable, "-m", "ragglm.cli"]
QUESTION = "What does error code E2 mean?"
GOAL_RATIO = 2.0


def commands(kb: Path) -> dict[str, list[str]]:
    return {
        "ask_extractive": [*RAGGLM, "ask", "--kb", str(kb), "--mode", "extractive", "--no-stream", QUESTION],
        "ask_auto": [*RAGGLM, "ask", "--kb", str(kb), "--no-stream", QUESTION],
        "import_torch_st": [sys.executable, "-c", "import torch, sentence_transformers"],
        "bad_input": [*RAGGLM, "ask", "--docs", "nowhere", "x"],
        "help": [*RAGGLM, "--help"],
    }


def clean_env(folder: Path) -> dict:
    """No settings from the user's files or RAGGLM_* variables; caches in the temporary folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGGLM_") or k == "RAGGLM_SHARED_DATA"}
    env.update(XDG_CONFIG_HOME=str(folder / "xdg"), RAGGLM_CACHE_DIR=str(folder / "cache"))
    return env


def run_seconds(command: list[str], env: dict, cwd: Path, expected: set[int]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode not in expected:
        raise SystemExit(f"{' '.join(command[2:])}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds


def build_kb(folder: Path, env: dict) -> Path:
    kb = folder / "kb"
    run_seconds([*RAGGLM, "index", str(REPO / "examples" / "manuals"), "--kb", str(kb)], env, folder, {0})
    return kb


def measure(rounds: int, folder: Path) -> dict[str, list[float]]:
    env = clean_env(folder)
    runs = commands(build_kb(folder, env))
    expected = {"bad_input": {1}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, command in runs.items():  # warm-up: files into the page cache, bytecode compiled
        run_seconds(command, env, folder, expected.get(name, {0}))
    for _ in range(rounds):
        for name, command in runs.items():
            times[name].append(run_seconds(command, env, folder, expected.get(name, {0})))
    return times


def summary(times: dict[str, list[float]]) -> dict:
    floor = times["import_torch_st"]
    report = {"rounds": len(floor)}
    report.update({f"{name}_s": round(statistics.median(values), 3) for name, values in times.items()})
    for mode in ("extractive", "auto"):
        ratios = [ask / base for ask, base in zip(times[f"ask_{mode}"], floor, strict=True)]
        report[f"ratio_{mode}"] = round(statistics.median(ratios), 2)
    report["goal_ratio"] = GOAL_RATIO
    report["within_goal"] = report["ratio_extractive"] <= GOAL_RATIO and report["ratio_auto"] <= GOAL_RATIO
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragglm-cli-speed-") as tmp:
        times = measure(args.rounds, Path(tmp))
    print(json.dumps(summary(times)))


if __name__ == "__main__":
    main()
