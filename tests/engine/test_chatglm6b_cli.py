"""`ragglm ask --json` end to end on a tiny random ChatGLM-6B with its own ice_text.model: the text is
nonsense, the pipeline must still answer, and --explain says why no document KV is reused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.engine.chatglm6b_fixtures import write_tiny_glm6b
from tests.engine.glm_fixtures import TEXT

RAGGLM = [sys.executable, "-m", "ragglm.cli"]


@pytest.mark.slow
def test_ask_json_on_a_tiny_chatglm6b(tmp_path):
    model = write_tiny_glm6b(tmp_path / "glm6b")
    docs = tmp_path / "manual.txt"
    docs.write_text("\n".join(TEXT), encoding="utf-8")
    done = subprocess.run([*RAGGLM, "ask", "--model", str(model), "--docs", str(docs), "--json", "--mode", "stuff",
                           "滤芯多久更换？"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["model"] == str(model) and payload["mode"] in ("stuff", "extractive")
    assert isinstance(payload["answer"], str)
