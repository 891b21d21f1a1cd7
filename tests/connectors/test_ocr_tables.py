"""Ruled tables on scanned pages: the grid is found in the image and OCR boxes land in its cells."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ragglm.connectors.ocr_layout import OcrBox, page_text
from ragglm.connectors.ocr_tables import find_ruled_tables

HEADER = ["Register", "Offset", "Reset"]
ROWS = [["CTRL", "0x00", "0x01"], ["STAT", "0x04", "0x00"], ["DATA", "0x08", "0xFF"]]
COLUMNS = (100, 400, 600, 800)  # x of the column rules
RULES = (300, 350, 400, 450, 500)  # y of the row rules


def _grid_page(width: int = 1000, height: int = 900) -> Image.Image:
    """A white page with a 4-row, 3-column ruled table, a paragraph's underline and a boxed note."""
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    for y in RULES:
        draw.line([(COLUMNS[0], y), (COLUMNS[-1], y)], fill=0, width=2)
    for x in COLUMNS:
        draw.line([(x, RULES[0]), (x, RULES[-1])], fill=0, width=2)
    draw.line([(100, 200), (700, 200)], fill=0, width=2)  # an underline: one rule, no table
    draw.rectangle([(100, 650), (800, 750)], outline=0, width=2)  # a boxed note: two rules, no table
    return page


def _cell_boxes() -> list[OcrBox]:
    boxes = []
    for row, cells in enumerate([HEADER, *ROWS]):
        top = RULES[row] + 12
        for column, text in enumerate(cells):
            boxes.append(OcrBox(COLUMNS[column] + 10, top, COLUMNS[column] + 10 + 20 * len(text), top + 24, text))
    return boxes


def test_the_grid_of_a_ruled_table_is_found_and_nothing_else():
    [table] = find_ruled_tables(np.asarray(_grid_page()))
    assert len(table.rows) == len(RULES) and all(abs(a - b) <= 1 for a, b in zip(table.rows, RULES, strict=True))
    assert len(table.columns) == len(COLUMNS)
    assert all(abs(a - b) <= 1 for a, b in zip(table.columns, COLUMNS, strict=True))


def test_boxes_inside_the_grid_become_rows_under_the_header_where_the_table_stands():
    before = OcrBox(100, 150, 700, 175, "The register map of the controller follows.")
    after = OcrBox(100, 560, 700, 585, "Reserved addresses read as zero.")
    # the engine's order is no order: the boxes arrive shuffled
    boxes = [after, *reversed(_cell_boxes()), before]
    tables = find_ruled_tables(np.asarray(_grid_page()))
    lines = page_text(boxes, 1000, tables).split("\n")
    assert lines == [before.text, " | ".join(HEADER), *(" | ".join(row) for row in ROWS), after.text]
    # without the grid the same boxes are read as loose lines, not as rows under a header
    assert " | ".join(HEADER) not in page_text(boxes, 1000)


def test_a_page_without_rules_has_no_table():
    page = Image.new("L", (800, 600), 255)
    ImageDraw.Draw(page).text((50, 50), "Only words here, and no rules.", fill=0)
    assert find_ruled_tables(np.asarray(page)) == []


@pytest.mark.slow
def test_a_scanned_register_table_is_read_as_rows_under_its_header(tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    pytest.importorskip("rapidocr_onnxruntime")
    from ragglm.connectors.ocr import recognise_text
    from tests.connectors.test_pdf_tables import HEADER as PDF_HEADER
    from tests.connectors.test_pdf_tables import REGISTERS, _register_pdf

    pdf = _register_pdf(tmp_path / "registers.pdf", REGISTERS[:6])
    image = pdfium.PdfDocument(str(pdf))[0].render(scale=150 / 72).to_pil().convert("RGB")
    lines = recognise_text(image).split("\n")
    assert " | ".join(PDF_HEADER) in lines
    start = lines.index(" | ".join(PDF_HEADER))
    rows = lines[start + 1:start + 7]
    assert len(rows) == 6 and all(row.count(" | ") == 3 for row in rows), rows
    assert [row.split(" | ")[0] for row in rows] == [r[0] for r in REGISTERS[:6]]
