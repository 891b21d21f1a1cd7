"""benchmarks/gpu_check.py --dry-run: the GPU check's own code, on CPU with tiny shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_prints_every_part_and_the_tiny_models_match_transformers():
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["dry_run"] and report["device"] == "cpu"
    assert report["tiny_passed"], report["tiny"]
    for family in ("glm", "llama"):
        assert set(report["tiny"][family]) == {"bf16", "int8", "int4"}
        assert report["tiny"][family]["bf16"]["greedy_equal"]
    for part in ("hf_bf16", "ours_bf16", "ours_int4"):
        assert "error" not in report[part], report[part]
        assert report[part]["prefill_tok_s"] and report[part]["decode_ms_per_token"] is not None
        assert "peak_gib" in report[part]
    assert set(report["ours_bf16"]["prefill_tok_s"]) == set(report["hf_bf16"]["prefill_tok_s"])
    cache = report["prefix_cache"]
    assert cache["cached_tokens"] == cache["context_tokens"]  # the whole shared context came from the cache
    assert cache["second_ttft_s"] > 0
