"""ChatGLM-6B against the original modeling code's outputs (chatglm.cpp's reference file): the prompt
pass and two decode steps through the KV cache, from folders in the original naming."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.engine import Engine
from ragglm.engine.generate import generate_tokens
from ragglm.engine.glm_prefix_lm import PromptLayout
from ragglm.errors import ModelNotFoundError
from tests.engine.chatglm_reference import (
    GLM6B_WEIGHTS,
    read_reference,
    run_steps,
    write_glm6b_folder,
)

TOLERANCE = 1e-4  # float32 throughout


@pytest.fixture(scope="module")
def reference(shared_data):
    return read_reference(shared_data / "reference" / "chatglm_cpp" / "glm_model.data", GLM6B_WEIGHTS)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_prompt_and_decode_steps_match_the_original(reference, tmp_path, fmt):
    engine = Engine.from_pretrained(write_glm6b_folder(reference, tmp_path / fmt, fmt), dtype="fp32")
    assert engine.model.args.position_mode == "glm_2d" and engine.model.args.sop_token_id == 2
    errors = run_steps(engine, reference)
    assert max(errors) < TOLERANCE, errors


def test_logits_without_cache_and_generate_on_ids(reference, tmp_path):
    """No tokenizer files: token-level use works, and encoding text names what is missing."""
    engine = Engine.from_pretrained(write_glm6b_folder(reference, tmp_path / "m", "safetensors"), dtype="fp32")
    hidden = engine.logits(reference["x1"])  # the whole prompt in one pass, no KV cache
    assert float((hidden - reference["y1"]).abs().max()) < TOLERANCE
    prompt = torch.cat([reference["x1"], reference["x2"]], dim=1)  # the decode step's token, with the prompt
    assert float((engine.logits(prompt)[:, -1:] - reference["y2"]).abs().max()) < TOLERANCE
    result = engine.generate(reference["x1"][0].tolist(), max_new_tokens=3)
    assert result.token_ids[0] == int(reference["y1"][0, -1].argmax()) and result.text == ""
    assert engine.prefix_cache is None  # the context attends both ways: nothing to reuse
    with pytest.raises(ModelNotFoundError, match="no tokenizer"):
        engine.chat_ids([{"role": "user", "content": "hi"}])


def test_generation_prefills_the_context_in_one_pass(reference, tmp_path):
    """Asked for pieces of 2 tokens, generation still runs the prompt whole: its first token is the
    one the whole prompt's logits give."""
    engine = Engine.from_pretrained(write_glm6b_folder(reference, tmp_path / "m", "safetensors"), dtype="fp32")
    # context [0 3 4 0 3], [gMASK] = 1, <sop> = 2
    prompt = [0, 3, 4, 0, 3, 1, 2]
    expected = int(engine.logits(torch.tensor([prompt]))[0, -1].argmax())
    tokens = list(generate_tokens(engine.model, prompt, 1, set(), prefill_chunk=2))
    assert tokens == [expected]
    assert engine.model.prompt_layouts == [PromptLayout(context_length=6, mask_position=5)]
