"""Ruled tables in PDFs come out as table rows under their header, in place of their loose cells."""

from __future__ import annotations

import pytest

from ragglm.connectors.formats import how_read
from ragglm.connectors.pdf import load_pdf
from ragglm.connectors.pdf_tables import PageDrawing
from ragglm.documents import Document
from ragglm.text.chunker import Chunker

pytest.importorskip("pdfplumber")
pytest.importorskip("reportlab")

HEADER = ["Register", "Offset", "Reset", "Description"]
REGISTERS = [[f"R{n:02d}CTL", f"0x{4 * n:03X}", f"0x{n * 37 % 256:02X}", f"Enables channel {n} when bit {n % 8} is set"]
             for n in range(1, 31)]
INTRO = "The controller holds thirty registers. Write them only while the clock is stopped."
AFTER = "Reserved addresses read as zero."


def _register_pdf(path, registers=REGISTERS, pagesize=None, spans=()):
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    styles = getSampleStyleSheet()
    table = Table([HEADER, *registers])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                               *(("SPAN", start, end) for start, end in spans)]))
    story = [Paragraph("Register map", styles["Heading1"]), Paragraph(INTRO, styles["BodyText"]), table,
             Paragraph(AFTER, styles["BodyText"])]
    SimpleDocTemplate(str(path), pagesize=pagesize or A4).build(story)
    return path


def test_a_ruled_register_table_becomes_rows_under_its_header(tmp_path):
    document = load_pdf(_register_pdf(tmp_path / "registers.pdf"))
    [page] = document.pages
    lines = page.text.split("\n")
    header = " | ".join(HEADER)
    rows = [" | ".join(row) for row in REGISTERS]
    assert lines.index(header) + 1 == lines.index(rows[0])
    assert lines[lines.index(rows[0]):lines.index(rows[0]) + len(rows)] == rows
    for name, offset, _, description in REGISTERS:  # each cell once: the loose copy is gone
        assert page.text.count(f"{name} |") == 1 and page.text.count(description) == 1
        assert page.text.count(name) == 1 and page.text.count(offset) >= 1
    assert page.text.index(INTRO) < page.text.index(header) < page.text.index(AFTER)
    assert document.metadata["tables"] == 1 and how_read(document)["tables"] == 1


def test_chunks_of_a_pdf_table_carry_the_header_and_keep_rows_whole(tmp_path):
    document = load_pdf(_register_pdf(tmp_path / "registers.pdf"))
    text = document.pages[0].text
    header = " | ".join(HEADER)
    rows = {" | ".join(row) for row in REGISTERS}
    chunks = Chunker(max_tokens=60).split(document)
    late = [c for c in chunks if " | ".join(REGISTERS[-2]) in c.text]
    assert late and all(header in c.text.split("\n") for c in late)
    assert len([c for c in chunks if rows & set(c.text.split("\n"))]) >= 3  # the table spans chunks
    for chunk in chunks:
        body = text[chunk.start:chunk.end]
        cut = [line for line in body.split("\n") if " | " in line and line not in rows and line != header]
        assert not cut, cut  # no row split between chunks


def test_a_first_column_cell_merged_over_rows_names_each_of_them(tmp_path):
    # R01CTL's cell spans its own row and the next two (bit fields of one register); R04CTL is alone
    registers = [["R01CTL", "0x000", "0x00", "bit 0: enable"], ["", "0x000", "0x00", "bit 1: reset"],
                 ["", "0x000", "0x00", "bit 2: sleep"], ["R04CTL", "0x004", "0x01", "clock divider"],
                 ["R05CTL", "0x008", "", "reserved"]]
    document = load_pdf(_register_pdf(tmp_path / "merged.pdf", registers, spans=[((0, 1), (0, 3))]))
    lines = document.pages[0].text.split("\n")
    assert "R01CTL | 0x000 | 0x00 | bit 2: sleep" in lines and "R01CTL | 0x000 | 0x00 | bit 1: reset" in lines
    assert "R05CTL | 0x008 |  | reserved" in lines  # an empty cell stays empty
    assert sum(line.startswith("R04CTL") for line in lines) == 1


def test_a_table_going_on_over_the_page_keeps_its_header_there(tmp_path):
    registers = [[f"R{n:03d}CTL", f"0x{4 * n:03X}", "0x00", f"Channel {n}"] for n in range(1, 90)]
    document = load_pdf(_register_pdf(tmp_path / "long.pdf", registers))
    assert len(document.pages) >= 2
    header = " | ".join(HEADER)
    for page in document.pages:
        lines = page.text.split("\n")
        table = [line for line in lines if " | " in line]
        assert table and table[0] == header, page.text[:200]
    assert sum(page.text.count("R089CTL") for page in document.pages) == 1


def test_only_a_page_drawing_a_grid_is_searched_for_tables():
    identity = [1, 0, 0, 1, 0, 0]
    frame = PageDrawing()  # a box around a code listing and a rule under the running header
    frame.visit_operator(b"re", [50, 100, 400, 300], identity, identity)
    frame.visit_operator(b"m", [50, 800], identity, identity)
    frame.visit_operator(b"l", [550, 800], identity, identity)
    assert not frame.has_grid()
    grid = PageDrawing()  # two rows by two columns, ruled with lines
    for y in (100, 120, 140):
        grid.visit_operator(b"m", [50, y], identity, identity)
        grid.visit_operator(b"l", [250, y], identity, identity)
    for x in (50, 150, 250):
        grid.visit_operator(b"re", [x, 100, 0.5, 40], identity, identity)
    assert grid.has_grid()
    grid.visit_operator(b"re", ["bad"], identity, identity)  # a malformed operator is ignored
    assert grid.has_grid()


def test_a_pdf_without_rules_keeps_its_text_as_extracted(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "plain.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.drawString(72, 720, "Name   Value")
    pdf.drawString(72, 700, "Speed   fast")
    pdf.save()
    document = load_pdf(path)
    assert " | " not in document.pages[0].text and "Speed" in document.pages[0].text
    assert document.metadata["tables"] == 0
    assert how_read(Document(document.source, document.pages, metadata=document.metadata))["tables"] == 0


def test_past_the_search_budget_a_page_keeps_its_text_as_extracted(tmp_path, monkeypatch):
    from ragglm.connectors import pdf_tables

    monkeypatch.setattr(pdf_tables, "TABLE_BUDGET_S", 0.0)
    document = load_pdf(_register_pdf(tmp_path / "registers.pdf"))
    text = document.pages[0].text
    assert " | " not in text and "\x00" not in text and document.metadata["tables"] == 0
    assert all(name in text for name, *_ in REGISTERS)  # the cells are still there, loose
