"""HTML pages (saved files or fetched URLs): title, headings, paragraphs, lists and tables as text.

The main content is found by trafilatura (connectors/html_main.py). The reader here is its fallback,
for pages trafilatura finds nothing in or that are past its bounds: navigation, footers, scripts,
cookie banners and hidden elements are dropped; when the page marks its main content (<main>,
<article>, role="main") only that is kept. It also gives every page its <title>.
"""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from ragglm.connectors.charset import declared_charset, decode_bytes
from ragglm.connectors.html_main import main_content
from ragglm.documents import Document, Page

__all__ = ["load_html", "html_to_text", "tag_filter_text", "decode_html"]

_SKIP = {"script", "style", "nav", "footer", "header", "noscript", "template", "svg", "form", "aside",
         "iframe", "button", "select", "dialog", "menu", "head"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr"}
_BLOCK = {"p", "div", "section", "article", "main", "br", "li", "tr", "table", "ul", "ol", "dl",
          "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt", "figcaption", "caption",
          "hr", "address", "details", "summary"}
_BOILERPLATE = {"cookie", "cookies", "consent", "gdpr", "banner", "advert", "advertisement", "ad", "ads", "sidebar",
                "breadcrumb", "breadcrumbs", "share", "social", "newsletter", "popup", "modal", "comments",
                "related", "footer", "navbar", "nav", "menu", "toc"}
_CONTENT_WORDS = {"content", "main", "article", "body", "post", "entry", "text"}
_MAIN_ROLES = {"main", "article"}


# Beyond this depth text is still kept but elements are not followed: their end tags are only
# counted, and no boilerplate or main content is recognised below it. Browsers stop nesting at a
# few hundred levels as well; a deeper page is generated or hostile, not written.
_MAX_DEPTH = 512
# A page is cut to this many characters, the most a fetch reads (connectors/fetch.py).
_MAX_HTML_CHARS = 50 * 1024 * 1024
# Marked main content shorter than this is taken for a miss: the whole page is read instead.
_MIN_MAIN_CHARS = 40
# trafilatura's own confidence threshold: on a page with less main text than this its scores have
# little to go on and it keeps nearly every paragraph, banners included. There the tag filter's
# text is used, unless it found nothing.
_TRUSTED_MAIN_CHARS = 250


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[bool, str]] = []  # (inside main content, text)
        self.title = ""
        self._stack: list[str] = []
        self._open: Counter[str] = Counter()  # tags on the stack: a stray end tag costs O(1)
        self._deep: Counter[str] = Counter()  # elements opened below _MAX_DEPTH, by tag
        self._skip_below: int | None = None  # stack depth at which a skipped element opened
        self._main_below: int | None = None
        self._in_title = False
        self._pre = 0

    def _emit(self, text: str) -> None:
        if self._skip_below is None:
            self.parts.append((self._main_below is not None, text))

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
            return
        if tag not in _VOID:
            if len(self._stack) >= _MAX_DEPTH:
                self._deep[tag] += 1
            elif self._push(tag, dict(attrs)):
                return
        self._open_element(tag)

    def _push(self, tag: str, attrs: dict) -> bool:
        """Put tag on the stack; True when it starts an element whose text is skipped."""
        self._stack.append(tag)
        self._open[tag] += 1
        depth = len(self._stack) - 1
        if self._skip_below is None and _is_boilerplate(tag, attrs):
            self._skip_below = depth
            return True
        if self._main_below is None and (tag in ("main", "article") or attrs.get("role") == "main"):
            self._main_below = depth
        return False

    def _open_element(self, tag: str) -> None:
        if tag == "pre":
            self._pre += 1
        if tag in _BLOCK:
            self._emit("\n")
            if tag[0] == "h" and tag[1:].isdigit():
                self._emit("#" * int(tag[1:]) + " ")
            elif tag == "li":
                self._emit("- ")
        elif tag in ("td", "th"):
            self._emit(" | ")

    def _close_element(self, tag: str, count: int = 1) -> None:
        if tag == "pre":
            self._pre = max(0, self._pre - count)
        if tag in _BLOCK:
            self._emit("\n" * count)

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
            return
        if self._deep[tag]:
            self._deep[tag] -= 1
            self._close_element(tag)
        elif self._open[tag]:
            self._close_deep()
            self._pop_to(tag)
        # else a stray end tag: nothing it could close is open

    def _close_deep(self) -> None:
        """Close everything open below _MAX_DEPTH, as an end tag above it implies."""
        for tag, count in self._deep.items():
            if count:
                self._close_element(tag, count)
        self._deep.clear()

    def _pop_to(self, tag: str) -> None:
        while self._stack:
            opened = self._stack.pop()
            self._open[opened] -= 1
            depth = len(self._stack)
            if self._skip_below is not None and depth <= self._skip_below:
                self._skip_below = None
            if self._main_below is not None and depth <= self._main_below:
                self._main_below = None
            self._close_element(opened)
            if opened == tag:
                break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        else:
            self._emit(data if self._pre else re.sub(r"\s+", " ", data))


def _is_boilerplate(tag: str, attrs: dict) -> bool:
    if tag in _SKIP or "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    if re.search(r"display\s*:\s*none", attrs.get("style") or ""):
        return True
    if attrs.get("role") in ("navigation", "banner", "contentinfo", "complementary", "dialog", "alert"):
        return True
    if tag in ("main", "article", "body", "html") or attrs.get("role") in _MAIN_ROLES:
        return False
    for token in " ".join(filter(None, [attrs.get("id"), attrs.get("class")])).lower().split():
        if token.startswith(("has-", "with-", "no-")):
            continue  # a state of the element ("has-sidebar"), not what it holds
        words = set(re.split(r"[-_]+", token))
        if words & _BOILERPLATE and not words & _CONTENT_WORDS:
            return True
    return False


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page: its main content as trafilatura finds it, else as
    tag_filter_text reads it."""
    html = html[:_MAX_HTML_CHARS]
    title, text = tag_filter_text(html)
    main = main_content(html)
    if len(main) >= _TRUSTED_MAIN_CHARS or not text:
        return title, main or text
    return title, text


def tag_filter_text(html: str) -> tuple[str, str]:
    """(title, text) by dropping boilerplate tags and classes; only the marked main content
    when the page marks it."""
    parser = _TextExtractor()
    parser.feed(html[:_MAX_HTML_CHARS])
    parser.close()
    main = "".join(text for inside, text in parser.parts if inside)
    text = main if len(main.strip()) >= _MIN_MAIN_CHARS else "".join(text for _, text in parser.parts)
    lines = [line.strip(" ") for line in text.splitlines()]
    lines = [re.sub(r"^\|\s*", "", line).strip() if line.lstrip().startswith("|") else line for line in lines]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join(parser.title.split()), text


def decode_html(data: bytes, source: str, content_type: str | None = None) -> str:
    return decode_bytes(data, source, declared_charset(content_type, data))


def load_html(path: Path | str, data: bytes | None = None, content_type: str | None = None) -> Document:
    """A saved page (path) or fetched bytes (data, with the HTTP Content-Type) as one page of text."""
    data = Path(path).read_bytes() if data is None else data
    title, text = html_to_text(decode_html(data, str(path), content_type))
    if title and not text.startswith("# " + title):
        text = f"# {title}\n\n{text}"
    fallback = str(path).rstrip("/").rsplit("/", 1)[-1] or str(path)
    return Document(str(path), [Page(None, text)], title=title or Path(fallback).stem)
