"""Fetch http(s) URLs with one deadline, a size limit, an address policy and checked redirects.

Every failure is a SourceError naming the URL asked for: dead links, timeouts, redirects off http(s),
private or loopback addresses (unless allowed) and bodies ragglm cannot read.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from ragglm.config import Settings
from ragglm.connectors.formats import SUFFIX_OF_MIME
from ragglm.errors import SourceError

__all__ = ["Fetched", "fetch_url", "is_url", "non_public_kind"]

USER_AGENT = "ragglm/0.1 (+document indexer)"
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 10

_SCHEMES = ("http", "https")
_REDIRECTS = {301, 302, 303, 307, 308}
_READABLE = set(SUFFIX_OF_MIME)
# What a path suffix stands for when the server only says "bytes" (application/octet-stream).
_TYPE_OF_SUFFIX = {suffix: mime for mime, suffix in SUFFIX_OF_MIME.items()} | {".htm": "text/html",
                                                                                ".text": "text/plain",
                                                                                ".markdown": "text/markdown"}
_PRIVATE_FIX = ("set RAGGLM_ALLOW_PRIVATE_URLS=1, or allow_private_urls = true in ragglm.toml, "
                "to index intranet pages")
_TYPE_FIX = ("ragglm reads HTML, plain text, Markdown, PDF, DOCX, XLSX and PPTX; if the file is one of those, "
             "download it and index the local copy")
_NETWORK_FIX = "check the address and the network"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Fetched:
    url: str  # as asked
    final_url: str  # after redirects
    content_type: str  # as declared, or the one the path names when the server declared only bytes
    data: bytes


def is_url(source: str | object) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def fetch_url(url: str, timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
              allow_private: bool | None = None) -> Fetched:
    """The body of url; connecting, redirects, headers and body must all finish within timeout seconds
    ($RAGGLM_FETCH_TIMEOUT or 20 when None). Loopback, private and link-local addresses are refused
    unless allow_private (None: Settings.allow_private_urls, i.e. $RAGGLM_ALLOW_PRIVATE_URLS)."""
    if timeout is None:
        timeout = float(os.environ.get("RAGGLM_FETCH_TIMEOUT", DEFAULT_TIMEOUT_S))
    if allow_private is None:
        allow_private = Settings.from_env().allow_private_urls
    deadline = _Deadline(timeout)
    try:
        return _follow(url, deadline, max_bytes, allow_private)
    except SourceError:
        raise
    except TimeoutError as exc:
        raise _timed_out(url, timeout) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise SourceError(url, f"could not be fetched ({exc})", _NETWORK_FIX) from exc


def non_public_kind(address: Address) -> str | None:
    """What makes address unfit for a fetch from the open web ("a loopback address", ...), None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return non_public_kind(address.ipv4_mapped)  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:  # before is_private, which also covers 169.254/16
        metadata = address == ipaddress.IPv4Address("169.254.169.254")
        return "a link-local address" + (" (cloud metadata service)" if metadata else "")
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or getattr(address, "is_site_local", False):
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    return None


class _Deadline:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self._at = time.monotonic() + timeout

    def left(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


def _follow(url: str, deadline: _Deadline, max_bytes: int, allow_private: bool) -> Fetched:
    """Each hop is checked like the first: a public page must not redirect to an intranet or to ftp://."""
    current = url
    _check_scheme(url, current)
    for _ in range(MAX_REDIRECTS + 1):
        with _exchange(url, current, deadline, allow_private) as response:
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                target = urljoin(current, location.strip())
                _check_scheme(url, target)
                current = target
                continue
            _check_status(url, response)
            content_type = _content_type(url, current, response.getheader("Content-Type", ""))
            data = _read_body(url, response, max_bytes)
            return Fetched(url, current, content_type or _sniffed(url, data), data)
    raise SourceError(url, f"more than {MAX_REDIRECTS} redirects", "check the address in a browser")


def _check_scheme(asked: str, url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme in _SCHEMES:
        return
    if url == asked:
        raise SourceError(asked, f"unsupported scheme {scheme or '(none)'}://", "give an http(s) address")
    raise SourceError(asked, f"redirects to {url}, which is not http(s)",
                      "only http and https are fetched; download the target and index the local copy")


def _check_status(url: str, response: http.client.HTTPResponse) -> None:
    if response.status < 300:
        return
    dead = response.status in (404, 410)
    raise SourceError(url, f"HTTP {response.status} {response.reason}" + (": dead link" if dead else ""),
                      "check the address" if dead else "try again later or check access rights")


@contextmanager
def _exchange(asked: str, url: str, deadline: _Deadline,
              allow_private: bool) -> Iterator[http.client.HTTPResponse]:
    """One GET to url over a connection to a vetted address, cut off at the deadline."""
    parts = urlsplit(url)
    host = _ascii_host(asked, parts)
    port = _port(asked, parts)
    address = _vetted_address(asked, url, host, port, allow_private)
    connection = _connection(parts.scheme.lower(), host, port, address, deadline.left())
    try:
        with _cut_off(connection, asked, deadline):
            _connect(asked, connection)
            connection.request("GET", _target(parts), headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            yield connection.getresponse()
    finally:
        connection.close()


def _ascii_host(asked: str, parts: SplitResult) -> str:
    if not parts.hostname:
        raise SourceError(asked, f"no host in {parts.geturl()}", "give a full http(s) address")
    try:
        return parts.hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise SourceError(asked, f"invalid host name {parts.hostname}", "check the address") from exc


def _port(asked: str, parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError as exc:
        raise SourceError(asked, f"invalid port in {parts.geturl()}", "check the address") from exc
    return port or (443 if parts.scheme.lower() == "https" else 80)


def _target(parts: SplitResult) -> str:
    # Locations may carry raw non-ASCII; http.client sends only ASCII. Existing %-escapes stay.
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return f"{path}?{query}" if query else path


def _vetted_address(asked: str, url: str, host: str, port: int, allow_private: bool) -> str:
    """The address to connect to. Every address the name resolves to must pass, so that a name with
    one public and one private answer cannot be used to reach the private one. The lookup itself is
    bounded by the system resolver's timeouts, not by the deadline."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SourceError(asked, f"could not resolve {host} ({exc.strerror})", _NETWORK_FIX) from exc
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private:
        for address in addresses:
            kind = non_public_kind(ipaddress.ip_address(address))
            if kind:
                raise SourceError(asked, _refusal(asked, url, host, address, kind), _PRIVATE_FIX)
    return addresses[0]


def _refusal(asked: str, url: str, host: str, address: str, kind: str) -> str:
    what = address if host.strip("[]") == address else f"{host} ({address})"
    problem = f"{what} is {kind}"
    return problem if url == asked else f"redirects to {url}; {problem}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to what the name resolves to a moment later
    (DNS rebinding); the Host header still carries the name."""

    address = ""
    opened: socket.socket | None = None  # kept: getresponse() drops self.sock when the server will close

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection, _PinnedHTTPConnection):
    """As above; HTTPSConnection.connect wraps the pinned socket with SNI and the certificate check
    against the name."""


def _connection(scheme: str, host: str, port: int, address: str, timeout: float) -> _PinnedHTTPConnection:
    if scheme == "https":
        connection = _PinnedHTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(host, port, timeout=timeout)
    connection.address = address
    return connection


def _connect(asked: str, connection: _PinnedHTTPConnection) -> None:
    try:
        connection.connect()
        connection.opened = connection.sock  # after the TLS wrap, which replaces the socket
    except ssl.SSLError as exc:
        raise SourceError(asked, f"TLS failed ({exc.reason or exc})",
                          "check the address; the server's certificate may be invalid") from exc
    except TimeoutError:
        raise
    except OSError as exc:
        raise SourceError(asked, f"could not connect ({exc.strerror or exc})", _NETWORK_FIX) from exc


@contextmanager
def _cut_off(connection: _PinnedHTTPConnection, asked: str, deadline: _Deadline) -> Iterator[None]:
    """Shut the socket when the deadline passes: a socket timeout bounds each read alone, and a server
    that trickles a byte a second never trips it."""
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        sock = connection.opened or connection.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(deadline.left(), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        if fired.is_set():
            raise _timed_out(asked, deadline.timeout) from exc
        raise
    finally:
        timer.cancel()
    if fired.is_set():  # the shutdown can look like a clean end of body
        raise _timed_out(asked, deadline.timeout)


def _content_type(url: str, final_url: str, declared: str) -> str:
    """The type to parse by; "" when nothing was declared and the body has to tell.

    Generic binary types are never parsed as HTML: they need a path suffix ragglm reads."""
    mime = declared.split(";")[0].strip().lower()
    if mime in _READABLE:
        return declared
    implied = _type_of_path(final_url) or _type_of_path(url)
    if implied:
        return implied
    if not mime or mime.startswith("text/"):
        return declared
    raise SourceError(url, f"unsupported content type {mime}", _TYPE_FIX)


def _type_of_path(url: str) -> str | None:
    return _TYPE_OF_SUFFIX.get(PurePosixPath(urlsplit(url).path).suffix.lower())


def _sniffed(url: str, data: bytes) -> str:
    # No declared type and no suffix: markup or text is read as HTML, as browsers would; NUL bytes
    # mean a binary format that would only index noise.
    if b"\0" in data[:4096]:
        raise SourceError(url, "unsupported content type (none declared, and the body is binary)", _TYPE_FIX)
    return "text/html"


def _read_body(url: str, response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(url, max_bytes)
    chunks, size = [], 0
    # read1: read(n) would wait for all n bytes, however slowly they come
    while chunk := response.read1(65536):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(url, max_bytes)
        chunks.append(chunk)
    if response.length:  # read1 ends quietly when the server hangs up early
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def _timed_out(url: str, timeout: float) -> SourceError:
    return SourceError(url, f"no complete response within {timeout:g} s (timed out)",
                       "check that the server is up, or raise the timeout")


def _too_large(url: str, max_bytes: int) -> SourceError:
    limit = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes / 1024:g} KiB"
    return SourceError(url, f"larger than the {limit} limit",
                       "download the file and index the local copy")
