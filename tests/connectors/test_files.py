"""Text encodings, .docx, HTML files, folder walks, and PDFs that cannot be read."""

from __future__ import annotations

import io
import os

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from ragglm.connectors import collect, load, load_many
from ragglm.connectors.pdf import load_pdf
from ragglm.connectors.pdf_cleanup import clean_pages
from ragglm.errors import SourceError

SENTENCE = "滤芯每六个月更换一次；“滤芯”指示灯变红时请立即更换。"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_text_in_every_common_encoding(tmp_path, encoding):
    file = tmp_path / f"notes-{encoding}.md"
    file.write_bytes(f"# 维护说明\r\n\r\n{SENTENCE}\r\n".encode(encoding))
    [document] = load(file)
    assert document.title == "维护说明"
    assert document.pages[0].text == f"# 维护说明\n\n{SENTENCE}"
    assert document.pages[0].number is None


def test_gb18030_only_characters(tmp_path):
    text = "扩展汉字𠀀与欧元符号€都能读出。"  # 𠀀 is outside GBK: only GB18030 encodes it
    file = tmp_path / "rare.txt"
    file.write_bytes(text.encode("gb18030"))
    assert load(file)[0].text == text


def test_docx_paragraphs_headings_and_table_rows(tmp_path):
    import docx

    document = docx.Document()
    document.core_properties.title = "保修手册"
    document.add_heading("Warranty", level=1)
    document.add_paragraph("The AquaPure W3 is covered for two years from the date of purchase.")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Part", "Months"), ("Pump", "24")], strict=True):
        for cell, value in zip(row.cells, cells, strict=True):
            cell.text = value
    document.add_paragraph("滤芯不在保修范围内。")
    file = tmp_path / "warranty.docx"
    document.save(file)
    [loaded] = load(file)
    assert loaded.title == "保修手册"
    assert loaded.pages[0].text.split("\n") == [
        "# Warranty", "The AquaPure W3 is covered for two years from the date of purchase.",
        "Part | Months", "Pump | 24", "滤芯不在保修范围内。"]


def test_broken_docx_names_the_file(tmp_path):
    file = tmp_path / "broken.docx"
    file.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match=r"broken\.docx: not a readable \.docx file"):
        load(file)


def test_saved_gbk_html_file(tmp_path):
    file = tmp_path / "faq.htm"
    file.write_bytes('<html><head><meta charset="gbk"><title>常见问题</title></head><body><nav>导航</nav>'
                     '<p>重置路由器：按住RESET键10秒。</p></body></html>'.encode("gbk"))
    [document] = load(file)
    assert document.title == "常见问题"
    assert "重置路由器：按住RESET键10秒。" in document.text and "导航" not in document.text


def test_folder_walk_globs_hidden_binary_and_symlink_loops(tmp_path):
    (tmp_path / "guide.md").write_text("# Guide\n\nUse the blue cable.", encoding="utf-8")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "draft.md").write_text("# Draft\n\nNot final.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "faq.txt").write_text("Reset with the pin.", encoding="utf-8")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / ".secret.md").write_text("hidden", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.txt").write_text("hidden folder", encoding="utf-8")
    (tmp_path / "photo.psd").write_bytes(b"8BPS\0\1\0\0")  # a format ragglm does not read
    (tmp_path / "dump.txt").write_bytes(b"binary\0\0\0data")

    found = collect([tmp_path])
    names = [f.relative_to(tmp_path).as_posix() for f in found.files]
    assert names == ["guide.md", "drafts/draft.md", "sub/faq.txt"]  # the loop is walked once
    notes = " ".join(found.notes)
    assert "skipped 2 hidden" in notes and ".secret.md" in notes and ".git/" in notes
    assert "skipped 2 binary or unsupported" in notes and "photo.psd" in notes and "dump.txt" in notes

    excluded = collect([tmp_path], exclude=["drafts"])
    assert [f.name for f in excluded.files] == ["guide.md", "faq.txt"]
    included = collect([tmp_path], include=["*.txt"])
    assert [f.name for f in included.files] == ["faq.txt"]


def test_missing_and_unsupported_paths_are_errors(tmp_path):
    (tmp_path / "data.xyz").write_text("x", encoding="utf-8")
    found = collect([tmp_path / "nowhere", tmp_path / "data.xyz"])
    assert [str(e) for e in found.errors] == [
        f"{tmp_path / 'nowhere'}: no such file or folder (check the path)",
        f"{tmp_path / 'data.xyz'}: unsupported file type (ragglm reads .bmp, .docx, .htm, .html, .jpeg, .jpg, "
        ".markdown, .md, .pdf, .png, .pptx, .text, .tif, .tiff, .txt, .webp, .xlsx)"]


def _pdf(pages: list[list[str]], header: str | None = None, image_pages: tuple[int, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    page_canvas = canvas.Canvas(buffer, pagesize=A4)
    for number, lines in enumerate(pages, 1):
        if header:
            page_canvas.setFont("Helvetica", 9)
            page_canvas.drawString(72, 800, header)
            page_canvas.drawString(290, 40, f"- {number} -")
        page_canvas.setFont("Helvetica", 11)
        for row, line in enumerate(lines):
            page_canvas.drawString(72, 760 - 16 * row, line)
        if number in image_pages:
            page_canvas.setFillGray(0.5)
            from PIL import Image
            from reportlab.lib.utils import ImageReader

            picture = io.BytesIO()
            Image.new("RGB", (40, 40), (120, 120, 120)).save(picture, format="PNG")
            page_canvas.drawImage(ImageReader(io.BytesIO(picture.getvalue())), 72, 400, 200, 200)
        page_canvas.showPage()
    page_canvas.save()
    return buffer.getvalue()


WORDS = ["alpha", "bravo", "charlie"]


def _body(word: str) -> list[str]:
    return [
        f"The {word} unit: replace the filter cartridge every twelve months, or earlier when the light turns",
        "red. Use only original cartridges; third-party cartridges may void the warranty and reduce perfor-",
        "mance of the membrane over time, which the manufacturer cannot guarantee in any such case.",
        "Model  Flow  Pressure",
        f"{word.upper()}  1.2  2.5",
        f"End of the {word} section.",
    ]


def test_pdf_headers_footers_hyphenation_and_table_rows(tmp_path):
    file = tmp_path / "manual.pdf"
    file.write_bytes(_pdf([_body(word) for word in WORDS], header="AquaPure W3 Service Manual"))
    document = load_pdf(file)
    assert [p.number for p in document.pages] == [1, 2, 3]
    text = document.pages[1].text
    assert "AquaPure W3 Service Manual" not in text and "- 2 -" not in text
    assert text.startswith("The bravo unit: replace the filter cartridge every twelve months, or earlier "
                           "when the light turns red.")
    assert "reduce performance of the membrane" in text
    assert "\nModel  Flow  Pressure\nBRAVO  1.2  2.5\nEnd of the bravo section." in text


def test_clean_pages_joins_chinese_wraps_without_spaces():
    raw = ["产品手册 第1页\n本产品的滤芯需要每六个月更换一次，指示灯变红\n时请立即更换滤芯。\n型号 流量\nW3 1.2",
           "产品手册 第2页\n第二页的正文内容比较短。\n型号 流量"]
    cleaned = clean_pages(raw)
    assert cleaned[0] == "本产品的滤芯需要每六个月更换一次，指示灯变红时请立即更换滤芯。\n型号 流量\nW3 1.2"
    assert cleaned[1].startswith("第二页的正文内容比较短。")


def test_pages_without_text_layer_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGGLM_OCR", "never")  # with OCR on, tests/connectors/test_ocr.py
    file = tmp_path / "scan.pdf"
    file.write_bytes(_pdf([["A page with a text layer."], []], image_pages=(2,)))
    document = load_pdf(file)
    assert document.metadata["pages_without_text"] == [2]
    assert "page(s) 2 have no text layer (scanned image)" in document.metadata["notes"][0]
    assert "--ocr auto" in document.metadata["notes"][0]

    only_scans = tmp_path / "all-scan.pdf"
    only_scans.write_bytes(_pdf([[], []], image_pages=(1, 2)))
    with pytest.raises(SourceError, match=r"all-scan\.pdf: no text layer on any of its 2 page\(s\) "
                                          r"\(scanned images\) and OCR is off \(read it with --ocr auto"):
        load_pdf(only_scans)


def test_password_truncated_and_garbage_pdfs_name_the_file_and_the_fix(tmp_path):
    from pypdf import PdfReader, PdfWriter

    good = _pdf([["Secret maintenance codes."]])
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(good)))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as handle:
        writer.write(handle)
    with pytest.raises(SourceError, match=r"locked\.pdf: the PDF is protected by a password \(remove the"):
        load_pdf(locked)

    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(SourceError, match=r"truncated\.pdf: the PDF is truncated .*download or export"):
        load_pdf(truncated)

    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"<html>an error page saved as pdf</html>")
    with pytest.raises(SourceError, match=r"garbage\.pdf: not a PDF file"):
        load_pdf(garbage)


def test_parallel_parsing_keeps_order(tmp_path):
    for index in range(5):
        (tmp_path / f"{index}.md").write_text(f"# Part {index}\n\nText {index}.", encoding="utf-8")
    (tmp_path / "4.pdf").write_bytes(_pdf([["PDF page text."]]))
    serial = load_many([tmp_path], workers=1).documents
    parallel = load_many([tmp_path], workers=2).documents
    assert [d.source for d in parallel] == [d.source for d in serial] == sorted(
        str(tmp_path / n) for n in os.listdir(tmp_path))
    assert [d.text for d in parallel] == [d.text for d in serial]
