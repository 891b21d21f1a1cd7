"""A web page's main content found by trafilatura, written in the connectors' text layout.

trafilatura scores far higher than a tag-and-class filter on real article pages (benchmarks/
html_extraction.py), but its own text output flattens headings and tables and its Markdown adds
emphasis marks and escapes. Its XML tree is walked here instead: headings become "#" lines, list
items "- " lines and table rows "a | b | c", as every other reader writes them.
"""

from __future__ import annotations

import functools
import logging
import re

__all__ = ["MAX_TRAFILATURA_CHARS", "MAX_TRAFILATURA_DEPTH", "MAX_TRAFILATURA_TAGS", "main_content",
           "within_bounds"]

# trafilatura walks the page's lxml tree several times (cleaning, comparison with its own
# fallbacks): about 4 s per 100,000 elements. Real article pages hold a few thousand tags (the
# largest of the 181 benchmark pages: 3,229) and under 2 MB; past these bounds, or nested deeper
# than libxml2 parses (it stops at 256 levels), a page goes to the linear reader in web.py.
MAX_TRAFILATURA_CHARS = 4 * 2**20
MAX_TRAFILATURA_TAGS = 50_000
MAX_TRAFILATURA_DEPTH = 256

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>")
# Elements that close themselves or whose end tag may be left out: they do not nest.
_FLAT = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "thead", "tbody", "tfoot",
         "colgroup", "rt", "rp", "optgroup", "html", "head", "body"}

_SPACE = re.compile(r"\s+")
_BLOCKS = {"p", "head", "list", "item", "table", "row", "quote", "code", "div", "section", "main", "body"}

logging.getLogger("trafilatura").setLevel(logging.CRITICAL)  # it logs every short page as a warning


@functools.lru_cache(maxsize=1)
def _config():
    from trafilatura.settings import use_config

    config = use_config()
    # Below trafilatura's 250-character minimum it replaces its result with every paragraph of
    # the raw page, navigation included; web.py's reader handles such short pages better.
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "0")
    return config


def within_bounds(html: str) -> bool:
    """Whether html is small, sparse and shallow enough for trafilatura, in one linear scan."""
    if len(html) > MAX_TRAFILATURA_CHARS or html.count("<") > MAX_TRAFILATURA_TAGS:
        return False
    depth = 0
    for match in _TAG.finditer(html):
        closing, tag, self_closing = match.groups()
        if self_closing or tag.lower() in _FLAT:
            continue
        if closing:
            depth = max(0, depth - 1)  # a stray end tag closes nothing
        else:
            depth += 1
            if depth > MAX_TRAFILATURA_DEPTH:
                return False
    return True


def main_content(html: str) -> str:
    """The main text of html in the connectors' layout; "" when trafilatura finds none or the
    page is past the bounds above."""
    if not within_bounds(html):
        return ""
    try:
        import trafilatura
    except ImportError:  # web.py's own reader still reads the page
        return ""
    try:
        document = trafilatura.bare_extraction(html, include_comments=False, include_tables=True,
                                               include_formatting=False, config=_config())
    except (ValueError, TypeError, RecursionError):
        return ""
    if document is None or document.body is None:
        return ""
    lines: list[str] = []
    try:
        _write(document.body, lines)
    except RecursionError:  # cannot happen below MAX_TRAFILATURA_DEPTH; never worth a failed file
        return ""
    text = "\n".join(line for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _write(element, lines: list[str]) -> None:
    """Append element's blocks to lines: one line per paragraph, heading, list item or table row."""
    tag = element.tag
    if tag == "head":
        level = (element.get("rend") or "h2").lstrip("h")
        _line(lines, "#" * (int(level) if level.isdigit() else 2) + " ", _inline(element))
    elif tag == "item":
        _line(lines, "- ", _inline(element, skip={"list"}))
        for sublist in element.iterfind("list"):
            _write(sublist, lines)
    elif tag == "row":
        cells = [" ".join(_inline(cell).split()) for cell in element.iterfind("cell")]
        if any(cells):
            lines.append(" | ".join(cells))
    elif tag == "code":
        lines.extend(["", "".join(element.itertext()).strip("\n"), ""])
    elif tag in ("list", "table", "body", "div", "section", "main") or _has_blocks(element):
        if element.text and element.text.strip():
            _line(lines, "", _SPACE.sub(" ", element.text))
        for child in element:
            _write(child, lines)
            if child.tail and child.tail.strip():
                _line(lines, "", _SPACE.sub(" ", child.tail))
        parent = element.getparent()
        if tag in ("list", "table") and (parent is None or parent.tag != "item"):
            lines.append("")  # a sublist continues its item's list
    else:
        _line(lines, "", _inline(element))


def _has_blocks(element) -> bool:
    return any(child.tag in _BLOCKS for child in element)


def _line(lines: list[str], prefix: str, text: str) -> None:
    for i, part in enumerate(text.split("\n")):
        part = part.strip()
        if part:
            lines.append((prefix if i == 0 else "") + part)
    if prefix != "- ":
        lines.append("")  # paragraphs and headings stand apart; list items stay together


def _inline(element, skip: frozenset | set = frozenset()) -> str:
    """Text of element with line breaks kept and other whitespace folded."""
    parts = [element.text or ""]
    for child in element:
        if child.tag in skip:
            pass
        elif child.tag == "lb":
            parts.append("\n")
        else:
            parts.append(_inline(child, skip))
        parts.append(child.tail or "")
    return "\n".join(_SPACE.sub(" ", piece).strip() for piece in "".join(parts).split("\n"))
