"""fetch_url's policy against real HTTP servers on loopback: schemes on every hop, private addresses,
the connection pinned to the checked address, one deadline for the whole fetch, declared types."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import ragglm.connectors.fetch as fetching
from ragglm.connectors import fetch_url
from ragglm.errors import SourceError

TRICKLE_BYTES = 40  # at 0.25 s each the server gives up by itself after 10 s
TRICKLE_PAUSE_S = 0.25


class _Handler(BaseHTTPRequestHandler):
    redirect_to = ""  # set per server: where /elsewhere points

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, body: bytes, content_type: str | None = "text/html") -> None:
        self.send_response(200)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self, raw: bytes) -> None:
        try:
            for byte in raw[:TRICKLE_BYTES]:
                self.wfile.write(bytes([byte]))
                time.sleep(TRICKLE_PAUSE_S)
        except OSError:  # the client hung up, as it should
            pass

    def do_GET(self):
        routes = {
            "/page.html": lambda: self._send(b"<p>a page</p>"),
            "/host": lambda: self._send(self.headers["Host"].encode(), "text/plain"),
            "/to-ftp": lambda: self._redirect("ftp://files.example.com/manual.pdf"),
            "/to-file": lambda: self._redirect("file:///etc/passwd"),
            "/elsewhere": lambda: self._redirect(self.redirect_to),
            "/octet": lambda: self._send(b"\x00\x01\x02binary", "application/octet-stream"),
            "/download/manual.txt": lambda: self._send(b"plain words", "application/octet-stream"),
            "/untyped": lambda: self._send(b"\x00\x01\x02binary", None),
            "/trickle-body": self._trickle_body,
            "/trickle-headers": lambda: self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" * 5),
        }
        routes.get(self.path, lambda: self.send_error(404))()

    def _trickle_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self._trickle(b"x" * 1000)


@contextmanager
def _serving(host: str = "127.0.0.1", redirect_to: str = "") -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"redirect_to": redirect_to})
    httpd = ThreadingHTTPServer((host, 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server():
    with _serving() as base:
        yield base


@pytest.fixture(autouse=True)
def _private_not_allowed(monkeypatch):
    monkeypatch.delenv("RAGGLM_ALLOW_PRIVATE_URLS", raising=False)


@pytest.mark.parametrize("address, kind", [
    ("10.0.0.1", "a private address"), ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"), ("fd12:3456::1", "a private address"),
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("169.254.169.254", "a link-local address (cloud metadata service)"),
    ("169.254.1.1", "a link-local address"), ("fe80::1", "a link-local address"),
    ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("172.32.0.1", None),
])
def test_address_kinds(address, kind):
    assert fetching.non_public_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("path, target", [("/to-ftp", "ftp://files.example.com/manual.pdf"),
                                          ("/to-file", "file:///etc/passwd")])
def test_redirect_off_http_is_refused(server, path, target):
    with pytest.raises(SourceError) as caught:
        fetch_url(server + path, timeout=5, allow_private=True)
    assert caught.value.source == server + path
    assert caught.value.problem == f"redirects to {target}, which is not http(s)"
    assert "download the target and index the local copy" in caught.value.fix


def test_first_url_must_be_http():
    with pytest.raises(SourceError, match=r"unsupported scheme ftp://"):
        fetch_url("ftp://files.example.com/manual.pdf", allow_private=True)


def test_loopback_is_refused_by_default_and_fetched_when_allowed(server, monkeypatch):
    with pytest.raises(SourceError) as caught:
        fetch_url(f"{server}/page.html", timeout=5)
    assert caught.value.problem == "127.0.0.1 is a loopback address"
    assert "RAGGLM_ALLOW_PRIVATE_URLS=1" in caught.value.fix
    assert fetch_url(f"{server}/page.html", timeout=5, allow_private=True).data == b"<p>a page</p>"
    monkeypatch.setenv("RAGGLM_ALLOW_PRIVATE_URLS", "1")
    assert fetch_url(f"{server}/page.html", timeout=5).data == b"<p>a page</p>"


def test_names_are_checked_after_resolution(server):
    port = server.rsplit(":", 1)[1]
    with pytest.raises(SourceError, match=r"localhost \((127\.0\.0\.1|::1)\) is a loopback address"):
        fetch_url(f"http://localhost:{port}/page.html", timeout=5)


def _bindable(host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def test_redirect_from_a_public_host_to_loopback_is_refused(monkeypatch):
    public = "127.0.0.2"  # stands in for a public host: the check lets it through
    checked = fetching.non_public_kind
    monkeypatch.setattr(fetching, "non_public_kind",
                        lambda address: None if str(address) == public else checked(address))
    if not _bindable(public):
        pytest.skip(f"{public} cannot be bound here")
    with _serving() as intranet, _serving(public, redirect_to=f"{intranet}/page.html") as first:
        assert fetch_url(f"{first}/page.html", timeout=5).data == b"<p>a page</p>"
        with pytest.raises(SourceError) as caught:
            fetch_url(f"{first}/elsewhere", timeout=5)
    assert caught.value.problem == f"redirects to {intranet}/page.html; 127.0.0.1 is a loopback address"


def _fake_resolver(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the names in answers to the addresses given (in turn, one list per call); others as usual."""
    real, asked = socket.getaddrinfo, []

    def resolve(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = answers[host][min(len(asked), len(answers[host])) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return asked


def test_connection_goes_to_the_checked_address_with_the_name_as_host(server, monkeypatch):
    port = int(server.rsplit(":", 1)[1])
    # A second lookup would get an address nothing listens on: the fetch must not make one.
    asked = _fake_resolver(monkeypatch, {"docs.intranet.test": ["127.0.0.1", "127.0.0.9"]})
    fetched = fetch_url(f"http://docs.intranet.test:{port}/host", timeout=5, allow_private=True)
    assert fetched.data.decode() == f"docs.intranet.test:{port}"
    assert asked == ["docs.intranet.test"]


def test_a_name_with_any_private_answer_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def mixed(host, port, *args, **kwargs):
        if host != "mixed.example.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in ("93.184.216.34", "10.1.2.3")]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    with pytest.raises(SourceError, match=r"mixed\.example\.test \(10\.1\.2\.3\) is a private address"):
        fetch_url("http://mixed.example.test/page.html", timeout=5)


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_a_trickling_server_hits_the_total_deadline(server, path):
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"no complete response within 1 s \(timed out\)"):
        fetch_url(server + path, timeout=timeout, allow_private=True)
    assert time.monotonic() - started < 3 * timeout  # per-read timeouts would wait 10 s here


def test_binary_content_types_are_refused_unless_the_path_names_a_readable_type(server):
    with pytest.raises(SourceError) as caught:
        fetch_url(f"{server}/octet", timeout=5, allow_private=True)
    assert caught.value.problem == "unsupported content type application/octet-stream"
    assert "download it and index the local copy" in caught.value.fix
    with pytest.raises(SourceError, match=r"unsupported content type \(none declared, and the body is binary\)"):
        fetch_url(f"{server}/untyped", timeout=5, allow_private=True)
    fetched = fetch_url(f"{server}/download/manual.txt", timeout=5, allow_private=True)
    assert (fetched.content_type, fetched.data) == ("text/plain", b"plain words")
