"""OCR of many pages in parallel threads, with progress reported per page.

Pages are rendered here one at a time (pdfium is not thread-safe) and recognised in threads, at most
two per thread in flight so that a long scan never holds all its page images at once. A page that
fails is returned as its error; the others are read. A parsing process passes each finished page on
to its parent (see parse_worker), which counts it as progress and as a sign that the process lives.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass

from ragglm.connectors.ocr import OCR_DPI, recognise_text

__all__ = ["PageBar", "PageProgress", "ocr_images", "ocr_threads", "page_progress", "render_pdf_pages", "report_progress"]

_progress: ContextVar[Callable[[PageProgress], None] | None] = ContextVar("ocr_progress", default=None)


@dataclass
class PageProgress:
    """One more page of source recognised: done of total."""
    source: str
    done: int
    total: int


@contextlib.contextmanager
def page_progress(callback: Callable[[PageProgress], None] | None):
    """Send the PageProgress of OCR done inside the block to callback."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def report_progress(event: PageProgress) -> None:
    callback = _progress.get()
    if callback is not None:
        callback(event)


def ocr_threads() -> int:
    from ragglm.connectors.parallel import available_cores  # parallel imports this module

    return available_cores()


def render_pdf_pages(data: bytes, numbers: list[int], dpi: int = OCR_DPI) -> Iterator[tuple[int, object]]:
    """(page number, PIL image or the exception that stopped its rendering) for each 1-based number."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except Exception as exc:  # noqa: BLE001 - every page is then reported with the reason
        for number in numbers:
            yield number, exc
        return
    try:
        for number in numbers:
            try:
                page = document[number - 1]
                image = page.render(scale=dpi / 72).to_pil()
                page.close()
                yield number, image
            except Exception as exc:  # noqa: BLE001 - one page that cannot be drawn is reported alone
                yield number, exc
    finally:
        document.close()


def ocr_images(source: str, images: Iterator[tuple[int, object]], total: int,
               threads: int | None = None, read: Callable | None = None) -> tuple[dict[int, str], dict[int, str]]:
    """Text per page number (what read, by default recognise_text, gives for its image), and the error
    per page number for pages that could not be read."""
    read = read or recognise_text
    texts: dict[int, str] = {}
    failed: dict[int, str] = {}
    threads = threads or ocr_threads()
    in_flight: deque[tuple[int, Future]] = deque()

    def finish(number: int, future: Future) -> None:
        try:
            texts[number] = future.result()
        except Exception as exc:  # noqa: BLE001 - reported for this page, the rest are read
            failed[number] = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        report_progress(PageProgress(source, len(texts) + len(failed), total))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ocr") as pool:
        for number, image in images:
            if isinstance(image, Exception):
                failed[number] = f"could not be drawn ({image.__class__.__name__}: {str(image)[:200]})"
                report_progress(PageProgress(source, len(texts) + len(failed), total))
                continue
            while len(in_flight) >= 2 * threads:
                finish(*in_flight.popleft())
            in_flight.append((number, pool.submit(read, image)))
        while in_flight:
            finish(*in_flight.popleft())
    return texts, failed


class PageBar:
    """A progress bar of pages per source being OCR'd, fed PageProgress events (a no-op when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.source: str | None = None

    def __call__(self, event: PageProgress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or event.source != self.source:
            self.close()
            name = event.source.replace("\\", "/").rsplit("/", 1)[-1]
            self.bar = tqdm(total=event.total, desc=f"OCR {name}", unit="page", leave=False)
            self.source = event.source
        self.bar.n = event.done
        self.bar.refresh()
        if event.done >= event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
