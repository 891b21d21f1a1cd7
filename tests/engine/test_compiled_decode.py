"""The compiled decode step: same tokens as eager decoding, one trace for every position, clear failure."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.generate import generate_tokens
from ragglm.engine.kernels.compiled_decode import compile_decode
from ragglm.engine.linear.packed_linear import packing_supported, use_bf16_linears
from ragglm.engine.model import MIN_COMPILED_CACHE, ModelArgs, Transformer
from ragglm.errors import ConfigError

pytestmark = pytest.mark.slow  # each compilation takes seconds

GLM_LIKE = dict(family="glm", rope_fraction=0.5, rope_interleaved=True, qkv_bias=True)


def tiny_model(**family) -> Transformer:
    torch.manual_seed(3)
    args = ModelArgs(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=96,
                     max_seq_len=4 * MIN_COMPILED_CACHE, **family)
    model = Transformer(args)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)  # large enough that greedy picks differ from token to token
    return model.eval()


def greedy(model: Transformer, prompt: list[int], new: int = 24) -> list[int]:
    return list(generate_tokens(model, prompt, new, set()))


def decode_logits(model: Transformer, prompt: list[int]) -> torch.Tensor:
    """Logits of one decode step after prefilling prompt[:-1]."""
    with torch.inference_mode():
        model.setup_cache(1, len(prompt) + 1)
        model(torch.tensor([prompt[:-1]]), start=0)
        return model.decode(torch.tensor([prompt[-1:]]), start=len(prompt) - 1)


@pytest.mark.parametrize("family", [{}, GLM_LIKE], ids=["llama", "glm"])
def test_compiled_decode_gives_the_eager_tokens(family):
    model = tiny_model(**family)
    prompts = [[5, 17, 42, 8], list(range(3, 40))]
    eager_tokens = [greedy(model, p) for p in prompts]
    eager_logits = decode_logits(model, prompts[1])
    assert len(set(eager_tokens[0] + eager_tokens[1])) > 3  # the check below compares something

    compile_decode(model)
    assert model.decode_step is not None
    assert model.cache_len == MIN_COMPILED_CACHE  # sized so that longer prompts reuse the trace
    assert [greedy(model, p) for p in prompts] == eager_tokens
    assert torch.allclose(decode_logits(model, prompts[1]), eager_logits, atol=1e-4, rtol=1e-4)


def test_a_larger_cache_is_traced_again_and_stays_exact():
    model = tiny_model()
    prompt = list(range(1, 60)) * 40  # 2,360 tokens: past the first compiled cache size
    eager = decode_logits(model, prompt)
    compile_decode(model)
    compiled = decode_logits(model, prompt)
    assert model.cache_len == 2 * MIN_COMPILED_CACHE
    assert torch.allclose(compiled, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")
def test_prepacked_bf16_linears_compile():
    model = tiny_model()
    use_bf16_linears(model)
    prompt = [7, 1, 30, 2, 9]
    eager_tokens, eager_logits = greedy(model, prompt), decode_logits(model, prompt)
    compile_decode(model)
    assert greedy(model, prompt) == eager_tokens
    assert torch.allclose(decode_logits(model, prompt), eager_logits, atol=1e-3, rtol=1e-3)


def test_without_a_working_compiler_the_error_says_what_to_install(monkeypatch):
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    model = tiny_model()
    with pytest.raises(ConfigError, match="No working C\\+\\+ compiler.*install one"):
        compile_decode(model)
    assert model.decode_step is None  # decoding falls back to eager
    assert len(greedy(model, [1, 2, 3], new=4)) == 4

