"""P-Tuning v2 prefixes against the original modeling code's outputs (chatglm.cpp's reference files):
ChatGLM-6B and ChatGLM3, prompt pass and two decode steps through the KV cache.

The files hold the prefix KV rounded to float16, while their outputs were computed with the float32
prefix: rebuilt into a prefix-encoder checkpoint, that rounding bounds the agreement (ChatGLM3: 1e-3).
"""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.cache.prefix_cache import PrefixCache
from ragglm.engine.engine import Engine
from ragglm.engine.generate import generate_tokens
from ragglm.engine.loading.adapters.errors import AdapterError
from ragglm.engine.loading.adapters.ptuning import apply_ptuning
from tests.engine.chatglm_reference import (
    GLM3_PREFIX,
    GLM3_WEIGHTS,
    GLM6B_PREFIX,
    GLM6B_WEIGHTS,
    glm3_config,
    glm6b_config,
    read_reference,
    run_steps,
    write_glm3_folder,
    write_glm6b_folder,
    write_ptuning_folder,
)

FP16_PREFIX_TOLERANCE = 1e-3  # ChatGLM3: 1.04e-4 measured
GLM6B_PREFIX_TOLERANCE = 1e-4  # ChatGLM-6B: 6e-6 measured


def _reference(shared_data, name, weights, prefix):
    return read_reference(shared_data / "reference" / "chatglm_cpp" / name, weights, prefix)


@pytest.fixture(scope="module")
def glm6b(shared_data):
    return _reference(shared_data, "glm_ptuning_v2_model.data", GLM6B_WEIGHTS, GLM6B_PREFIX)


@pytest.fixture(scope="module")
def glm3(shared_data):
    return _reference(shared_data, "glm3_ptuning_v2_model.data", GLM3_WEIGHTS, GLM3_PREFIX)


@pytest.mark.parametrize("fmt,projection", [("safetensors", False), ("bin", True)])
def test_chatglm6b_prefix_matches_the_original(glm6b, tmp_path, fmt, projection):
    engine = Engine.from_pretrained(write_glm6b_folder(glm6b, tmp_path / "model", fmt), dtype="fp32")
    apply_ptuning(engine.model, write_ptuning_folder(glm6b["prefix"], glm6b_config(), tmp_path / "pt", fmt,
                                                     projection))
    assert engine.model.kv_prefix_len == 5
    errors = run_steps(engine, glm6b)
    assert max(errors) < GLM6B_PREFIX_TOLERANCE, errors
    # without the prefix the same weights give other outputs: the prefix is what is matched
    engine.model.set_kv_prefix(None)
    assert max(run_steps(engine, glm6b)) > 10 * FP16_PREFIX_TOLERANCE


@pytest.mark.parametrize("fmt,projection", [("safetensors", False), ("bin", True)])
def test_chatglm3_prefix_matches_the_original(glm3, tmp_path, fmt, projection):
    engine = Engine.from_pretrained(write_glm3_folder(glm3, tmp_path / "model", fmt), dtype="fp32")
    apply_ptuning(engine.model, write_ptuning_folder(glm3["prefix"], glm3_config(), tmp_path / "pt", fmt, projection))
    errors = run_steps(engine, glm3)
    assert max(errors) < FP16_PREFIX_TOLERANCE, errors
    # without a cache (logits of the whole sequence) the prefix is seen the same way
    sequence = torch.cat([glm3["x1"], glm3["x2"], glm3["x3"]], dim=1)
    hidden = engine.logits(sequence)
    expected = torch.cat([glm3["y1"], glm3["y2"], glm3["y3"]], dim=1)
    assert float((hidden - expected).abs().max()) < FP16_PREFIX_TOLERANCE


def test_mismatched_prefix_names_both_shapes(glm3, glm6b, tmp_path):
    engine = Engine.from_pretrained(write_glm3_folder(glm3, tmp_path / "model", "safetensors"), dtype="fp32")
    folder = write_ptuning_folder(glm6b["prefix"], glm3_config(), tmp_path / "pt")  # 8 KV heads, not 2
    with pytest.raises(AdapterError, match=r"gives 64 values per prefix token, the model needs 16 \(1 layers x 2 x 2 kv heads"):
        apply_ptuning(engine.model, folder)
    assert engine.model.kv_prefix_len == 0


def test_prefix_cache_keys_follow_the_prefix(glm3, tmp_path):
    """KV cached without the prefix is never reused with it, and greedy output with a cached prefix
    equals a full prefill."""
    engine = Engine.from_pretrained(write_glm3_folder(glm3, tmp_path / "model", "safetensors"), dtype="fp32")
    model = engine.model
    cache = PrefixCache.for_model(model, block_size=4)
    prompt = [0, 1, 2, 3, 4, 0, 1, 2, 3, 1]

    def greedy(prefix_cache):
        return list(generate_tokens(model, prompt, 4, set(), prefix_cache=prefix_cache))

    greedy(cache)  # blocks of the model without a prefix
    apply_ptuning(model, write_ptuning_folder(glm3["prefix"], glm3_config(), tmp_path / "pt"))
    assert cache.cached_length(prompt) == 8  # still rooted at no prefix until the model is used
    full = greedy(None)
    stats_cached = greedy(cache)  # first use with the prefix: nothing of the old blocks is reused
    assert cache.cached_length(prompt) == 8 and stats_cached == full
    model.setup_cache(1, 32)
    assert cache.load_into(model, prompt, limit=len(prompt) - 1) == 8
    assert greedy(cache) == full


def test_adapter_folder_through_from_pretrained_on_the_default_dtype(glm3, tmp_path):
    """Engine.from_pretrained(adapter=) with the default dtype, where a native decode step may be
    attached: decoding with the prefix gives the tokens the whole sequence's logits give."""
    model = write_glm3_folder(glm3, tmp_path / "model", "safetensors")
    engine = Engine.from_pretrained(model, adapter=write_ptuning_folder(glm3["prefix"], glm3_config(), tmp_path / "pt"))
    assert engine.model.kv_prefix_len == 5 and engine.adapter["kind"] == "ptuning"
    assert max(run_steps(engine, glm3)) < 0.05  # bf16 linear layers where the CPU has them
    sequence = [0, 1, 2]
    for _ in range(4):
        sequence.append(int(engine.logits(torch.tensor([sequence]))[0, -1].argmax()))
    assert engine.generate([0, 1, 2], max_new_tokens=4).token_ids == sequence[3:]
