"""Weights moved into one buffer on transparent huge pages."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from ragglm.engine.kernels.huge_pages import (
    HUGE_PAGE,
    huge_page_buffer,
    huge_pages_available,
    move_into_huge_pages,
)

needs_huge_pages = pytest.mark.skipif(not huge_pages_available(), reason="no transparent huge pages here")


def mapping_of(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping that holds address."""
    fields, inside = {}, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            low, high = (int(part, 16) for part in head.split("-"))
            if inside:
                break
            inside = low <= address < high
        elif inside:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


@needs_huge_pages
def test_the_buffer_is_aligned_zeroed_and_eligible_for_huge_pages():
    buffer = huge_page_buffer(3 * HUGE_PAGE + 5)
    assert buffer.dtype == torch.uint8 and buffer.numel() == 3 * HUGE_PAGE + 5
    assert buffer.data_ptr() % HUGE_PAGE == 0
    assert not buffer.any()
    buffer[-1] = 7
    assert int(buffer[-1]) == 7
    # private anonymous memory: shared mappings are shmem, which THP leaves alone under "madvise"
    fields = mapping_of(buffer.data_ptr())
    assert fields.get("THPeligible", "1") == "1"


@needs_huge_pages
def test_tensors_move_end_to_end_in_order_and_the_originals_are_released():
    modules = [nn.Module() for _ in range(3)]
    shapes = [(5, 7), (4, 16), (3,)]
    for module, shape in zip(modules, shapes, strict=True):
        module.register_buffer("weight", torch.randn(shape).to(torch.bfloat16))
    before = [module.weight.clone() for module in modules]
    originals = [weakref.ref(module.weight) for module in modules]

    buffer = move_into_huge_pages([(module, "weight") for module in modules])

    moved = [module.weight for module in modules]
    assert all(torch.equal(a, b) for a, b in zip(moved, before, strict=True))
    assert all(ref() is None for ref in originals)
    starts = [tensor.data_ptr() for tensor in moved]
    assert starts[0] == buffer.data_ptr() and starts == sorted(starts)
    assert all(start % 64 == 0 for start in starts)
    assert all(tensor.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr() for tensor in moved)
    # the buffer holds exactly the three tensors, each padded to a cache line
    assert buffer.numel() == 128 + 128 + 64
