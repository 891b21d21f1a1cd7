"""Join Chinese characters that a PDF's text extraction split with spaces ("烧 录固 件时" for 烧录固件时).

A justified or letter-spaced line stores its glyphs in groups pushed apart by small displacements;
text extraction turns each displacement into a space. Whether a space between two CJK characters
is such a gap or a real separation (a table cell, a space typed in the text) is read from the page's
own layout: pdfium tells which spaces it generated from a displacement rather than found in the
text, and where each glyph sits. A generated space narrower than one character between two CJK
glyphs joins them; the pairs found so on a page are then joined in its extracted text.
"""

from __future__ import annotations

import re

from ragglm.connectors.pdf_cleanup import is_cjk

__all__ = ["join_tight_pairs", "spaced_pages", "tight_pairs"]

_CJK_GAP = re.compile(r"(?<=[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]) (?=[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
_MIN_GAPS = 3  # pages with fewer spaces between CJK characters are left as they are
_TIGHT = 1.0  # a gap under this many character heights is letter spacing, not a separation


def spaced_pages(texts: list[str]) -> list[int]:
    """0-based indices of pages whose text has spaces between CJK characters often enough to check."""
    return [i for i, text in enumerate(texts) if len(_CJK_GAP.findall(text)) >= _MIN_GAPS]


def tight_pairs(data: bytes, indices: list[int]) -> dict[int, set[tuple[str, str]]]:
    """Per 0-based page index, the (left, right) CJK characters the layout shows as one word though
    extraction puts a space between them: left out where the same pair also stands apart on the page.
    Empty when pdfium is not installed or cannot open the file."""
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError:
        return {}
    try:
        document = pdfium.PdfDocument(data)
    except Exception:  # noqa: BLE001 - the text as pypdf read it stands
        return {}
    found: dict[int, set[tuple[str, str]]] = {}
    try:
        for index in indices:
            textpage = document[index].get_textpage()
            tight, apart = set(), set()
            count = textpage.count_chars()
            chars = [textpage.get_text_range(i, 1) if i < count else "" for i in range(count)]
            for i in range(1, count - 1):
                left, right = chars[i - 1], chars[i + 1]
                if chars[i] != " " or not (is_cjk(left) and is_cjk(right)):
                    continue
                l0, lb, l1, lt = textpage.get_charbox(i - 1)
                r0, _, _, rt = textpage.get_charbox(i + 1)
                generated = pdfium_c.FPDFText_IsGenerated(textpage.raw, i) == 1
                height = max(1.0, lt - lb, rt - lb)
                same_line = abs(lt - rt) < 0.5 * height
                (tight if generated and same_line and 0 <= r0 - l1 < _TIGHT * height else apart).add((left, right))
            textpage.close()
            found[index] = tight - apart
    finally:
        document.close()
    return found


def join_tight_pairs(text: str, pairs: set[tuple[str, str]]) -> str:
    """text without the spaces standing between the given pairs of characters."""
    if not pairs:
        return text
    return _CJK_GAP.sub(lambda m: "" if (text[m.start() - 1], text[m.end()]) in pairs else " ", text)
