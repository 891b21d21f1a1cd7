""".xlsx workbooks and .pptx decks built in the test: pages, rows, notes, bounds and broken files."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from ragglm.connectors import load, ooxml, pptx, xlsx
from ragglm.connectors.formats import parse
from ragglm.errors import SourceError


def _workbook(path):
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Devices"
    sheet.append(["Model", "Flow (L/min)", "Released", "Note"])
    sheet.append(["W3", 1.2, dt.datetime(2023, 5, 1), "line one\nline two"])
    sheet.append(["W5", 2, None, None])
    sheet.append([])
    sheet.append(["S2", 0.75, dt.date(2024, 1, 9), "a | b"])
    workbook.create_sheet("Empty")
    prices = workbook.create_sheet("Prices")
    prices.append(["Model", "Price"])
    prices.append(["W3", "=1+1"])
    workbook.properties.title = "Device register"
    workbook.save(path)
    return path


def test_xlsx_sheets_are_pages_of_table_rows(tmp_path):
    [document] = load(_workbook(tmp_path / "register.xlsx"))
    assert document.title == "Device register"
    assert [page.number for page in document.pages] == [1, 3]  # the empty sheet is no page
    assert document.pages[0].text.split("\n") == [
        "# Devices",
        "Model | Flow (L/min) | Released | Note",
        "W3 | 1.2 | 2023-05-01 | line one line two",
        "W5 | 2",
        "S2 | 0.75 | 2024-01-09 | a / b",
    ]
    assert document.pages[1].text.split("\n")[:2] == ["# Prices", "Model | Price"]


def test_xlsx_from_a_url_is_read_by_its_content_type(tmp_path):
    data = _workbook(tmp_path / "r.xlsx").read_bytes()
    document = parse("https://example.com/download?id=7", data,
                     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert "W3 | 1.2" in document.pages[0].text


def test_corrupt_xlsx_is_a_clear_error_for_that_file(tmp_path):
    good = _workbook(tmp_path / "good.xlsx")
    (tmp_path / "truncated.xlsx").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "text.xlsx").write_text("not a workbook", encoding="utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a zip, but not a workbook
        archive.writestr("hello.txt", "hi")
    (tmp_path / "other.xlsx").write_bytes(buffer.getvalue())
    for name in ("truncated.xlsx", "text.xlsx", "other.xlsx"):
        with pytest.raises(SourceError, match=rf"{name}: not a readable \.xlsx file .*save it again as \.xlsx"):
            load(tmp_path / name)
    from ragglm.connectors import load_many

    report = load_many([tmp_path])
    assert [d.source for d in report.documents] == [str(good)]
    assert sorted(e.source.rsplit("/", 1)[-1] for e in report.errors) == ["other.xlsx", "text.xlsx",
                                                                           "truncated.xlsx"]


def test_xlsx_bounds(tmp_path, monkeypatch):
    file = _workbook(tmp_path / "big.xlsx")
    monkeypatch.setattr(xlsx, "MAX_CELLS", 10)  # patched here, so read here rather than in a parser process
    with pytest.raises(SourceError, match=r"more than the 10 cells ragglm reads"):
        parse(str(file), file.read_bytes())
    monkeypatch.setattr(ooxml, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(SourceError, match=r"unpacks to .* more than ragglm reads"):
        parse(str(file), file.read_bytes())


def _deck(path, slides: int = 2):
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for number in range(1, slides + 1):
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = f"Quarter {number} results"
        box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1)).text_frame
        box.text = "Revenue grew 12%"
        box.add_paragraph().text = "Churn   fell\tto 3%"
        group = slide.shapes.add_group_shape()
        group.shapes.add_textbox(Inches(1), Inches(4), Inches(2), Inches(1)).text_frame.text = "Grouped note"
        table = slide.shapes.add_table(2, 3, Inches(1), Inches(5), Inches(6), Inches(1)).table
        for r, row in enumerate([["Region", "Sales", "Growth"], ["North", "120", "8%"]]):
            for c, text in enumerate(row):
                table.cell(r, c).text = text
        slide.notes_slide.notes_text_frame.text = f"Mention the hiring plan.\nSlide {number} only."
    deck.core_properties.title = "Results deck"
    deck.save(path)
    return path


def test_pptx_slides_are_pages_with_notes(tmp_path):
    [document] = load(_deck(tmp_path / "results.pptx"))
    assert document.title == "Results deck"
    assert [page.number for page in document.pages] == [1, 2]
    assert document.pages[1].text.split("\n") == [
        "# Quarter 2 results",
        "Revenue grew 12%",
        "Churn fell to 3%",
        "Grouped note",
        "Region | Sales | Growth",
        "North | 120 | 8%",
        "Notes: Mention the hiring plan.",
        "Slide 2 only.",
    ]


def test_pptx_bounds_and_broken_files(tmp_path, monkeypatch):
    file = _deck(tmp_path / "deck.pptx", slides=3)
    monkeypatch.setattr(pptx, "MAX_SLIDES", 2)  # patched here, so read here rather than in a parser process
    with pytest.raises(SourceError, match=r"has 3 slides, more than the 2 ragglm reads"):
        parse(str(file), file.read_bytes())
    monkeypatch.setattr(pptx, "MAX_SLIDES", 5_000)
    monkeypatch.setattr(pptx, "MAX_SHAPES", 5)
    with pytest.raises(SourceError, match=r"more than the 5 shapes"):
        parse(str(file), file.read_bytes())
    (tmp_path / "broken.pptx").write_bytes(file.read_bytes()[:3000])
    with pytest.raises(SourceError, match=r"broken\.pptx: not a readable \.pptx file .*PowerPoint"):
        load(tmp_path / "broken.pptx")
