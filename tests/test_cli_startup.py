"""The command line answers help, --version and bad arguments without importing torch, and a device
this machine lacks is one line and exit 3, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragglm.engine.loading.sources import DeviceError, check_device
from ragglm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ROUTER_FAQ = REPO / "examples" / "manuals" / "router-r7-faq.html"
HEAVY = ("torch", "sentence_transformers", "transformers")

# (arguments, expected exit code); every command's help and its argument errors
CASES = [
    (["--help"], 0), (["--version"], 0), ([], 2), (["bogus"], 2),  # no arguments: help, exit 2 (click)
    *[([command, "--help"], 0) for command in ("ask", "chat", "eval", "index", "search", "serve", "quantize")],
    (["ask"], 2), (["ask", "--top-k", "0", "--docs", "x", "q"], 2), (["ask", "--mode", "nope", "--docs", "x", "q"], 2),
    (["ask", "q"], 2), (["ask", "--docs", "nowhere", "x"], 1), (["chat", "--mode", "nope", "--docs", "x"], 2),
    (["eval"], 2), (["index"], 2), (["index", "x"], 2), (["search"], 2), (["search", "q"], 2),
    (["serve", "--port", "many"], 2), (["quantize"], 2), (["quantize", "src", "out", "--bogus"], 2),
]

# runs main() once per case in one process: torch stays imported once it is, so the first case
# that imports it is the one to blame
_PROBE = """
import io, json, sys, contextlib
from ragglm.cli import main
cases, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = []
for args in cases:
    sys.argv = ["ragglm", *args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    heavy = [name for name in watched if name in sys.modules]
    results.append({"args": args, "code": code, "heavy": heavy, "out": out.getvalue()[:200]})
print(json.dumps(results))
"""


def _clean_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGGLM_") or k == "RAGGLM_SHARED_DATA"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no user config file
    return env


def test_help_version_and_argument_errors_do_not_import_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([args for args, _ in CASES]), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for (args, expected), result in zip(CASES, results, strict=True):
        assert result["heavy"] == [], f"ragglm {' '.join(args)} imported {result['heavy']}"
        assert result["code"] == expected, f"ragglm {' '.join(args)}: exit {result['code']}, not {expected}"


def test_version_prints_the_installed_version(tmp_path):
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-c", "from ragglm.cli import main; main()", "--version"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_clean_env(tmp_path))
    assert done.returncode == 0
    assert done.stdout.strip() == f"ragglm {version('ragglm')}"


@pytest.mark.slow
def test_cuda_without_a_gpu_is_one_line_and_exit_3(tmp_path):
    env = {**_clean_env(tmp_path), "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, on any machine
    done = subprocess.run([sys.executable, "-c", "from ragglm.cli import main; main()", "ask", "--docs",
                           str(ROUTER_FAQ), "--device", "cuda", "--no-stream", "How many devices can connect?"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragglm: error: device 'cuda': "), done.stderr
    assert "--device cpu" in lines[0]


def test_cuda_index_beyond_the_device_count(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1") as caught:
        check_device("cuda:2")
    assert caught.value.exit_code == 3


def test_unavailable_mps_and_unknown_names(monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS is not available"):
        check_device("mps")
    with pytest.raises(ConfigError, match="not a device name"):
        check_device("gpu")
    check_device("cpu")
