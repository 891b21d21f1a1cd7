"""A long table read from HTML, DOCX, XLSX or a PDF chunks into whole rows, every chunk under its header."""

from __future__ import annotations

import pytest

from ragglm.connectors import load
from ragglm.documents import Document, Page
from ragglm.text.chunker import Chunker, table_rows

HEADER = ["Asset tag", "Device", "Location", "Owner", "Purchased"]
ROWS = [[f"AT-{n:04d}", f"Laptop model {n % 7}", f"Building {n % 5}, room {100 + n}", f"Employee {n}",
         f"2023-{n % 12 + 1:02d}-{n % 28 + 1:02d}"] for n in range(1, 101)]
HEADER_LINE = " | ".join(HEADER)
ROW_LINES = [" | ".join(row) for row in ROWS]


def _html(path):
    cells = "".join(f"<th>{cell}</th>" for cell in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in ROWS)
    path.write_text(f"<html><head><title>Asset register</title></head><body><nav>Home</nav><main>"
                    f"<h1>Asset register</h1><p>Every laptop the company owns, with where it is and who "
                    f"has it. Update the register when a device moves.</p>"
                    f"<table><tr>{cells}</tr>{body}</table></main></body></html>", encoding="utf-8")
    return path


def _docx(path):
    import docx

    document = docx.Document()
    document.add_heading("Asset register", 1)
    document.add_paragraph("Every laptop the company owns, with where it is and who has it.")
    table = document.add_table(rows=1 + len(ROWS), cols=len(HEADER))
    for table_row, row in zip(table.rows, [HEADER, *ROWS], strict=True):
        for cell, text in zip(table_row.cells, row, strict=True):
            cell.text = text
    document.save(path)
    return path


def _xlsx(path):
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Assets"
    for row in [HEADER, *ROWS]:
        sheet.append(row)
    workbook.save(path)
    return path


def _pdf(path):
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    table = Table([HEADER, *ROWS])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
    story = [Paragraph("Every laptop the company owns, with where it is and who has it.",
                       getSampleStyleSheet()["BodyText"]), table]
    SimpleDocTemplate(str(path), pagesize=(842, 2200)).build(story)  # one tall page holds the whole table
    return path


@pytest.mark.parametrize("build", [_html, _docx, _xlsx, _pdf], ids=["html", "docx", "xlsx", "pdf"])
def test_register_chunks_carry_the_header_and_keep_rows_whole(tmp_path, build):
    file = build(tmp_path / f"register.{build.__name__[1:]}")
    [document] = load(file)
    [page] = [p for p in document.pages if HEADER_LINE in p.text]
    text = page.text
    assert all(line in text.split("\n") for line in ROW_LINES)
    chunks = Chunker(max_tokens=80).split(Document(document.source, [page]))
    table_chunks = [c for c in chunks if any(line in c.text for line in ROW_LINES)]
    assert len(table_chunks) >= 5  # the table does not fit one chunk
    seen = set()
    for chunk in table_chunks:
        body = text[chunk.start : chunk.end]
        assert chunk.text.endswith(body)  # the span is the chunk's own text, exactly
        lines = chunk.text.split("\n")
        assert HEADER_LINE in lines
        rows = [line for line in body.split("\n") if " | " in line]
        assert all(row in ROW_LINES or row == HEADER_LINE for row in rows)  # no row cut in two
        seen.update(rows)
    assert seen >= set(ROW_LINES)


def test_the_header_is_carried_after_a_heading_and_spans_stay_exact():
    text = "# Prices\n\nModel | Price | Stock\n" + "\n".join(f"W{n} | {n}.5 | {n * 3}" for n in range(60))
    text += "\n\nPrices include tax. Stock is counted every morning."
    chunks = Chunker(max_tokens=20, overlap_sentences=1).split(Document("p.md", [Page(None, text)]))
    inside = [c for c in chunks if text[c.start : c.end].startswith("W")]
    assert inside
    for chunk in inside:
        body = text[chunk.start : chunk.end]
        assert chunk.text == f"Prices\nModel | Price | Stock\n{body}"
        assert chunk.heading == "Prices"
        assert body.split("\n")[-1] in text.split("\n")  # ends at the end of a row or sentence
    assert chunks[-1].text.endswith("counted every morning.")


def test_table_rows_need_two_consecutive_lines():
    text = "a | b\nc | d\n\nnot a table | alone\n\n  e | f\ng | h  \n"
    assert [[text[s:e] for s, e in rows] for rows in table_rows(text)] == [["a | b", "c | d"],
                                                                           ["e | f", "g | h"]]


def test_a_generated_line_of_cells_is_still_cut_within_the_budget():
    text = "h1 | h2\n" + " | ".join(f"cell{n}" for n in range(2000)) + "\nx | y"
    chunks = Chunker(max_tokens=50).split(Document("g.txt", [Page(None, text)]))
    assert max(c.end - c.start for c in chunks) < len(text) // 4
