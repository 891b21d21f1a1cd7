"""Article pages read through trafilatura: pages the tag filter loses, layout, charsets and bounds."""

from __future__ import annotations

import time

from ragglm.connectors import html_main
from ragglm.connectors.web import html_to_text, load_html, tag_filter_text

PARAGRAPHS = [
    "The AquaPure W3 filter cartridge should be replaced every six months, or as soon as the "
    "indicator light on the front panel turns red, whichever comes first.",
    "Before replacing the cartridge, close the inlet valve under the sink and open the tap for a "
    "few seconds so that the pressure inside the housing is released completely.",
    "Turn the old cartridge counter-clockwise a quarter turn, pull it straight down, and insert the "
    "new one with the arrow facing forward before turning it clockwise until it clicks.",
]
ARTICLE = ("<h1>Replacing the filter cartridge</h1>" + "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
           + "<h2>Flow rates</h2><table><tr><th>Model</th><th>Flow</th><th>Cartridge</th></tr>"
           "<tr><td>W3</td><td>1.2 L/min</td><td>C-300</td></tr>"
           "<tr><td>W5</td><td>2.0 L/min</td><td>C-500</td></tr></table>"
           "<ul><li>Close the inlet valve</li><li>Release the pressure</li></ul>")
NAV = '<nav><a href="/">Home</a> <a href="/shop">Shop our filters today</a></nav>'
# a consent widget's own class names, none of them a word the tag filter knows
BANNER = ('<div class="cc-window cc-floating" aria-label="cookieconsent"><p>We use cookies to improve your experience '
          'on our site. By continuing to browse you agree to our use of cookies.</p>'
          '<button>Accept all</button></div>')


def _page(body: str, title: str = "AquaPure W3 manual") -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def test_a_body_inside_a_form_is_kept():
    page = _page(NAV + f'<form id="aspnetForm" method="post"><div class="content">{ARTICLE}</div></form>'
                 + "<footer>Copyright 2024 AquaPure</footer>")
    assert PARAGRAPHS[0] not in tag_filter_text(page)[1]  # the tag filter drops every form
    title, text = html_to_text(page)
    assert title == "AquaPure W3 manual"
    for paragraph in PARAGRAPHS:
        assert paragraph in text
    assert "Shop our filters today" not in text and "Copyright" not in text


def test_a_cookie_banner_is_not_taken_for_the_content():
    page = _page(BANNER + NAV + f"<form><article>{ARTICLE}</article></form>")
    assert "cookies" in tag_filter_text(page)[1]  # all the tag filter keeps here
    _, text = html_to_text(page)
    assert all(paragraph in text for paragraph in PARAGRAPHS)
    assert "cookies" not in text and "Accept all" not in text


def test_headings_lists_and_table_rows_keep_the_connectors_layout():
    _, text = html_to_text(_page(NAV + f"<main>{ARTICLE}</main>"))
    lines = text.split("\n")
    assert "# Replacing the filter cartridge" in lines and "## Flow rates" in lines
    assert lines.index("Model | Flow | Cartridge") + 1 == lines.index("W3 | 1.2 L/min | C-300")
    assert "W5 | 2.0 L/min | C-500" in lines
    assert "- Close the inlet valve" in lines and "- Release the pressure" in lines


def test_gbk_bytes_are_decoded_before_extraction():
    paragraphs = ["路由器的默认管理地址是 192.168.8.1，默认密码印在设备底部的标签上，首次登录后请立即修改。"
                  "如果忘记了修改后的密码，可以按住复位键十秒钟恢复出厂设置，然后重新配置网络。"] * 2
    paragraphs[1] = paragraphs[1].replace("路由器", "本设备")
    html = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=gbk">'
            '<title>路由器说明</title></head><body><form><div>'
            + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div></form></body></html>")
    document = load_html("router.html", html.encode("gbk"))
    assert document.title == "路由器说明"
    assert document.pages[0].text.startswith("# 路由器说明\n\n")
    assert all(p in document.pages[0].text for p in paragraphs)


def test_short_pages_keep_the_tag_filter_reading():
    # below trafilatura's confidence size it keeps every paragraph; the tag filter knows better
    _, text = html_to_text(_page('<div class="advertisement">Buy now.</div><p>Real content here.</p>'))
    assert text == "Real content here."


def test_pages_past_the_bounds_skip_trafilatura_quickly(monkeypatch):
    calls = []
    monkeypatch.setattr(html_main, "_config", lambda: calls.append(1))
    deep = "<div>" * 20_000 + "deep text" + "</div>" * 20_000
    wide = "<p>x</p>" * (html_main.MAX_TRAFILATURA_TAGS // 2 + 1)
    big = "<p>" + "y" * html_main.MAX_TRAFILATURA_CHARS + "</p>"
    started = time.monotonic()
    for page in (deep, wide, big):
        assert not html_main.within_bounds(page)
        assert html_main.main_content(page) == ""
    assert calls == [] and time.monotonic() - started < 5
    assert html_to_text(deep) == ("", "deep text")


def test_unclosed_paragraphs_and_list_items_do_not_count_as_nesting():
    assert html_main.within_bounds("<ul>" + "<li><p>item" * 5_000 + "</ul>")
    assert not html_main.within_bounds("<span>" * (html_main.MAX_TRAFILATURA_DEPTH + 1))
