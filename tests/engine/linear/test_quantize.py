"""The CPU int4 layout written nibble by nibble against torch's own conversion."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.linear.quantize import _int4_values, _pack_int4, cpu_int4_pack

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
