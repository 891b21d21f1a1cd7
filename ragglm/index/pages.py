"""Whole pages rebuilt from their overlapping chunks, for prompts that take the documents whole."""

from __future__ import annotations

from collections.abc import Iterable

from ragglm.documents import Chunk, Hit

__all__ = ["rebuild_pages"]


def rebuild_pages(chunks: Iterable[Chunk]) -> list[Hit]:
    """One hit per (source, page) with the page's text, in the order the chunks come."""
    pages: dict[tuple[str, int | None], list[Chunk]] = {}
    for chunk in chunks:
        pages.setdefault((chunk.source, chunk.page), []).append(chunk)
    hits = []
    for (source, page), members in pages.items():
        text = _join(sorted(members, key=lambda c: (c.start, c.end)))
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
