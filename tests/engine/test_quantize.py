"""Weight-only int8/int4: per-layer error bounds, kernels vs. a float reference, quantized tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragglm.engine.linear.packed_linear import packing_supported
from ragglm.engine.linear.quantize import (
    KERNEL_MAX_ROWS,
    Int4Linear,
    Int8Linear,
    QuantConfig,
    QuantizationError,
    dequantize,
    kernel_paths,
    linear_names,
    quantize_int4,
    quantize_int8,
    quantized_bytes,
)
from ragglm.engine.loading.quant_loader import build_quantized, load_quantized, save_quantized
from ragglm.engine.model import ModelArgs, Transformer


def tiny_args(**overrides) -> ModelArgs:
    base = dict(family="llama", vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2,
                intermediate_size=256, max_seq_len=128)
    base.update(overrides)
    return ModelArgs(**base)


def random_model(args: ModelArgs, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.08)
    return model.eval()


def with_dequantized_weights(model: Transformer, config: QuantConfig) -> Transformer:
    """The float model with every linear weight replaced by its quantize-dequantize round trip."""
    reference = Transformer(model.args)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name in linear_names(reference):
            layer = reference.get_submodule(name)
            layer.weight.copy_(dequantize(_quantize(layer.weight, config)))
    return reference.eval()


def _quantize(weight, config):
    if config.scheme == "int8":
        return quantize_int8(weight)
    return quantize_int4(weight, config.group_for(weight.shape[1]))


@pytest.mark.parametrize("shape", [(64, 128), (96, 576)])
def test_int8_round_trip_error_is_at_most_half_a_step_per_channel(shape):
    torch.manual_seed(1)
    weight = torch.randn(shape) * torch.rand(shape[0], 1) * 3  # rows of very different ranges
    qw = quantize_int8(weight)
    error = (dequantize(qw) - weight).abs()
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert qw.qweight.dtype == torch.int8 and qw.scales.shape == (shape[0],)
    assert bool((error <= step / 2 + 1e-6).all())
    # the largest magnitude of each row is represented exactly (up to float rounding)
    assert torch.allclose(dequantize(qw).abs().amax(dim=1), weight.abs().amax(dim=1), rtol=1e-6)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_round_trip_error_is_at_most_half_a_step_per_group(group):
    torch.manual_seed(2)
    weight = torch.randn(48, 256) + torch.linspace(-2, 2, 256)  # groups with offsets: asymmetric ranges
    qw = quantize_int4(weight, group)
    assert qw.qweight.dtype == torch.uint8 and qw.qweight.shape == (48, 128)  # two values per byte
    assert qw.scales.shape == qw.zeros.shape == (48, 256 // group)
    grouped = weight.reshape(48, -1, group)
    step = (grouped.amax(-1) - grouped.amin(-1)) / 15
    error = (dequantize(qw) - weight).abs().reshape(48, -1, group)
    assert bool((error <= step[..., None] / 2 + 1e-5).all())


def test_int4_is_exact_on_weights_already_on_a_16_level_grid():
    torch.manual_seed(3)
    levels = torch.randint(0, 16, (32, 64)).float()
    levels[:, 0], levels[:, 1] = 0, 15  # every row uses the full range
    weight = levels * 0.01 - 0.07
    assert torch.allclose(dequantize(quantize_int4(weight, 64)), weight, atol=1e-6)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("bias", [False, True])
def test_quantized_linear_matches_float_matmul_on_dequantized_weight(scheme, bias):
    torch.manual_seed(4)
    weight, b, x = torch.randn(96, 256), torch.randn(96), torch.randn(3, 5, 256)
    qw = quantize_int8(weight) if scheme == "int8" else quantize_int4(weight, 64)
    module = (Int8Linear if scheme == "int8" else Int4Linear)(qw, b if bias else None)
    expected = F.linear(x, dequantize(qw), b if bias else None)
    assert module.path != "dequantize"  # the packed kernels exist in the torch this project pins
    assert module(x).shape == (3, 5, 96)
    assert torch.allclose(module(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_many_rows_take_the_dequantized_gemm_and_agree_with_the_kernel(scheme):
    """Prefill-sized inputs skip the per-row kernel; both routes give the float reference."""
    torch.manual_seed(6)
    weight, x = torch.randn(128, 256), torch.randn(KERNEL_MAX_ROWS + 16, 256)
    qw = quantize_int8(weight) if scheme == "int8" else quantize_int4(weight, 64)
    module = (Int8Linear if scheme == "int8" else Int4Linear)(qw, None)
    expected = F.linear(x, dequantize(qw))
    many = module(x)  # above KERNEL_MAX_ROWS: dequantize once, one GEMM
    few = torch.cat([module(part) for part in x.split(KERNEL_MAX_ROWS)])  # the packed kernel
    assert torch.allclose(many, expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(few, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")
@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("rows", [1, 3 * KERNEL_MAX_ROWS])
def test_bf16_compute_keeps_float32_in_and_out_within_bf16_rounding(scheme, rows):
    torch.manual_seed(7)
    weight, x = torch.randn(128, 256), torch.randn(rows, 256)
    qw = quantize_int8(weight) if scheme == "int8" else quantize_int4(weight, 64)
    module = (Int8Linear if scheme == "int8" else Int4Linear)(qw, torch.randn(128))
    module.compute_dtype = torch.bfloat16
    y = module(x)
    expected = F.linear(x, dequantize(qw), module.bias)
    assert y.dtype == torch.float32
    # bf16 keeps 8 significant bits: inputs and outputs are rounded to about 0.4%
    assert (y - expected).abs().max() <= 0.02 * expected.abs().max()


def test_int4_fallback_runs_where_the_kernel_cannot_and_agrees():
    torch.manual_seed(5)
    weight, x = torch.randn(40, 128), torch.randn(2, 128)  # 40 rows: not a multiple of the kernel's 16
    qw = quantize_int4(weight, 32)
    module = Int4Linear(qw, None)
    assert module.path == "dequantize"
    assert torch.allclose(module(x), F.linear(x, dequantize(qw)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["int8", "int4", "int4:g32", "int4:g128"])
@pytest.mark.parametrize("overrides", [{}, {"qkv_bias": True, "tie_embeddings": False}],
                         ids=["tied", "qkv_bias+untied_head"])
def test_quantized_model_equals_float_model_with_round_tripped_weights(spec, overrides):
    """Every linear layer (QKV with its bias, output, MLP, untied head) is quantized and used."""
    config = QuantConfig.parse(spec)
    model = random_model(tiny_args(**overrides))
    quantized = build_quantized(model.args, dict(model.state_dict()), config=config)
    expected_layers = 4 * model.args.n_layers + (0 if model.args.tie_embeddings else 1)
    assert sum(kernel_paths(quantized).values()) == expected_layers
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    tokens = torch.randint(0, 256, (2, 24))
    with torch.inference_mode():
        got = quantized(tokens)
        want = with_dequantized_weights(model, config)(tokens)
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), (got - want).abs().max()


def test_qkv_bias_is_applied_after_quantization():
    model = random_model(tiny_args(qkv_bias=True))
    with torch.no_grad():
        model.layers[0].attention.wqkv.bias.add_(0.5)
    quantized = build_quantized(model.args, dict(model.state_dict()), config=QuantConfig("int8"))
    layer = quantized.layers[0].attention.wqkv
    assert layer.bias is not None and torch.equal(layer.bias, model.layers[0].attention.wqkv.bias.detach())
    x = torch.randn(1, 3, 128)
    assert torch.allclose(layer(x), F.linear(x, dequantize(quantize_int8(model.layers[0].attention.wqkv.weight)))
                          + layer.bias, atol=1e-4)


@pytest.mark.parametrize("spec", ["int8", "int4"])
def test_weight_bytes_shrink_to_the_stated_ratios(spec):
    model = random_model(tiny_args(dim=256, intermediate_size=512, tie_embeddings=False))
    float_linear = quantized_bytes(model)["linear"]
    quantized = build_quantized(model.args, dict(model.state_dict()), config=QuantConfig(spec, 128))
    ratio = quantized_bytes(quantized)["linear"] / float_linear
    # int8: 1 byte + a float scale per row; int4 g128: half a byte + two floats per 128 weights
    assert ratio == pytest.approx(0.25 + 1 / 256 if spec == "int8" else 0.125 + 2 / 128, rel=0.02)


@pytest.mark.parametrize("spec", ["int8", "int4:g32"])
def test_saved_checkpoint_reloads_without_requantizing_and_gives_identical_logits(tmp_path, spec):
    config = QuantConfig.parse(spec)
    model = random_model(tiny_args(qkv_bias=True, tie_embeddings=False))
    direct = build_quantized(model.args, dict(model.state_dict()), config=config)
    save_quantized(tmp_path, model.args, dict(model.state_dict()).items(), config)
    reloaded, meta = load_quantized(tmp_path)
    assert meta["scheme"] == config.scheme
    tokens = torch.randint(0, 256, (1, 32))
    with torch.inference_mode():
        assert torch.equal(direct(tokens), reloaded(tokens))


def test_group_size_falls_back_to_one_that_divides_the_layer():
    assert QuantConfig("int4", 128).group_for(576) == 64
    assert QuantConfig("int4", 64).group_for(96) == 32
    with pytest.raises(QuantizationError, match="int8"):
        QuantConfig("int4", 32).group_for(100)


@pytest.mark.parametrize("spec", ["int3", "int4:gx", "int4:g48"])
def test_bad_quantization_names_say_what_works(spec):
    with pytest.raises(QuantizationError, match="int4"):
        QuantConfig.parse(spec)


def test_none_means_float():
    assert QuantConfig.parse(None) is None and QuantConfig.parse("none") is None
    assert QuantConfig.parse("int4:g32") == QuantConfig("int4", 32)


@pytest.mark.slow
def test_cli_quantizes_the_packaged_gguf_and_the_folder_reloads_identically(tmp_path):
    from typer.testing import CliRunner

    from ragglm.cli import app
    from ragglm.engine import Engine

    out = tmp_path / "smollm2-int4"
    result = CliRunner().invoke(app, ["quantize", "smollm2", str(out), "--quant", "int4", "--json"])
    assert result.exit_code == 0, result.output
    direct = Engine.from_pretrained("smollm2", quant="int4")
    reloaded = Engine.from_pretrained(out)
    assert reloaded.quant == direct.quant == "int4:g32"
    assert reloaded.quant_paths == direct.quant_paths
    assert direct.quant_paths["_weight_int4pack_mm_for_cpu"] == 4 * 30
    ids = direct.tokenizer.encode("Replace the filter every six months.")
    assert reloaded.tokenizer.encode("Replace the filter every six months.") == ids
    tokens = torch.tensor([ids])
    assert torch.equal(direct.logits(tokens), reloaded.logits(tokens))
    bad = CliRunner().invoke(app, ["quantize", "smollm2", str(tmp_path / "x"), "--quant", "int3"])
    assert bad.exit_code == 2 and "int3" in bad.output


@pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")
def test_bf16_compute_keeps_scales_in_bf16_so_int4_g32_stays_under_a_sixth():
    from ragglm.engine.linear.packed_linear import use_bf16_linears

    model = random_model(tiny_args(dim=256, intermediate_size=512, tie_embeddings=False))
    float_linear = quantized_bytes(model)["linear"]
    quantized = build_quantized(model.args, dict(model.state_dict()), config=QuantConfig("int4", 32))
    use_bf16_linears(quantized)
    # half a byte a weight, plus a bf16 scale and zero per 32 weights
    assert quantized_bytes(quantized)["linear"] / float_linear == pytest.approx(0.125 + 4 / 128, rel=0.02)
