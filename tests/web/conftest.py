"""A served registry of knowledge bases on a loopback port, shared by the API and the page tests."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from tests.conftest import MANUALS

KEY = "web-key"
PDF = MANUALS / "aquapure-w3-manual.pdf"
MARKDOWN = MANUALS / "smartlock-s2-guide.md"
QUESTION = "How long does the filter cartridge last?"
CORRUPT_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a PDF body\n%%EOF\n"


@contextlib.contextmanager
def served(folder, generator, embedder, names=("alpha", "beta"), max_upload_bytes=200_000):
    """The app `ragglm serve --kb-root folder --api-key KEY` makes, on a free loopback port."""
    from ragglm import KnowledgeBase
    from ragglm.server import BackgroundServer, ServerLimits, create_app
    from ragglm.web import KnowledgeBases

    named = {name: KnowledgeBase(folder / name, generator=generator, embedder=embedder, top_k=2,
                                 max_new_tokens=24) for name in names}
    libraries = KnowledgeBases.of(named)
    limits = ServerLimits(max_new_tokens=64, max_upload_bytes=max_upload_bytes)
    with BackgroundServer(create_app(api_key=KEY, limits=limits, knowledge_bases=libraries)) as server:
        yield server, libraries


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, smollm2, embedder):
    with served(tmp_path_factory.mktemp("kbs"), smollm2, embedder) as (server, libraries):
        yield server, libraries


def table_and_scan_pdf() -> bytes:
    """A page of text with a ruled table, then a page that is only a picture (a scan without text)."""
    import io

    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    pdf.drawString(72, 760, "Opening hours of the service desks, by site.")
    rows = [("Site", "Opens", "Closes"), ("Berlin", "08:00", "17:00"), ("Lyon", "09:00", "18:00")]
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            pdf.drawString(78 + 120 * j, 726 - 20 * i, cell)
    for i in range(len(rows) + 1):
        pdf.line(72, 740 - 20 * i, 432, 740 - 20 * i)
    for j in range(len(rows[0]) + 1):
        pdf.line(72 + 120 * j, 740, 72 + 120 * j, 740 - 20 * len(rows))
    pdf.showPage()
    pdf.drawImage(ImageReader(Image.new("RGB", (60, 80), "white")), 72, 400, 300, 400)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def client_for(port: int, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                        timeout=300)


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def upload(client: httpx.Client, kb: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return client.post(f"/v1/knowledge-bases/{kb}/documents",
                       files=[("files", (name, data)) for name, data in files])


def documents(client: httpx.Client, kb: str) -> dict[str, dict]:
    response = client.get(f"/v1/knowledge-bases/{kb}/documents")
    assert response.status_code == 200, response.text
    return {row["name"]: row for row in response.json()["data"]}
