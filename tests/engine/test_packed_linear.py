"""bf16 linear layers prepacked for oneDNN: same products as F.linear in bf16, model-level behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragglm.engine import Engine
from ragglm.engine.linear.dtypes import resolve_dtype
from ragglm.engine.linear.packed_linear import PackedLinear, packing_supported, use_bf16_linears
from ragglm.engine.linear.quantize import kernel_paths
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ConfigError

needs_bf16 = pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")


@needs_bf16
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_packed_linear_equals_bf16_linear(rows):
    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 64), torch.randn(96), torch.randn(rows, 64)
    packed = PackedLinear(weight, bias)
    expected = F.linear(x.bfloat16().float(), weight.bfloat16().float(), bias.bfloat16().float())
    got = packed(x)
    assert got.dtype == torch.float32 and got.shape == (rows, 96)
    assert torch.allclose(got, expected, rtol=1e-2, atol=2e-2)


def tiny_model() -> Transformer:
    torch.manual_seed(1)
    args = ModelArgs(vocab_size=128, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                     tie_embeddings=True, max_seq_len=64)
    model = Transformer(args)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.eval()


@needs_bf16
def test_bf16_linears_keep_the_state_dict_and_stay_close_to_float32():
    model = tiny_model()
    tokens = torch.randint(0, 128, (1, 20))
    with torch.inference_mode():
        want = model(tokens)
    names = set(model.state_dict())
    changed = use_bf16_linears(model)
    assert changed == 4 * 2 + 1  # four linears a layer and the tied head
    assert kernel_paths(model) == {"onednn_packed_bf16": 9}
    assert set(model.state_dict()) - names == set()  # packed copies stay out of checkpoints and fingerprints
    with torch.inference_mode():
        got = model(tokens)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


def test_dtype_names():
    assert resolve_dtype("fp32") == (torch.float32, False)
    assert resolve_dtype("auto") == (torch.float32, packing_supported(torch.bfloat16, "cpu"))
    assert resolve_dtype(torch.bfloat16)[0] == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


@needs_bf16
@pytest.mark.slow
def test_packed_smollm2_answers_like_float32():
    """bf16 matmuls with a float32 residual stream keep SmolLM2's answer; bf16 throughout does not."""
    question = [{"role": "user", "content": "What is the capital of France?"}]
    engine = Engine.from_pretrained("smollm2", dtype="fp32")
    assert use_bf16_linears(engine.model) == 4 * 30 + 1
    assert kernel_paths(engine.model) == {"onednn_packed_bf16": 4 * 30 + 1}
    assert engine.chat(question, max_new_tokens=12).text.startswith("The capital of France is Paris")
