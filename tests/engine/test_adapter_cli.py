"""Adapters from the command line and the settings: `ask --adapter`, RAGGLM_ADAPTER, `quantize --adapter`,
a mismatched adapter's exit code, and disk KV caches kept apart from the base model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from ragglm.cli import EXIT_MODEL, app
from ragglm.engine import Engine
from ragglm.engine.factory import load_generator
from ragglm.errors import ConfigError
from tests.engine.glm_fixtures import PROMPT, glm4_tokenizer_json, tiny_glm_config, tiny_glm_model
from tests.engine.test_lora import LLAMA_TARGETS, peft_adapter, tiny_llama

QUESTION = "How long does the filter last?"
DOC = "The filter lasts about six months; replace it on time. Flush the device for five minutes before first use.\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama folder with a tokenizer, a LoRA for it, a LoRA for another shape, a document."""
    root = tmp_path_factory.mktemp("adapter-cli")
    base = tiny_llama(seed=11, max_position_embeddings=2048)  # room for the prompt with the document
    base.save_pretrained(root / "model")
    glm4_tokenizer_json(root / "model" / "tokenizer.json")
    peft_adapter(base, root / "lora", target_modules=LLAMA_TARGETS)
    other = tiny_glm_model(tiny_glm_config(hidden_size=32, head_dim=8))
    peft_adapter(other, root / "other-lora", target_modules=["q_proj"], base_model_name_or_path="THUDM/glm-4-9b")
    (root / "doc.txt").write_text(DOC)
    return root


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ragglm.toml from the checkout
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in [n for n in os.environ if n.startswith("RAGGLM_") and n not in ("RAGGLM_SHARED_DATA",
                                                                                  "RAGGLM_CACHE_DIR")]:
        monkeypatch.delenv(name)
    return CliRunner()


def ask_args(folders, *extra):
    return ["ask", "--docs", str(folders / "doc.txt"), "--model", str(folders / "model"), "--mode", "stuff",
            "--json", *extra, QUESTION]


@pytest.mark.slow
def test_ask_with_adapter_end_to_end(folders):
    env = {**os.environ, "RAGGLM_MAX_NEW_TOKENS": "8"}
    done = subprocess.run([sys.executable, "-m", "ragglm.cli", *ask_args(folders, "--adapter", str(folders / "lora"))],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["answer"] and payload["plan"]["mode"] == "stuff"
    assert payload["timings"]["generated_tokens"] > 0  # the adapted model wrote (the text is a tiny model's)


def test_adapter_setting_comes_from_the_environment(folders, monkeypatch):
    from ragglm.knowledge_base import KnowledgeBase

    monkeypatch.setenv("RAGGLM_ADAPTER", str(folders / "lora"))
    generator = KnowledgeBase(model=str(folders / "model")).generator
    assert generator.adapter["path"] == str((folders / "lora").resolve())
    monkeypatch.delenv("RAGGLM_ADAPTER")
    assert KnowledgeBase(model=str(folders / "model")).generator.adapter is None


def test_mismatched_adapter_names_both_and_exits_as_a_model_error(folders, runner):
    result = runner.invoke(app, ask_args(folders, "--adapter", str(folders / "other-lora")))
    assert result.exit_code == EXIT_MODEL, result.output
    assert str(folders / "other-lora") in result.stderr and str(folders / "model") in result.stderr
    assert "THUDM/glm-4-9b" in result.stderr
    missing = runner.invoke(app, ask_args(folders, "--adapter", str(folders / "nowhere")))
    assert missing.exit_code == EXIT_MODEL and "no such folder" in missing.stderr


def test_quantize_with_adapter_keeps_the_merged_weights(folders, runner, tmp_path):
    out = tmp_path / "int8"
    result = runner.invoke(app, ["quantize", str(folders / "model"), str(out), "--quant", "int8",
                                 "--adapter", str(folders / "lora"), "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["adapter"]["kind"] == "lora" and meta["adapter"]["path"] == str((folders / "lora").resolve())
    adapted = Engine.from_pretrained(folders / "model", dtype="fp32", adapter=folders / "lora").logits(PROMPT)
    base = Engine.from_pretrained(folders / "model", dtype="fp32").logits(PROMPT)
    saved = Engine.from_pretrained(out, dtype="fp32").logits(PROMPT)
    assert (saved - adapted).abs().mean() < 0.1 * (base - adapted).abs().mean()
    again = runner.invoke(app, ["quantize", str(out), str(tmp_path / "again"), "--adapter", str(folders / "lora")])
    assert again.exit_code == EXIT_MODEL and "already quantized" in again.stderr


def test_disk_kv_cache_of_an_adapted_model_is_its_own(folders, tmp_path):
    base = Engine.from_pretrained(folders / "model", dtype="fp32")
    adapted = Engine.from_pretrained(folders / "model", dtype="fp32", adapter=folders / "lora")
    base_folder = base.enable_disk_cache(tmp_path / "kv")
    adapted_folder = adapted.enable_disk_cache(tmp_path / "kv")
    assert base_folder != adapted_folder
    fingerprint = json.loads(next(adapted_folder.glob("*.json")).read_text())
    assert fingerprint["adapter"]["digest"] == adapted.adapter["digest"]
    # another adapter at the same path (trained again) is another model too
    retrained = tmp_path / "lora"
    peft_adapter(tiny_llama(seed=11, max_position_embeddings=2048), retrained, seed=5, target_modules=LLAMA_TARGETS)
    again = Engine.from_pretrained(folders / "model", dtype="fp32", adapter=retrained)
    assert again.adapter["digest"] != adapted.adapter["digest"]
    assert again.enable_disk_cache(tmp_path / "kv") not in (base_folder, adapted_folder)
    assert not torch.equal(again.logits(PROMPT), adapted.logits(PROMPT))


def test_an_adapter_for_a_remote_model_is_refused(folders):
    with pytest.raises(ConfigError, match="ragglm serve --adapter"):
        load_generator("openai:http://127.0.0.1:9/v1", adapter=folders / "lora")
