"""`ragglm serve` against hostile or broken clients, on a loopback port with the packaged SmolLM2.

Malformed requests go over raw sockets, so nothing in an HTTP client tidies them up first. Every
socket has a timeout, so each test ends by itself whatever the server does.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from ragglm.server import BackgroundServer, ServerLimits, create_app

KEY = "test-key"
LIMITS = ServerLimits(max_new_tokens=512, max_body_bytes=64_000, max_message_parts=1000, max_headers=50,
                      max_header_bytes=8192, header_timeout_s=1.0, body_timeout_s=1.0, max_connections=12)
LONG_PROMPT = "Count from 1 to 1000, one number per line, and say nothing else."


@pytest.fixture(scope="module")
def server(smollm2):
    app = create_app(generator=smollm2, api_key=KEY, limits=LIMITS)
    with BackgroundServer(app, host="127.0.0.1", port=0) as running:
        running.worker = app.state.worker
        yield running


def request_bytes(body: bytes, *, path="/v1/chat/completions", extra: str = "", chunked: bool = False) -> bytes:
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\n{length}\r\n{extra}\r\n")
    return head.encode() + (_chunks(body) if chunked else body)


def _chunks(body: bytes, size: int = 8192) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def exchange(server, data: bytes, timeout: float = 10.0) -> tuple[int, dict, dict | None]:
    """Send data whole, then read the answer until the server closes or the body is complete."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict, dict | None]:
    raw = b""
    while b"\r\n\r\n" not in raw:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"the connection closed before an answer: {raw!r}")
        raw += piece
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    parsed = json.loads(body[:length]) if headers.get("content-type", "").startswith("application/json") else None
    return status, headers, parsed


def assert_error(answer, status: int, code: str | None = None, param: str | None = None) -> dict:
    got, headers, body = answer
    assert got == status, answer
    assert body is not None, f"not a JSON error body: {headers}"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def chat_body(content, stream: bool = False, **extra) -> bytes:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a hostile client would
    return json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": content}],
                       "max_tokens": 4, "stream": stream, **extra}).encode()


def test_lone_surrogate_is_refused_before_generating(server):
    for stream in (False, True):
        answer = exchange(server, request_bytes(chat_body("hi \ud800 there", stream=stream)))
        assert_error(answer, 400, param="messages.0.content")
    parts = [{"type": "text", "text": "ok"}, {"type": "text", "text": "\udfff"}]
    assert_error(exchange(server, request_bytes(chat_body(parts))), 400, param="messages.0.content.1.text")
    assert_error(exchange(server, request_bytes(chat_body("hi", stop=["\ud800"]))), 400, param="stop.0")
    ok = exchange(server, request_bytes(chat_body("Say hi.")))
    assert ok[0] == 200 and ok[2]["choices"][0]["message"]["content"] is not None


def test_oversize_bodies_get_413_and_the_answer_arrives(server):
    big = chat_body("x" * 200_000)
    assert_error(exchange(server, request_bytes(big)), 413, code="request_too_large")
    assert_error(exchange(server, request_bytes(big, chunked=True)), 413, code="request_too_large")
    many_parts = chat_body([{"type": "text", "text": "x"}] * 2000)
    assert len(many_parts) < LIMITS.max_body_bytes
    assert_error(exchange(server, request_bytes(many_parts)), 413, code="request_too_large", param="messages")


def test_oversize_or_too_many_headers_get_431(server):
    huge = request_bytes(chat_body("hi"), extra=f"X-Padding: {'a' * 20_000}\r\n")
    assert_error(exchange(server, huge), 431, code="request_header_fields_too_large")
    many = request_bytes(chat_body("hi"), extra="".join(f"X-H{i}: {i}\r\n" for i in range(200)))
    assert_error(exchange(server, many), 431, code="request_header_fields_too_large")


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
                                     b"HELLO THERE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"])
def test_garbage_gets_a_json_4xx(server, garbage):
    status, _, _ = answer = exchange(server, garbage)
    assert 400 <= status < 500
    assert_error(answer, status)


def test_headers_sent_byte_by_byte_are_cut_after_the_timeout(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > LIMITS.header_timeout_s + 0.5:
                break
        answer = read_response(sock)
    assert_error(answer, 408, code="request_timeout")
    assert time.monotonic() - started < LIMITS.header_timeout_s + 3


def test_a_body_that_never_finishes_is_cut_after_the_timeout(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body = chat_body("hi")
        sock.sendall(request_bytes(body)[:-10])  # the headers promise ten bytes more than ever come
        answer = read_response(sock)
    assert_error(answer, 408, code="request_timeout")
    assert time.monotonic() - started < LIMITS.body_timeout_s + 3


def test_connections_past_the_limit_are_answered_503(server):
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=0.5)
               for _ in range(LIMITS.connection_limit() + 2)]
    try:
        answers = []
        for sock in sockets[-2:]:  # well inside the header timeout: only the surplus is answered yet
            answers.append(read_response(sock))
        for answer in answers:
            assert_error(answer, 503)
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.5)
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200


def test_an_abandoned_request_stops_generating(server):
    before = server.worker.cancelled
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": LONG_PROMPT}],
                       "max_tokens": 512}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request_bytes(body))
        time.sleep(1.0)  # the generation is under way
    deadline = time.monotonic() + 10
    while server.worker.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.worker.cancelled == before + 1, "the abandoned generation ran on"
    started = time.monotonic()
    answer = exchange(server, request_bytes(chat_body("Say hi.")))
    assert answer[0] == 200
    assert time.monotonic() - started < 10
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").json()["cancelled"] == before + 1
