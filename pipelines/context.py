"""Retrieved chunks packed to fit the room a prompt has for sources."""

from __future__ import annotations

from collections.abc import Callable

from ragglm.documents import Hit

__all__ = ["pack_hits"]


def pack_hits(hits: list[Hit], budget_tokens: int, count_tokens: Callable[[str], int],
              per_source_overhead: int = 12) -> tuple[list[Hit], int]:
    """The leading hits whose texts fit the budget, and the tokens they use."""
    packed, used = [], 0
    for hit in hits:
        cost = count_tokens(hit.text) + per_source_overhead
        if used + cost > budget_tokens:
            break
        packed.append(hit)
        used += cost
    return packed, used
