"""Native int4 -> bf16 dequantization for prompt products, against the float32 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragglm.engine.kernels.fused_decode import native_step_available
from ragglm.engine.linear.quantize import KERNEL_MAX_ROWS, Int4Linear, dequantize, quantize_int4

pytestmark = pytest.mark.skipif(not native_step_available(), reason="no C++ compiler for the native library")


def _layer(rows: int, cols: int, group: int, seed: int = 0) -> tuple[Int4Linear, torch.Tensor]:
    from ragglm.engine.kernels.fused_decode import load_library
    from ragglm.engine.kernels.int4_prefill import attach_int4_prefill

    qw = quantize_int4(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)), group)
    layer = Int4Linear(qw, None)
    layer.compute_in(torch.bfloat16)
    if not layer._cpu_layout:
        pytest.skip("this torch build has no CPU int4 kernel layout")
    assert attach_int4_prefill(layer, load_library()) == 1
    # the reference: float32 values from the stored (bf16) scales and zeros, rounded to bf16 once
    stored = type(qw)("int4", qw.qweight, layer.scales_and_zeros[..., 0].t().float(),
                      layer.scales_and_zeros[..., 1].t().float(), group)
    return layer, dequantize(stored, torch.float32)


@pytest.mark.parametrize(("rows", "cols", "group"), [(64, 32, 32), (128, 256, 32), (192, 512, 64), (64, 256, 128)])
def test_native_weights_are_the_float32_values_rounded_to_bf16(rows, cols, group):
    layer, reference = _layer(rows, cols, group)
    weight = layer.prefill_weight(layer)
    assert weight.dtype == torch.bfloat16 and weight.shape == (rows, cols)
    # one rounding to bf16, as torch rounds (a fused multiply-add may move a tie by one bf16 step)
    rounded = reference.bfloat16()
    assert (weight == rounded).float().mean() > 0.999
    torch.testing.assert_close(weight.float(), rounded.float(), rtol=2.0**-7, atol=0)


def test_a_prompt_through_the_native_path_matches_the_dequantized_product():
    layer, reference = _layer(256, 512, 32, seed=3)
    x = torch.randn(KERNEL_MAX_ROWS + 80, 512, generator=torch.Generator().manual_seed(4))
    y = layer(x)
    expected = F.linear(x.bfloat16().float(), reference.bfloat16().float())
    assert y.dtype == torch.float32 and y.shape == (KERNEL_MAX_ROWS + 80, 256)
    torch.testing.assert_close(y, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


def test_a_smaller_layer_after_a_larger_one_reads_its_own_weight():
    big, _ = _layer(256, 512, 32, seed=5)
    small, reference = _layer(64, 256, 32, seed=6)
    small.prefill_weight = big.prefill_weight  # one scratch buffer for both, as in a model
    big.prefill_weight(big)
    torch.testing.assert_close(small.prefill_weight(small).float(), reference.bfloat16().float(), rtol=2.0**-7, atol=0)


@pytest.mark.parametrize(("rows", "cols"), [(64, 64), (192, 160), (640, 4096)])
def test_native_packing_gives_the_bytes_of_torchs_conversion(rows, cols):
    from ragglm.engine.kernels.int4_prefill import native_int4_pack
    from ragglm.engine.linear.quantize import cpu_int4_pack

    qweight = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(rows))
    assert torch.equal(native_int4_pack(qweight), cpu_int4_pack(qweight))


def test_an_int4_model_prefilled_layer_by_layer_keeps_the_kv_and_logits_of_piece_by_piece():
    from ragglm.engine.generate import prefill
    from ragglm.engine.kernels.fused_decode import load_library
    from ragglm.engine.kernels.int4_prefill import attach_int4_prefill
    from ragglm.engine.linear.packed_linear import use_bf16_linears
    from ragglm.engine.linear.quantize import QuantConfig
    from ragglm.engine.loading.quant_loader import build_quantized
    from ragglm.engine.model import ModelArgs, Transformer

    torch.manual_seed(0)
    args = ModelArgs(vocab_size=320, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=512,
                     max_seq_len=512)
    model = build_quantized(args, dict(Transformer(args).state_dict()), config=QuantConfig("int4", 32))
    use_bf16_linears(model)
    assert attach_int4_prefill(model, load_library()) == 9  # four a block, and the head
    prompt = torch.randint(0, 320, (300,), generator=torch.Generator().manual_seed(1)).tolist()

    def kv() -> list[torch.Tensor]:
        return [t[0, :, :300].clone() for layer in model.layers for t in (layer.attention.kv_cache.k,
                                                                            layer.attention.kv_cache.v)]

    with torch.inference_mode():
        model.setup_cache(1, 400)
        by_layer = prefill(model, prompt, 128)  # pieces 0-128, 128-256, 256-300, layer by layer
        kv_by_layer = kv()
        model.setup_cache(1, 401)  # a fresh cache
        for lo, hi in ((0, 128), (128, 256), (256, 300)):
            by_piece = model(torch.tensor([prompt[lo:hi]]), start=lo, last_only=True)[0, -1]
        assert torch.equal(by_layer, by_piece)
        assert all(map(torch.equal, kv_by_layer, kv()))
