"""Reading order of OCR boxes: columns, table rows, Chinese without spaces; spaces restored in Latin lines."""

from __future__ import annotations

import numpy as np

from ragglm.connectors.ocr import word_spaces
from ragglm.connectors.ocr_layout import OcrBox, page_text


def _column(x0: float, lines: list[str], top: float = 100, pitch: float = 30) -> list[OcrBox]:
    return [OcrBox(x0, top + i * pitch, x0 + 400, top + i * pitch + 20, text) for i, text in enumerate(lines)]


def test_two_columns_are_read_left_column_first_under_a_full_width_title():
    left = [f"left column sentence number {i} goes on and on" for i in range(5)]
    right = [f"right column sentence number {i} goes on and on" for i in range(5)]
    boxes = [OcrBox(50, 20, 850, 45, "A title across the page")]
    # the right column's lines sit half a line lower: rows do not pair up across the gutter
    boxes += _column(450, right, top=115) + _column(0, left)
    lines = page_text(boxes, 900).split("\n")
    assert lines[0] == "A title across the page"
    assert " ".join(lines[1:]) == " ".join(left + right)


def test_table_cells_on_one_row_are_read_row_by_row():
    names, values = ["E1", "E2", "E3", "E4"], ["low pressure", "leak", "filter expired", "overheat"]
    boxes = [OcrBox(0, 100 + 30 * i, 60, 120 + 30 * i, n) for i, n in enumerate(names)]
    boxes += [OcrBox(300, 101 + 30 * i, 500, 121 + 30 * i, v) for i, v in enumerate(values)]
    assert page_text(list(reversed(boxes)), 600).split("\n") == [f"{n} {v}" for n, v in zip(names, values, strict=True)]


def test_chinese_is_joined_without_spaces_and_latin_keeps_them():
    boxes = [OcrBox(0, 0, 200, 20, "烧 录固 件时"), OcrBox(210, 0, 400, 20, "需要 使用 WCH-Link 工具")]
    assert page_text(boxes) == "烧录固件时需要使用 WCH-Link 工具"
    cells = [OcrBox(0, 0, 80, 20, "功能描述"), OcrBox(200, 0, 400, 20, "初始化系统")]  # far apart: two cells
    assert page_text(cells) == "功能描述 初始化系统"


def test_chinese_prose_wrapped_before_a_number_or_a_quote_is_one_line():
    lines = ["汉塞克第一次被叫上大联盟。汉塞克完成了他在大联盟的首次亮相，9月", "23日，汉塞克第二次先发。"]
    boxes = [OcrBox(0, 30 * i, 20 * len(text), 30 * i + 20, text) for i, text in enumerate(lines)]
    assert page_text(boxes) == "汉塞克第一次被叫上大联盟。汉塞克完成了他在大联盟的首次亮相，9月23日，汉塞克第二次先发。"


def test_a_page_number_beside_the_body_is_not_a_column():
    body = _column(0, [f"body line {i} of the page text here" for i in range(6)])
    boxes = body + [OcrBox(800, 100, 830, 120, "7")]
    assert page_text(boxes, 900).startswith("body line 0 of the page text here 7 body line 1")


def test_word_spaces_are_put_where_the_line_image_is_blank():
    # "ab cd" drawn as ink blocks 10 px wide; the model output steps put each letter on its block
    height, text = 20, "abcd"
    line = np.full((height, 60, 3), 255, dtype=np.uint8)
    for x0 in (0, 12, 32, 44):  # 2 px between letters, 8 px (0.4 of the height) between words
        line[4:16, x0:x0 + 10] = 0
    resized = int(48 * 60 / 20)  # 144 px at the model's height: 18 steps of 8 px, 2.4 steps per 10 px
    steps = [int((x0 + 5) * resized / 60 / 8) for x0 in (0, 12, 32, 44)]
    columns = [resized // 8, [list(text)], [steps], ["en&num"], [1.0] * 4]
    assert word_spaces(text, columns, line) == "ab cd"
    assert word_spaces("1234", columns, line) == "12 34"  # 0.4 of the height is past the digits' gap too
