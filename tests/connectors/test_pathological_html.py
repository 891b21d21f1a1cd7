"""Deeply nested or malformed HTML is read in linear work, with structure followed to a depth limit."""

from __future__ import annotations

from ragglm.connectors import web
from ragglm.connectors.web import html_to_text

DEPTH = 20_000


def _extract(html: str) -> web._TextExtractor:
    parser = web._TextExtractor()
    parser.feed(html)
    parser.close()
    return parser


def test_deep_nesting_with_stray_end_tags_keeps_the_text():
    for stray in ("</span>", "</p>", "</li>"):
        title, text = html_to_text("<div>" * DEPTH + "deep text" + stray * DEPTH)
        assert (title, text) == ("", "deep text")


def test_the_stack_stops_at_the_depth_limit_and_unwinds_completely():
    parser = web._TextExtractor()
    parser.feed("<div><section>" * DEPTH + "text")
    assert len(parser._stack) == web._MAX_DEPTH
    assert sum(parser._deep.values()) == 2 * DEPTH - web._MAX_DEPTH
    parser.feed("</section></div>" * DEPTH)
    parser.close()
    assert parser._stack == [] and not +parser._open and not +parser._deep
    assert "".join(text for _, text in parser.parts).strip() == "text"


def test_structure_above_the_limit_still_selects_main_content():
    article = "Deep article text, long enough to count as the main content of the page."
    html = ("<body><nav>Home About</nav><main>" + "<div>" * DEPTH + article + "</div>" * DEPTH
            + "</main><p>Outside the main content.</p></body>")
    assert html_to_text(html) == ("", article)


def test_an_end_tag_above_the_limit_closes_everything_below_it():
    html = "<section>" + "<div>" * DEPTH + "<pre>" * 3 + "a  b" + "</section><p>x  y</p>"
    parser = _extract(html)
    assert parser._pre == 0 and not +parser._deep
    assert html_to_text(html)[1].split("\n")[-1] == "x y"  # whitespace folds again outside <pre>


def test_unclosed_paragraphs_are_kept_one_per_line():
    _, text = html_to_text("<div>" + "<p>line" * DEPTH + "</div><p>tail")
    lines = text.split("\n")
    assert lines.count("line") == DEPTH and lines[-1] == "tail"


def test_pages_are_cut_at_the_size_limit(monkeypatch):
    monkeypatch.setattr(web, "_MAX_HTML_CHARS", len("<p>kept text here</p>"))
    _, text = html_to_text("<p>kept text here</p>" + "<p>dropped</p>" * 10)
    assert text == "kept text here"
