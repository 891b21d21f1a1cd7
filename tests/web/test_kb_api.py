"""The document API on a real loopback server: uploads indexed in the background, search, answers
with citations, deletion, limits, and a server killed mid-upload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.web.conftest import (
    CORRUPT_PDF,
    KEY,
    MARKDOWN,
    PDF,
    QUESTION,
    client_for,
    documents,
    table_and_scan_pdf,
    upload,
    wait_job,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(web_server):
    server, _ = web_server
    with client_for(server.port) as http:
        job = upload(http, "alpha", [(PDF.name, PDF.read_bytes()), (MARKDOWN.name, MARKDOWN.read_bytes())])
        assert job.status_code == 202, job.text
        done = wait_job(http, job.json()["id"])
        assert [f["status"] for f in done["files"]] == ["indexed", "indexed"], done
        yield http


def test_upload_list_and_search(client, web_server):
    _, libraries = web_server
    rows = documents(client, "alpha")
    assert set(rows) == {PDF.name, MARKDOWN.name}
    pdf = rows[PDF.name]
    assert pdf["type"] == "pdf" and pdf["pages"] >= 3 and pdf["chunks"] > 0 and pdf["status"] == "indexed"
    assert pdf["size"] == PDF.stat().st_size and pdf["added"]
    # the original is kept inside the knowledge base's folder, so a re-index works after a restart
    assert (libraries.get("alpha").files / PDF.name).read_bytes() == PDF.read_bytes()
    hits = client.post("/v1/knowledge-bases/alpha/search", json={"query": "filter cartridge", "k": 3}).json()["data"]
    assert hits[0]["name"] == PDF.name and hits[0]["page"] == 3 and "12 months" in hits[0]["text"]
    assert hits[0]["score"] >= hits[-1]["score"]
    listed = client.get("/v1/knowledge-bases").json()["data"]
    assert [kb["id"] for kb in listed] == ["alpha", "beta"] and listed[0]["documents"] == 2


def test_answer_with_citations_through_chat_completions(client):
    reply = client.post("/v1/chat/completions", json={
        "model": "ragglm:alpha", "messages": [{"role": "user", "content": QUESTION}]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "12 months" in body["choices"][0]["message"]["content"]
    cited = body["citations"][0]
    assert cited["source"] == PDF.name and cited["page"] == 3
    # plain "ragglm" is the first knowledge base; "ragglm:beta" has nothing yet
    assert client.post("/v1/chat/completions", json={
        "model": "ragglm", "messages": [{"role": "user", "content": QUESTION}]}).json()["citations"]
    empty = client.post("/v1/chat/completions", json={
        "model": "ragglm:beta", "messages": [{"role": "user", "content": QUESTION}]})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_knowledge_base"


def test_follow_up_is_rewritten_to_stand_alone(client):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "12 months [1]"},
                {"role": "user", "content": "How do I replace it?"}]
    body = client.post("/v1/chat/completions", json={"model": "ragglm:alpha", "messages": messages}).json()
    plan = body["ragglm"]["plan"]
    assert "replace it" in plan["standalone_question"] and plan["standalone_question"] != "How do I replace it?"


def test_second_upload_embeds_nothing(client, web_server):
    _, libraries = web_server
    store = libraries.get("alpha").kb.store
    ids_before = {source: list(entry["ids"]) for source, entry in store.sources.items()}
    job = wait_job(client, upload(client, "alpha", [(PDF.name, PDF.read_bytes())]).json()["id"])
    assert job["files"][0]["status"] == "unchanged"
    assert {source: entry["ids"] for source, entry in store.sources.items()} == ids_before


def test_corrupt_and_unsupported_files_fail_alone(client, web_server):
    _, libraries = web_server
    files = [("broken.pdf", CORRUPT_PDF), ("notes.txt", b"The canteen opens at 11:30 every weekday."),
             ("tool.exe", b"MZ\x90\x00")]
    job = wait_job(client, upload(client, "alpha", files).json()["id"])
    status = {f["name"]: f for f in job["files"]}
    assert status["notes.txt"]["status"] == "indexed"
    assert status["broken.pdf"]["status"] == "failed" and "PDF" in status["broken.pdf"]["error"]
    assert str(libraries.get("alpha").files) not in status["broken.pdf"]["error"]
    assert status["tool.exe"]["status"] == "failed" and "unsupported" in status["tool.exe"]["error"]
    rows = documents(client, "alpha")
    assert "notes.txt" in rows and "broken.pdf" not in rows and "tool.exe" not in rows
    assert not (libraries.get("alpha").files / "broken.pdf").exists()


def test_path_escaping_names_are_sanitised(client, web_server):
    _, libraries = web_server
    files = libraries.get("alpha").files
    job = wait_job(client, upload(client, "alpha", [("../../escape.md", b"# Escape\nStayed inside."),
                                                    ("..\\..\\win.md", b"# Win\nAlso inside.")]).json()["id"])
    assert [f["name"] for f in job["files"]] == ["escape.md", "win.md"]
    assert (files / "escape.md").is_file() and (files / "win.md").is_file()
    assert not (files.parent.parent / "escape.md").exists() and not (files.parent / "escape.md").exists()


def test_delete_and_reindex(client):
    rows = documents(client, "alpha")
    reindexed = wait_job(client, client.post(
        f"/v1/knowledge-bases/alpha/documents/{rows[MARKDOWN.name]['id']}/reindex").json()["id"])
    assert reindexed["files"][0]["status"] == "indexed"
    gone = client.delete(f"/v1/knowledge-bases/alpha/documents/{rows[MARKDOWN.name]['id']}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert MARKDOWN.name not in documents(client, "alpha")
    again = client.delete(f"/v1/knowledge-bases/alpha/documents/{rows[MARKDOWN.name]['id']}")
    assert again.status_code == 404 and again.json()["error"]["type"] == "not_found_error"


def test_a_job_reports_how_each_file_was_read_and_what_was_left_out(client, monkeypatch):
    monkeypatch.setenv("RAGGLM_OCR", "never")  # read by the parser processes this job starts
    job = wait_job(client, upload(client, "alpha", [("hours.pdf", table_and_scan_pdf())]).json()["id"])
    [file] = job["files"]
    assert file["status"] == "indexed", file
    assert file["read"] == {"pages": 2, "text_layer_pages": 1, "ocr_pages": [], "tables": 1,
                            "pages_without_text": [2]}
    [warning] = file["warnings"]
    assert warning.startswith("hours.pdf: page(s) 2 have no text layer (scanned image)") and "OCR is off" in warning
    notes = wait_job(client, upload(client, "alpha", [("plain.md", b"# Plain\nNothing left out.")]).json()["id"])
    assert notes["files"][0]["warnings"] == [] and notes["files"][0]["read"]["tables"] == 0
    rows = documents(client, "alpha")  # the list keeps what the last reading of each file left out
    assert rows["hours.pdf"]["warnings"] == [warning] and rows["plain.md"]["warnings"] == []


def test_auth_limits_and_errors(client, web_server):
    server, _ = web_server
    with client_for(server.port, key="wrong") as stranger:
        refused = stranger.get("/v1/knowledge-bases")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    too_big = upload(client, "alpha", [("big.txt", b"word " * 60_000)])
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    missing = client.get("/v1/knowledge-bases/nope/documents")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/v1/jobs/job-none").status_code == 404
    assert client.post("/v1/knowledge-bases/alpha/search", json={"k": 2}).status_code == 400
    assert httpx.get(f"http://127.0.0.1:{server.port}/").status_code == 200  # the page itself needs no key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(folder, port: int) -> subprocess.Popen:
    env = {**os.environ, "RAGGLM_MAX_NEW_TOKENS": "8"}
    process = subprocess.Popen([sys.executable, "-c", "from ragglm.cli import main; main()", "serve",
                                "--kb", str(folder), "--port", str(port), "--api-key", KEY,
                                "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not come up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)


def test_killed_mid_upload_keeps_the_previous_documents(tmp_path):
    folder, port = tmp_path / "kb", _free_port()
    process = _start(folder, port)
    try:
        with client_for(port) as http:
            assert wait_job(http, upload(http, "kb", [(PDF.name, PDF.read_bytes())]).json()["id"])["status"] == "done"

            def trickle():  # a body that keeps the server reading until it is killed
                yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"late.md\"\r\n\r\n"
                for _ in range(200):
                    time.sleep(0.05)
                    yield b"# Late\nStill arriving.\n"

            def send():
                try:
                    http.post("/v1/knowledge-bases/kb/documents", content=trickle(),
                              headers={"Content-Type": "multipart/form-data; boundary=b"})
                except httpx.HTTPError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(1.0)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            sender.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    process = _start(folder, port)
    try:
        with client_for(port) as http:
            rows = documents(http, "kb")
            assert set(rows) == {PDF.name} and rows[PDF.name]["status"] == "indexed"
            hits = http.post("/v1/knowledge-bases/kb/search", json={"query": "filter cartridge"}).json()["data"]
            assert hits and hits[0]["name"] == PDF.name
    finally:
        process.terminate()
        process.wait(timeout=60)
