"""URLs against a real HTTP server on loopback: charsets, redirects, dead links, timeouts."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragglm.connectors import fetch_url, load
from ragglm.connectors.web import html_to_text
from ragglm.errors import SourceError

UTF8_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>净水器常见问题</title>
<style>body { color: red }</style><script>var tracking = "do-not-index";</script></head>
<body><nav><a href="/">首页</a> <a href="/shop">商城导航链接</a></nav>
<div class="cookie-banner">We use cookies to improve your experience. Accept all</div>
<main><h1>滤芯更换</h1><p>AquaPure W3 的滤芯每六个月更换一次，指示灯变红时请立即更换。</p>
<ul><li>关闭进水阀</li><li>逆时针旋转滤芯</li></ul>
<table><tr><th>型号</th><th>流量</th></tr><tr><td>W3</td><td>1.2 升/分钟</td></tr></table></main>
<footer>版权所有 © 2024 页脚文字</footer></body></html>"""

GBK_PAGE = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312">
<title>路由器说明</title></head><body><p>路由器的默认管理地址是 192.168.8.1，默认密码印在底部标签上。</p>
</body></html>"""

MOVED_PAGE = """<html><head><title>Moved manual</title></head><body>
<p>The SmartLock S2 battery lasts about twelve months with ten unlocks per day.</p></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/html") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/utf8.html":
            self._send(200, UTF8_PAGE.encode("utf-8"), "text/html; charset=utf-8")
        elif self.path == "/gbk.html":  # charset only in the <meta> tag, bytes in GBK
            self._send(200, GBK_PAGE.encode("gbk"), "text/html")
        elif self.path == "/gbk-undeclared.html":  # no charset anywhere: detected
            self._send(200, GBK_PAGE.replace("; charset=gb2312", "").encode("gb18030"), "text/html")
        elif self.path == "/old-manual":
            self.send_response(301)
            self.send_header("Location", "/new-manual.html")
            self.end_headers()
        elif self.path == "/new-manual.html":
            self._send(200, MOVED_PAGE.encode("utf-8"), "text/html; charset=utf-8")
        elif self.path == "/slow.html":
            time.sleep(3)
            self._send(200, b"<p>too late</p>")
        elif self.path == "/big.html":
            self._send(200, b"<p>" + b"x" * 300_000 + b"</p>")
        else:
            self._send(404, b"<h1>Not Found</h1>")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch):
    monkeypatch.setenv("RAGGLM_ALLOW_PRIVATE_URLS", "1")  # the test server is on 127.0.0.1


def test_utf8_page_keeps_main_content_and_drops_boilerplate(server):
    [document] = load(f"{server}/utf8.html")
    text = document.pages[0].text
    assert document.source == f"{server}/utf8.html"
    assert document.title == "净水器常见问题"
    assert [p.number for p in document.pages] == [None]
    assert "AquaPure W3 的滤芯每六个月更换一次，指示灯变红时请立即更换。" in text
    assert "# 滤芯更换" in text and "- 关闭进水阀" in text
    assert "型号 | 流量" in text and "W3 | 1.2 升/分钟" in text
    for dropped in ("do-not-index", "商城导航链接", "cookies", "页脚文字", "color: red"):
        assert dropped not in text


@pytest.mark.parametrize("path", ["/gbk.html", "/gbk-undeclared.html"])
def test_gbk_page_is_decoded(server, path):
    [document] = load(server + path)
    assert "路由器的默认管理地址是 192.168.8.1，默认密码印在底部标签上。" in document.text
    assert document.title == "路由器说明"


def test_redirect_is_followed(server):
    fetched = fetch_url(f"{server}/old-manual")
    assert fetched.final_url.endswith("/new-manual.html")
    [document] = load(f"{server}/old-manual")
    assert "twelve months" in document.text


def test_dead_link_timeout_and_size_limit_give_clear_errors(server):
    with pytest.raises(SourceError, match=r"/missing\.html: HTTP 404 .*dead link \(check the address\)"):
        fetch_url(f"{server}/missing.html")
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"/slow\.html: no complete response within 0\.5 s \(timed out\)"):
        fetch_url(f"{server}/slow.html", timeout=0.5)
    assert time.monotonic() - started < 2.5  # it gave up before the server answered
    with pytest.raises(SourceError, match=r"/big\.html: larger than the 100 KiB limit"):
        fetch_url(f"{server}/big.html", max_bytes=102_400)
    with pytest.raises(SourceError, match="could not connect"):
        fetch_url("http://127.0.0.1:9/nothing-listens-here")


def test_knowledge_base_indexes_good_urls_and_reports_bad_ones(server, monkeypatch):
    from ragglm.knowledge_base import KnowledgeBase

    monkeypatch.setenv("RAGGLM_FETCH_TIMEOUT", "0.5")
    urls = [f"{server}/utf8.html", f"{server}/gbk.html", f"{server}/old-manual", f"{server}/missing.html",
            f"{server}/slow.html"]
    kb = KnowledgeBase()
    report = kb.add(urls)
    assert report.added == urls[:3]
    assert [e.source for e in report.errors] == urls[3:]
    assert "dead link" in str(report.errors[0]) and "timed out" in str(report.errors[1])
    assert kb.sources == sorted(urls[:3])
    top = kb.search("SmartLock S2 battery months", 1)[0]
    assert top.source == f"{server}/old-manual" and "twelve months" in top.text
    assert kb.add(urls[:3]).unchanged == urls[:3]  # same bytes: nothing re-embedded


def test_html_without_main_marker_keeps_body_text():
    title, text = html_to_text("<html><head><title>T</title></head><body><div id='menu'>Home About</div>"
                               "<div><p>First paragraph.</p><p>Second<br>line</p></div>"
                               "<div hidden>secret</div><div style='display:none'>hidden too</div></body></html>")
    assert title == "T"
    assert text.replace("\n\n", "\n").split("\n") == ["# T", "First paragraph.", "Second", "line"][1:]
    assert "Home About" not in text and "secret" not in text and "hidden too" not in text


def test_boilerplate_is_recognised_by_class_words_not_substrings():
    _, text = html_to_text('<body><div id="main" class="page has-sidebar"><p>Real content here.</p>'
                           '<div class="cookie-banner">We use cookies.</div><div class="sidebar-widget">Side.</div>'
                           '<div class="post-content">Post body.</div><div class="advertisement">Buy.</div>'
                           '</div></body>')
    assert text.split("\n\n") == ["Real content here.", "Post body."]
