"""int4 layers: the CPU layout written nibble by nibble against torch's own conversion, and Q4_0-style
weights kept as float16 scales alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragglm.engine.linear.quantize import (
    Int4Linear,
    QuantizedWeight,
    _int4_values,
    _pack_int4,
    cpu_int4_pack,
    dequantize,
    quantize_int4,
)

pytestmark = pytest.mark.skipif(not hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"),
                                reason="this torch build has no CPU int4 kernel")


@pytest.mark.parametrize(("rows", "cols"), [(64, 64), (192, 96), (640, 4096), (4160, 128)])
def test_nibble_packing_gives_the_bytes_of_torchs_conversion(rows, cols):
    generator = torch.Generator().manual_seed(rows + cols)
    qweight = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=generator)
    expected = _pack_int4(_int4_values(qweight), "cpu")
    packed = cpu_int4_pack(qweight)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, cols // 2)
    assert torch.equal(packed, expected.view(packed.shape))


def test_a_weight_that_is_a_view_packs_like_its_copy():
    qweight = torch.randint(0, 256, (128, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cpu_int4_pack(qweight[:, :32]), cpu_int4_pack(qweight[:, :32].contiguous()))


@pytest.mark.parametrize("rows", [1, 8, 100])
def test_q4_0_style_weights_keep_their_float16_scales_alone_and_multiply_like_the_dequantized_weight(rows):
    generator = torch.Generator().manual_seed(rows)
    qw = quantize_int4(torch.randn(128, 256, generator=generator), 32)
    # GGUF's Q4_0: w = (q - 8) * d with d a float16, so no zeros and scales float16 holds
    qw = QuantizedWeight("int4", qw.qweight, qw.scales.half().float(), torch.zeros_like(qw.zeros), 32)
    layer = Int4Linear(qw, None)
    if not layer._cpu_layout:
        pytest.skip("this torch build has no CPU int4 kernel layout")
    assert layer.scales_and_zeros is None
    assert layer.group_scales.dtype == torch.float16 and layer.group_scales.shape == (128 // 64, 256 // 32, 64)
    assert torch.equal(layer.kernel_scales(torch.float32)[..., 0].t(), qw.scales)  # the file's scales to the bit
    x = torch.randn(rows, 256, generator=generator)
    expected = F.linear(x, dequantize(qw))
    # PyTorch's kernel takes x in float32 here and keeps the scales exact
    assert torch.allclose(layer(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_scales_that_float16_would_round_keep_the_scale_and_zero_pairs():
    qw = quantize_int4(torch.randn(64, 64, generator=torch.Generator().manual_seed(5)), 32)
    qw = QuantizedWeight("int4", qw.qweight, qw.scales, torch.zeros_like(qw.zeros), 32)  # float32 scales
    layer = Int4Linear(qw, None)
    if not layer._cpu_layout:
        pytest.skip("this torch build has no CPU int4 kernel layout")
    assert layer.group_scales is None and layer.scales_and_zeros is not None
