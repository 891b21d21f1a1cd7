"""Saved HTML pages: the page title, headings, paragraphs, lists and tables as text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from ragglm.connectors.text import decode_bytes
from ragglm.documents import Document, Page

__all__ = ["load_html", "html_to_text"]

_SKIP = {"script", "style", "nav", "footer", "header", "noscript", "template", "svg", "form", "aside"}
_BLOCK = {"p", "div", "section", "article", "main", "br", "li", "tr", "table", "ul", "ol",
          "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.IGNORECASE)


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _BLOCK:
            self.parts.append("\n")
            if tag.startswith("h") and tag[1:].isdigit():
                self.parts.append("#" * int(tag[1:]) + " ")
            elif tag == "li":
                self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip_depth:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page."""
    parser = _TextExtractor()
    parser.feed(html)
    text = "".join(parser.parts)
    lines = [line.strip() for line in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return parser.title.strip(), text


def load_html(path: Path) -> Document:
    data = path.read_bytes()
    match = _META_CHARSET.search(data[:4096])
    html = None
    if match:
        try:
            html = data.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            html = None
    if html is None:
        html = decode_bytes(data, str(path))
    title, text = html_to_text(html)
    if title and not text.startswith("#"):
        text = f"# {title}\n\n{text}"
    return Document(str(path), [Page(None, text)], title=title or path.stem)
