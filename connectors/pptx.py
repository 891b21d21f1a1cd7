"""PowerPoint .pptx decks: each slide a page with its title as a heading, text boxes paragraph by
paragraph, tables row by row ("a | b | c"), and the speaker notes last."""

from __future__ import annotations

import io
from pathlib import Path

from ragglm.connectors.ooxml import load_package
from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["MAX_GROUP_DEPTH", "MAX_SHAPES", "MAX_SLIDES", "load_pptx"]

# Far above real decks: a crafted file fails (or, for groups, stops descending) here instead of
# costing minutes.
MAX_SLIDES = 5_000
MAX_SHAPES = 200_000
MAX_GROUP_DEPTH = 16


def load_pptx(path: Path | str, data: bytes | None = None) -> Document:
    try:
        from lxml.etree import XMLSyntaxError
        from pptx.exc import PythonPptxError
    except ImportError as exc:
        raise SourceError(str(path), "reading .pptx needs python-pptx", "pip install python-pptx") from exc
    return load_package(path, data, ".pptx", "ppt/presentation.xml", _read, (PythonPptxError, XMLSyntaxError))


def _read(source: str, data: bytes, names: list[str]) -> tuple[list[Page], str]:
    import pptx

    slides = sum(1 for name in names if name.startswith("ppt/slides/slide") and name.endswith(".xml"))
    if slides > MAX_SLIDES:
        raise SourceError(source, f"has {slides} slides, more than the {MAX_SLIDES} ragglm reads",
                          "split it into smaller decks")
    deck = pptx.Presentation(io.BytesIO(data))
    counter = [0]
    pages = [Page(number, "\n".join(_slide_lines(source, slide, counter)))
             for number, slide in enumerate(deck.slides, 1)]
    return pages, deck.core_properties.title or ""


def _slide_lines(source: str, slide, counter: list[int]) -> list[str]:
    title = slide.shapes.title
    lines = [f"# {_fold(title.text_frame.text)}"] if title is not None and title.text_frame.text.strip() else []
    for shape in _shapes(slide.shapes, 0):
        counter[0] += 1
        if counter[0] > MAX_SHAPES:
            raise SourceError(source, f"has more than the {MAX_SHAPES} shapes ragglm reads",
                              "split it into smaller decks")
        if title is not None and shape.shape_id == title.shape_id:
            continue
        if shape.has_text_frame:
            lines.extend(_fold(p.text) for p in shape.text_frame.paragraphs if p.text.strip())
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                lines.append(" | ".join(_fold(cell.text).replace("|", "/") for cell in row.cells))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = [_fold(p.text) for p in slide.notes_slide.notes_text_frame.paragraphs if p.text.strip()]
        if notes:
            lines.append("Notes: " + notes[0])
            lines.extend(notes[1:])
    return lines


def _shapes(shapes, depth: int):
    """Shapes in slide order, those inside groups where the group stands."""
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            if depth < MAX_GROUP_DEPTH:
                yield from _shapes(shape.shapes, depth + 1)
        else:
            yield shape


def _fold(text: str) -> str:
    return " ".join(text.split())
