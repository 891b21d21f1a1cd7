"""Our GLM Transformer against transformers' GlmForCausalLM on tiny random checkpoints (fp32)."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine import Engine
from ragglm.engine.generate import generate_tokens
from ragglm.engine.loading.glm_config import chatglm_args
from ragglm.engine.model import ModelArgs, apply_rope, rope_tables
from tests.engine.glm_fixtures import (
    PROMPT,
    chatglm_config,
    save_chatglm_folder,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)


@pytest.fixture(scope="module")
def reference():
    return tiny_glm_model(tiny_glm_config())


@pytest.fixture(scope="module")
def glm_folder(reference, tmp_path_factory):
    return save_glm_folder(reference, tmp_path_factory.mktemp("glm-hf"))


@pytest.fixture(scope="module")
def engine_hf_naming(glm_folder):
    return Engine.from_pretrained(glm_folder, dtype="fp32")


def _reference_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_glm_naming_logits_match_transformers(reference, engine_hf_naming):
    assert engine_hf_naming.args.family == "glm"
    ours = engine_hf_naming.logits(PROMPT)
    theirs = _reference_logits(reference, PROMPT)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_chatglm_naming_logits_match_transformers(reference, engine_hf_naming, tmp_path, fmt):
    folder = save_chatglm_folder(engine_hf_naming.model.state_dict(), chatglm_config(reference.config), tmp_path, fmt)
    engine = Engine.from_pretrained(folder, dtype="fp32")
    assert engine.args.n_kv_heads == 2 and engine.args.rope_interleaved and engine.args.rope_fraction == 0.5
    diff = (engine.logits(PROMPT) - _reference_logits(reference, PROMPT)).abs().max().item()
    assert diff <= 1e-4


def test_greedy_32_tokens_equal_transformers_generate(reference, engine_hf_naming):
    with torch.no_grad():
        theirs = reference.generate(PROMPT, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)[0, PROMPT.shape[1]:].tolist()
    # prefill in blocks of 5 so the blocked path with position offsets is what is compared
    ours = list(generate_tokens(engine_hf_naming.model, PROMPT[0].tolist(), 32, set(), prefill_chunk=5))
    assert ours == theirs


def test_blocked_prefill_matches_one_pass(engine_hf_naming):
    from ragglm.engine.generate import prefill

    model = engine_hf_naming.model
    model.setup_cache(1, 64)
    whole = prefill(model, PROMPT[0].tolist(), chunk=1000)
    model.setup_cache(1, 64)
    blocked = prefill(model, PROMPT[0].tolist(), chunk=3)
    assert torch.allclose(whole, blocked, atol=1e-5)


def test_rope_ratio_scales_base_like_transformers_theta(reference, engine_hf_naming, tmp_path):
    """ChatGLM3-6B-32K / GLM-4: rope_ratio multiplies the base; transformers spells it rope_theta."""
    from transformers import GlmForCausalLM

    config = tiny_glm_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0 * 50,
                                              "partial_rotary_factor": 0.5})
    scaled = GlmForCausalLM(config).eval()
    scaled.load_state_dict(reference.state_dict())
    folder = save_chatglm_folder(engine_hf_naming.model.state_dict(),
                                 chatglm_config(reference.config, rope_ratio=50, name="THUDM/chatglm3-6b-32k"), tmp_path)
    engine = Engine.from_pretrained(folder, dtype="fp32")
    long_prompt = torch.arange(3, 203).reshape(1, -1)  # positions far enough for the base to matter
    diff = (engine.logits(long_prompt) - _reference_logits(scaled, long_prompt)).abs().max().item()
    assert diff <= 1e-4
    assert (engine_hf_naming.logits(long_prompt) - engine.logits(long_prompt)).abs().max().item() > 1e-3


def _original_chatglm_rope(x: torch.Tensor, positions: torch.Tensor, rope_ratio: float, interpolate: bool):
    """ChatGLM's rotary written out independently: x [T, H, D]; the first D/2 dims rotate in (even, odd) pairs."""
    head_dim = x.shape[-1]
    n_elem = head_dim // 2
    base = 10000.0 if interpolate else 10000.0 * rope_ratio
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float64) / n_elem))
    seq = positions.double() / (rope_ratio if interpolate else 1.0)
    angles = seq[:, None] * theta[None, :]  # [T, n_elem/2]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    rot, rest = x[..., :n_elem].double(), x[..., n_elem:].double()
    even, odd = rot[..., 0::2], rot[..., 1::2]
    out = torch.empty_like(rot)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return torch.cat([out, rest], dim=-1)


@pytest.mark.parametrize("name, interpolate", [("THUDM/chatglm3-6b-32k", False), ("THUDM/chatglm2-6b-32k", True)])
def test_rope_ratio_both_ways_against_independent_formula(name, interpolate):
    config = chatglm_config(tiny_glm_config(), rope_ratio=16.0, name=name)
    args: ModelArgs = chatglm_args(config)
    if interpolate:
        assert args.rope_position_scale == 16.0 and args.rope_theta == 10000.0
    else:
        assert args.rope_position_scale == 1.0 and args.rope_theta == 160000.0
    torch.manual_seed(1)
    T, H, D = 50, 3, args.head_dim
    x = torch.randn(T, H, D)
    positions = torch.arange(1000, 1000 + T)
    ours = apply_rope(x.transpose(0, 1)[None], rope_tables(args, positions, torch.float32), interleaved=True)
    expected = _original_chatglm_rope(x, positions, 16.0, interpolate)
    assert (ours[0].transpose(0, 1).double() - expected).abs().max().item() <= 1e-4


def test_rope_ratio_mode_can_be_set_explicitly():
    config = chatglm_config(tiny_glm_config(), rope_ratio=8.0) | {"rope_ratio_mode": "positions"}
    assert chatglm_args(config).rope_position_scale == 8.0


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_logits_close_to_fp32(glm_folder, engine_hf_naming, dtype, torch_dtype):
    engine = Engine.from_pretrained(glm_folder, dtype=dtype)
    assert engine.model.tok_embeddings.weight.dtype == torch_dtype
    ours, fp32 = engine.logits(PROMPT), engine_hf_naming.logits(PROMPT)
    assert ours.dtype == torch.float32
    # bf16 keeps ~3 significant digits: compare relative to the logit scale
    assert (ours - fp32).abs().max().item() <= 0.05 * fp32.abs().max().item()
    tokens = list(generate_tokens(engine.model, PROMPT[0].tolist(), 4, set(), prefill_chunk=5))
    assert len(tokens) == 4


def test_chatglm3_folder_chats_end_to_end(reference, engine_hf_naming, tmp_path):
    from ragglm.engine.tokenizers.glm_chat_format import ChatGLM3Format

    folder = save_chatglm_folder(engine_hf_naming.model.state_dict(), chatglm_config(reference.config), tmp_path)
    engine = Engine.from_pretrained(folder, dtype="fp32")
    assert isinstance(engine.chat_format, ChatGLM3Format)
    messages = [{"role": "user", "content": "滤芯多久更换？"}]
    ids = engine.chat_ids(messages)
    assert ids[:3] == [engine.tokenizer.token_id(t) for t in ("[gMASK]", "sop", "<|user|>")]
    result = engine.chat(messages, max_new_tokens=8, temperature=0.7, top_p=0.9, seed=3)
    assert 0 < len(result.token_ids) <= 8 and result.prompt_tokens == len(ids)
    assert all(t not in engine.tokenizer.eos_token_ids for t in result.token_ids)
