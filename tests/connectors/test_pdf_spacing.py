"""Chinese spread apart on the page: spaces that extraction puts inside words are removed, cell gaps kept."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from ragglm.connectors.pdf import load_pdf
from ragglm.connectors.pdf_spacing import join_tight_pairs, spaced_pages

pytest.importorskip("pypdfium2")


def _hex(text: str) -> str:
    return "<" + text.encode("utf-16-be").hex().upper() + ">"


def _spaced_pdf() -> bytes:
    """A justified line whose glyph groups are pushed 0.35 em apart (as pypdf reads it: 烧 录固 件时 ...)
    above a table row whose cells stand 6 em apart, in reportlab's built-in Chinese font."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    out = io.BytesIO()
    page = canvas.Canvas(out)
    text = page.beginText(72, 700)
    text.setFont("STSong-Light", 12)
    # TJ arrays: strings and displacements in thousandths of an em, as typesetters write justified text
    text._code.append("[" + " -350 ".join(_hex(g) for g in ["烧", "录固", "件时", "需要", "使用", "下载", "工具"]) + "] TJ")
    text.setTextOrigin(72, 680)
    text._code.append("[" + " -6000 ".join(_hex(g) for g in ["型号", "电压", "电流"]) + "] TJ")
    text.setTextOrigin(72, 660)
    text.textOut("第一章 概述")  # a space typed in the text stays
    page.drawText(text)
    page.save()
    return out.getvalue()


def test_spaced_chinese_is_joined_where_the_layout_shows_one_word(tmp_path):
    path = tmp_path / "spaced.pdf"
    path.write_bytes(_spaced_pdf())
    assert "烧 录固 件时 需要 使用" in PdfReader(path).pages[0].extract_text()  # the pattern, reproduced
    text = load_pdf(path).pages[0].text
    assert "烧录固件时需要使用下载工具" in text
    assert "型号 电压 电流" in text and "第一章 概述" in text


def test_only_pages_with_several_gaps_are_checked_and_only_given_pairs_join():
    assert spaced_pages(["第一章 概述", "烧 录固 件时 需要", "plain English text"]) == [1]
    assert join_tight_pairs("烧 录固 件时 型号 电压", {("烧", "录"), ("固", "件")}) == "烧录固件时 型号 电压"
