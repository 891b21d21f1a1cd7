"""The context a prompt is built from: whole pages rebuilt from the index, or retrieved chunks packed to fit."""

from __future__ import annotations

from collections.abc import Callable

from ragglm.documents import Chunk, Hit

__all__ = ["whole_pages", "pack_hits", "corpus_signature"]


def corpus_signature(store) -> tuple:
    """Changes whenever a source is added, changed or removed."""
    return tuple(sorted((source, entry.get("hash")) for source, entry in store.sources.items()))


def whole_pages(store) -> list[Hit]:
    """One hit per (source, page) with the page's text, rebuilt from its overlapping chunks."""
    pages: dict[tuple[str, int | None], list[Chunk]] = {}
    for source in sorted(store.sources):
        for chunk_id in store.sources[source].get("ids", []):
            chunk = store.chunks.get(chunk_id)
            if chunk is not None:
                pages.setdefault((chunk.source, chunk.page), []).append(chunk)
    hits = []
    for (source, page), chunks in pages.items():
        text = _join(sorted(chunks, key=lambda c: (c.start, c.end)))
        hits.append(Hit(Chunk(text, source, page, 0, len(text)), 1.0))
    return hits


def _body(chunk: Chunk) -> str:
    """The chunk's own span of page text, without the heading the chunker may have put before it."""
    if chunk.heading and chunk.text.startswith(chunk.heading + "\n") and \
            len(chunk.text) - len(chunk.heading) - 1 == chunk.end - chunk.start:
        return chunk.text[len(chunk.heading) + 1:]
    return chunk.text


def _join(chunks: list[Chunk]) -> str:
    """Lay the spans out at their offsets; overlaps are written once, gaps become a line break."""
    parts: list[str] = []
    reached = 0
    for chunk in chunks:
        body = _body(chunk)
        if len(body) != chunk.end - chunk.start:  # spans unknown: keep the text whole
            parts.append(("\n" if parts else "") + body)
            reached = max(reached, chunk.end)
            continue
        if chunk.end <= reached:
            continue
        skip = max(0, reached - chunk.start)
        gap = "\n" if parts and chunk.start > reached else ""
        if parts and chunk.start > reached and chunk.heading and chunk.text != body:
            gap = "\n" + chunk.heading + "\n"
        parts.append(gap + body[skip:])
        reached = chunk.end
    return "".join(parts).strip()


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
