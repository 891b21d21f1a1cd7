"""`ragglm ask --json` end to end on a tiny random ChatGLM-6B with its own ice_text.model and a
P-Tuning v2 adapter: the text is nonsense, the pipeline must still answer, and the plan says why no
document KV is reused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.engine.chatglm6b_fixtures import write_tiny_glm6b
from tests.engine.chatglm_reference import write_ptuning_folder
from tests.engine.glm_fixtures import TEXT

RAGGLM = [sys.executable, "-m", "ragglm.cli"]


@pytest.mark.slow
def test_ask_json_on_a_tiny_chatglm6b(tmp_path):
    model = write_tiny_glm6b(tmp_path / "glm6b")
    docs = tmp_path / "manual.txt"
    docs.write_text("\n".join(TEXT), encoding="utf-8")
    config = json.loads((model / "config.json").read_text())
    prefix = 0.5 * torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(2))  # [2 * layers, heads, P, D]
    adapter = write_ptuning_folder(prefix, config, tmp_path / "ptuning", projection=True)
    done = subprocess.run([*RAGGLM, "ask", "--model", str(model), "--adapter", str(adapter), "--docs", str(docs),
                           "--json", "--mode", "stuff", "滤芯多久更换？"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["model"] == str(model) and payload["mode"] in ("stuff", "extractive")
    assert isinstance(payload["answer"], str)
    assert "attends both ways" in done.stdout  # the plan's prefix_cache note
