"""ChatGLM-6B's prompt layout: 2D rotary positions and the prefix-LM attention mask.

The prompt is context, then `<sop>` (the config's `bos_token_id`) and the answer. Context tokens see
each other both ways; from `<sop>` on, tokens see what came before them. Each token has two
positions: the first counts up to the `[gMASK]` (or `[MASK]`) token and then stays at its index
for `<sop>` and every generated token; the second, the block position, is 0 in the context and
1, 2, 3 ... from `<sop>` on. Each head's first half rotates by the first, its second half by the
second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PromptLayout", "positions_2d", "prefix_lm_mask", "rope_tables_2d"]


@dataclass(frozen=True)
class PromptLayout:
    context_length: int  # tokens before <sop>: they attend both ways
    mask_position: int | None  # index of [gMASK] / [MASK]: the first position of <sop> and what follows

    @classmethod
    def of(cls, ids: Sequence[int], sop_id: int | None, gmask_id: int | None, mask_id: int | None) -> PromptLayout:
        """The layout of a prompt. Without <sop> the whole prompt is context (the next token plays
        <sop>'s part); without [gMASK] or [MASK] the first positions keep counting, as the original
        tokenizer's positions do."""
        ids = list(ids)
        context = ids.index(sop_id) if sop_id in ids else len(ids)
        for marker in (gmask_id, mask_id):  # [gMASK] wins when both are present, as in the original
            if marker is not None and marker in ids:
                return cls(context, ids.index(marker))
        return cls(context, None)


def positions_2d(layouts: Sequence[PromptLayout], start: int, length: int, device) -> tuple[Tensor, Tensor]:
    """(positions, block positions), each [B, length], of the tokens at indexes start..start+length-1."""
    index = torch.arange(start, start + length, device=device)
    positions, blocks = [], []
    for layout in layouts:
        answer = index >= layout.context_length
        fixed = index if layout.mask_position is None else layout.mask_position
        positions.append(torch.where(answer, fixed, index))
        blocks.append(torch.where(answer, index - layout.context_length + 1, 0))
    return torch.stack(positions), torch.stack(blocks)


def prefix_lm_mask(layouts: Sequence[PromptLayout], start: int, length: int, prefix: int, device) -> Tensor:
    """[B, 1, length, prefix + start + length] boolean: True where a query sees a key.

    The first `prefix` keys (a P-Tuning prefix) are seen by every query; a query sees every
    context key and, past the context, every key up to its own index.
    """
    keys = torch.arange(start + length, device=device)
    queries = torch.arange(start, start + length, device=device)
    masks = []
    for layout in layouts:
        seen = (keys[None, :] <= queries[:, None]) | (keys[None, :] < layout.context_length)
        masks.append(seen)
    mask = torch.stack(masks)[:, None]  # [B, 1, T, S]
    if prefix:
        mask = torch.cat((mask.new_ones(*mask.shape[:-1], prefix), mask), dim=-1)
    return mask


def rope_tables_2d(head_dim: int, theta: float, positions: Tensor, dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [len(positions), head_dim // 4] for one half of a head (rotate-half pairs).

    The frequencies are rounded to float16 first: the original code keeps them in a float16 buffer,
    so that is what the checkpoints were trained with.
    """
    quarter = head_dim // 4
    exponents = torch.arange(0, quarter, device=positions.device, dtype=torch.float32) / quarter
    inv_freq = (1.0 / theta ** exponents).half().float()
    angles = torch.outer(positions.float(), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)
