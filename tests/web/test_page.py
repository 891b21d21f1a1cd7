"""The page in real headless Chromium: key, uploads, a streamed answer with its citation, a follow-up,
deletion, another knowledge base, and no request leaving the server's origin."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.web import conftest as web

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
SCREENSHOT = REPO / "docs" / "screenshot.png"
WAIT_MS = 180_000  # indexing and answering share two loaded cores with everything else


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory, smollm2, embedder):
    if not CHROMIUM:
        pytest.skip("no chromium: `apt-get install -y chromium` (Debian's build; Playwright's own cannot be fetched)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    with web.served(tmp_path_factory.mktemp("page-kbs"), smollm2, embedder) as (server, libraries), \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        sync_api.expect.set_options(timeout=WAIT_MS)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        yield page, server, requested, sync_api.expect
        browser.close()


def row(page, name: str):
    return page.locator(f'[data-testid=document-row][data-name="{name}"]')


def ask(page, expect, question: str):
    before = page.locator(".turn").count()
    page.get_by_test_id("question").fill(question)
    page.get_by_test_id("ask").click()
    expect(page.locator(".turn")).to_have_count(before + 1)
    expect(page.get_by_test_id("ask")).to_be_enabled()  # the stream has ended


def test_the_page_end_to_end(browser_page, tmp_path, monkeypatch):
    page, server, requested, expect = browser_page
    origin = f"http://127.0.0.1:{server.port}"
    page.goto(origin + "/")

    # a wrong key is refused, the right one kept for the session
    page.get_by_test_id("api-key").fill("not-the-key")
    page.get_by_test_id("api-key").press("Enter")
    expect(page.locator("#key-error")).to_contain_text("rejected")
    page.get_by_test_id("api-key").fill(web.KEY)
    page.get_by_test_id("api-key").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('ragglm-key')") == web.KEY

    # several files at once; the corrupt one fails on its own while the others index
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(web.CORRUPT_PDF)
    scan = tmp_path / "hours.pdf"  # its second page is a picture, left out with OCR off: the line says so
    scan.write_bytes(web.table_and_scan_pdf())
    monkeypatch.setenv("RAGGLM_OCR", "never")
    page.get_by_test_id("upload").set_input_files([str(web.PDF), str(web.MARKDOWN), str(broken), str(scan)])
    for name in (web.PDF.name, web.MARKDOWN.name):
        expect(row(page, name).get_by_test_id("doc-status")).to_have_text("indexed")
    failed = page.locator('[data-testid=upload-item][data-name="broken.pdf"]')
    expect(failed).to_have_class("failed")
    expect(failed).to_contain_text("PDF")
    expect(row(page, "broken.pdf")).to_have_count(0)
    read = page.locator('[data-testid=upload-item][data-name="hours.pdf"]')
    expect(read).to_contain_text("2 page(s), 1 table(s)")
    expect(read.get_by_test_id("upload-warning")).to_contain_text("page(s) 2 have no text layer")
    flagged = row(page, "hours.pdf").get_by_test_id("doc-warning")
    expect(flagged).to_have_attribute("title", re.compile("page\\(s\\) 2 have no text layer"))
    row(page, "hours.pdf").get_by_test_id("delete").click()
    expect(row(page, "hours.pdf")).to_have_count(0)

    # the streamed answer, its citation, and the passage in context
    ask(page, expect, web.QUESTION)
    expect(page.get_by_test_id("answer")).to_contain_text("12 months")
    citation = page.locator(f'[data-testid=citation][data-name="{web.PDF.name}"][data-page="3"]')
    expect(citation).to_be_visible()
    expect(citation.locator("mark").first).to_be_visible()
    citation.click()
    expect(citation.locator(".context .passage")).to_contain_text("12 months")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # a follow-up carries the conversation and shows the question it stood for
    ask(page, expect, "How do I replace it?")
    expect(page.locator(".turn").last.locator(".standalone")).to_contain_text("replace it")
    page.get_by_test_id("new-chat").click()
    expect(page.locator(".turn")).to_have_count(0)

    # search shows top chunks with scores
    page.locator("#search").fill("reset button")
    page.locator("#search-form button").click()
    expect(page.locator("[data-testid=search-hit]").first).to_contain_text("score")

    # delete: gone from the list and from the API
    row(page, web.MARKDOWN.name).get_by_test_id("delete").click()
    expect(row(page, web.MARKDOWN.name)).to_have_count(0)
    with web.client_for(server.port) as http:
        assert web.MARKDOWN.name not in web.documents(http, "alpha") and web.PDF.name in web.documents(http, "alpha")

    # another knowledge base has its own (empty) list
    page.get_by_test_id("kb-select").select_option("beta")
    expect(page.get_by_test_id("document-row")).to_have_count(0)
    page.get_by_test_id("kb-select").select_option("alpha")
    expect(row(page, web.PDF.name)).to_have_count(1)

    # nothing was asked of any other origin: no CDN, font or script from elsewhere
    assert requested and all(url.startswith(origin + "/") for url in requested), requested
