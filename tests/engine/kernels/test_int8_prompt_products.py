"""int8 prompt products of int4 and int8 layers, against float32 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragglm.engine.kernels.fused_decode import native_step_available
from ragglm.engine.linear.quantize import (
    KERNEL_MAX_ROWS,
    Int4Linear,
    Int8Linear,
    dequantize,
    quantize_int4,
    quantize_int8,
)

pytestmark = pytest.mark.skipif(not native_step_available(), reason="no C++ compiler for the native library")


def _attach(layer: torch.nn.Module) -> None:
    from ragglm.engine.kernels.fused_decode import load_library
    from ragglm.engine.kernels.int8_prompt_products import attach_int8_prompt_products

    assert attach_int8_prompt_products(layer, load_library()) == 1


def _int4_layer(rows: int, cols: int, group: int, seed: int = 0,
                q4_0: bool = False) -> tuple[Int4Linear, torch.Tensor]:
    qw = quantize_int4(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)), group)
    if q4_0:  # no zeros, float16 scales: the layer keeps the scales alone
        qw = type(qw)("int4", qw.qweight, qw.scales.half().float(), torch.zeros_like(qw.zeros), group)
    layer = Int4Linear(qw, None)
    assert (layer.group_scales is not None) == q4_0
    layer.compute_in(torch.bfloat16)
    if not layer._cpu_layout:
        pytest.skip("this torch build has no CPU int4 kernel layout")
    _attach(layer)
    # the reference: float32 values from the stored scales and zeros (bf16, or float16 scales alone)
    scales_and_zeros = layer.kernel_scales(torch.float32)
    stored = type(qw)("int4", qw.qweight, scales_and_zeros[..., 0].t(), scales_and_zeros[..., 1].t(), group)
    return layer, dequantize(stored, torch.float32)


@pytest.mark.parametrize(("rows", "cols", "group", "q4_0"), [(64, 32, 32, False), (128, 256, 32, False),
                                                             (192, 512, 64, False), (64, 256, 128, False),
                                                             (128, 256, 32, True)])
def test_an_int4_weight_becomes_int8_rows_within_half_a_step(rows, cols, group, q4_0):
    layer, reference = _int4_layer(rows, cols, group, q4_0=q4_0)
    weight, scales = layer.prompt_product.int8_weight(layer)
    assert weight.dtype == torch.int8 and weight.shape == (rows, cols) and scales.shape == (rows,)
    # each row's scale is its largest possible value over 127, so some value of each row reaches +-127
    # or near it, and every value is the reference rounded to the nearest step
    assert weight.abs().amax(1).min() >= 100
    error = (weight.float() * scales[:, None] - reference).abs()
    assert (error <= scales[:, None] * 0.5 + 1e-6).all()


def _int8_layer(rows: int, cols: int, seed: int) -> tuple[Int8Linear, torch.Tensor]:
    qw = quantize_int8(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)))
    layer = Int8Linear(qw, None)
    layer.compute_in(torch.bfloat16)
    if layer.path != "_weight_int8pack_mm":
        pytest.skip("this torch build has no int8 weight kernel")
    _attach(layer)
    return layer, dequantize(qw, torch.float32)


def _rows(count: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)).bfloat16()


def test_a_prompt_through_an_int4_layer_matches_the_float_product():
    layer, reference = _int4_layer(256, 512, 32, seed=3)
    x = _rows(KERNEL_MAX_ROWS + 80, 512, 4).float()
    y = layer(x)
    expected = F.linear(x, reference)
    assert y.dtype == torch.float32 and y.shape == (KERNEL_MAX_ROWS + 80, 256)
    # int8 rows: about 1% of the product's magnitude on Gaussian inputs
    relative = ((y - expected).norm() / expected.norm()).item()
    assert relative < 0.02


def test_a_prompt_through_an_int8_layer_matches_the_float_product():
    layer, weight = _int8_layer(192, 320, seed=7)
    x = _rows(KERNEL_MAX_ROWS + 20, 320, 8).float()
    expected = F.linear(x, weight)
    relative = ((layer(x) - expected).norm() / expected.norm()).item()
    assert relative < 0.02


def test_an_outlier_column_does_not_round_its_rows_away():
    """One column 50 times the others would round every other value of its rows to 0 in int8."""
    layer, reference = _int4_layer(128, 256, 32, seed=9)
    x = _rows(KERNEL_MAX_ROWS + 16, 256, 10).float()
    x[:, 17] *= 50
    y = layer.prompt_product(layer, x.bfloat16()).float()
    expected = F.linear(x.bfloat16().float(), reference)
    assert ((y - expected).norm() / expected.norm()).item() < 0.02
    without_column = F.linear(x.bfloat16().float() * (torch.arange(256) != 17), reference)
    # the rest of the row still counts: the product is not just the outlier column's
    assert ((y - expected).norm() / without_column.norm()).item() < 0.05


def test_values_above_the_int8_range_are_added_back_exactly():
    """Outliers scattered over rows and columns, as in a down projection's input: each row's product
    is its int8 product plus, exactly, what the clamp cut off. So the error is the int8 rounding of
    the rows without the outliers, not the outliers' size (200 x 392: neither a multiple of 16)."""
    layer, weight = _int8_layer(200, 392, seed=11)
    generator = torch.Generator().manual_seed(12)
    x = _rows(KERNEL_MAX_ROWS + 40, 392, 13).float()
    spots = torch.rand(x.shape, generator=generator) < 0.01  # about 4 a row, in most columns
    x[spots] = 300 * torch.sign(torch.randn(int(spots.sum()), generator=generator))
    x = x.bfloat16().float()
    y = layer.prompt_product(layer, x.bfloat16()).float()
    expected = F.linear(x, weight)
    # the same rows without their outliers, through the same product: the error left is theirs
    calm = torch.where(spots, 0.0, x)
    calm_error = (layer.prompt_product(layer, calm.bfloat16()).float() - F.linear(calm, weight)).norm()
    rounding = (expected.bfloat16().float() - expected).norm()  # the bf16 result's own
    assert (y - expected).norm() < 1.5 * calm_error + 1.5 * rounding
    # one scale per row, the outliers' (300 / 127), would round the rest of each row away
    per_row = x.abs().amax(1, keepdim=True) / 127
    assert (F.linear(torch.round(x / per_row) * per_row, weight) - expected).norm() > 10 * calm_error


@pytest.mark.parametrize(("rows", "cols", "chosen"), [(40, 96, [0, 5, 95]), (256, 512, list(range(0, 512, 3)))])
def test_gathered_weight_columns_are_the_columns_transposed(rows, cols, chosen):
    from ragglm.engine.kernels.fused_decode import load_library

    weight = torch.randint(-127, 128, (rows, cols), dtype=torch.int8, generator=torch.Generator().manual_seed(rows))
    columns = torch.tensor(chosen, dtype=torch.int64)
    out = torch.empty(len(chosen), rows, dtype=torch.int8)
    load_library().gather_columns_int8(weight.data_ptr(), rows, cols, columns.data_ptr(), len(chosen), 2,
                                       out.data_ptr())
    assert torch.equal(out, weight[:, columns].t())


def test_a_smaller_layer_after_a_larger_one_reads_its_own_weight():
    big, _ = _int4_layer(256, 512, 32, seed=5)
    small, reference = _int4_layer(64, 256, 32, seed=6)
    small.prompt_product = big.prompt_product  # one scratch buffer for both, as in a model
    big.prompt_product.int8_weight(big)
    weight, scales = small.prompt_product.int8_weight(small)
    assert ((weight.float() * scales[:, None] - reference).abs() <= scales[:, None] * 0.5 + 1e-6).all()


@pytest.mark.parametrize(("rows", "cols"), [(64, 64), (192, 160), (640, 4096)])
def test_native_packing_gives_the_bytes_of_torchs_conversion(rows, cols):
    from ragglm.engine.kernels.int8_prompt_products import native_int4_pack
    from ragglm.engine.linear.quantize import cpu_int4_pack

    qweight = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(rows))
    assert torch.equal(native_int4_pack(qweight), cpu_int4_pack(qweight))


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16])
def test_an_int4_model_prefilled_layer_by_layer_keeps_the_kv_and_logits_of_piece_by_piece(kv_dtype):
    """Layer by layer, pieces share products and (a float16 cache) attend to keys widened once."""
    from ragglm.engine.generate import prefill
    from ragglm.engine.kernels.fused_decode import load_library
    from ragglm.engine.kernels.int8_prompt_products import attach_int8_prompt_products
    from ragglm.engine.linear.packed_linear import use_bf16_linears
    from ragglm.engine.linear.quantize import QuantConfig
    from ragglm.engine.loading.quant_loader import build_quantized
    from ragglm.engine.model import ModelArgs, Transformer

    torch.manual_seed(0)
    args = ModelArgs(vocab_size=320, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=512,
                     max_seq_len=512)
    model = build_quantized(args, dict(Transformer(args).state_dict()), config=QuantConfig("int4", 32))
    use_bf16_linears(model)
    assert attach_int8_prompt_products(model, load_library()) == 9  # four a block, and the head
    model.kv_dtype = kv_dtype
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
        # after a cached first piece: the pieces after it read its keys from the cache
        model.setup_cache(1, 402)
        model(torch.tensor([prompt[:128]]), start=0, last_only=True)
        assert torch.equal(prefill(model, prompt[128:], 128, start=128), by_layer)
        assert all(map(torch.equal, kv_by_layer, kv()))


@pytest.mark.parametrize("batch", [1, 2])
def test_pieces_multiplied_together_come_out_as_each_alone(batch):
    """Large pieces share one product, a small one (the packed kernel's) goes alone; two prompts at
    once go piece by piece."""
    layer, _ = _int8_layer(192, 320, seed=21)
    pieces = [KERNEL_MAX_ROWS + 12, KERNEL_MAX_ROWS - 8, KERNEL_MAX_ROWS + 30, KERNEL_MAX_ROWS + 1]
    x = _rows(batch * sum(pieces), 320, 22).float().view(batch, sum(pieces), 320)
    # the third piece's outlier column holds the fourth piece's largest values, not outliers there:
    # rounded together, the fourth piece's rows would lose them from their scales
    third, fourth = sum(pieces[:2]), sum(pieces[:3])
    x[:, :pieces[0], 5] *= 40
    x[:, third:fourth, 9] *= 40
    x[:, fourth:, 9] = 4.0
    alone = torch.cat([layer(part) for part in x.split(pieces, dim=1)], dim=1)
    assert torch.equal(layer.forward_pieces(x, pieces), alone)
