"""Scanned PDFs and images read by OCR: pages rendered from a real manual, wrapped without a text layer."""

from __future__ import annotations

import io
import re

import pytest

pdfium = pytest.importorskip("pypdfium2")
pytest.importorskip("rapidocr_onnxruntime")

from pypdf import PdfReader, PdfWriter  # noqa: E402

from ragglm.connectors import load_many, parse_in_order  # noqa: E402
from ragglm.connectors import ocr as ocr_module  # noqa: E402
from ragglm.connectors.image import load_image  # noqa: E402
from ragglm.connectors.ocr import OCR_INSTALL, OcrUnavailable  # noqa: E402
from ragglm.connectors.parallel import ParseJob  # noqa: E402
from ragglm.connectors.pdf import load_pdf  # noqa: E402
from ragglm.errors import SourceError  # noqa: E402
from tests.conftest import MANUALS  # noqa: E402

MANUAL = MANUALS / "aquapure-w3-manual.pdf"
DPI = 110  # small pages keep the tests quick; the manual's 11 pt text is still 17 px high


def _render(page: int):
    """The top half of a page of the manual (its first paragraphs), as a scanner would see it."""
    image = pdfium.PdfDocument(str(MANUAL))[page - 1].render(scale=DPI / 72).to_pil().convert("RGB")
    return image.crop((0, 0, image.width, image.height // 2))


def _scan_pdf(*pages: int) -> bytes:
    """A PDF of images only: what a scanner gives."""
    images = [_render(page) for page in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=DPI, save_all=True, append_images=images[1:])
    return out.getvalue()


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scanned.pdf"
    path.write_bytes(_scan_pdf(3))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Page 1 with the manual's own text layer, page 2 a scan of the manual's page 4."""
    writer = PdfWriter()
    writer.add_page(PdfReader(MANUAL).pages[0])
    writer.add_page(PdfReader(io.BytesIO(_scan_pdf(4))).pages[0])
    path = tmp_path_factory.mktemp("mixed") / "mixed.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


@pytest.mark.slow
def test_a_scanned_pdf_is_read_by_ocr_in_a_parsing_process_with_progress(scan):
    assert not PdfReader(scan).pages[0].extract_text().strip()  # no text layer at all
    events = []
    [(_, document)] = list(parse_in_order([ParseJob(str(scan), scan.read_bytes())], workers=1,
                                          on_progress=events.append))
    assert [page.number for page in document.pages] == [1]
    assert "The composite filter cartridge lasts 12 months" in _flat(document.pages[0].text)
    assert document.metadata["ocr_pages"] == [1]
    assert [(e.source, e.done, e.total) for e in events] == [(str(scan), 1, 1)]


@pytest.mark.slow
def test_an_image_file_is_read_by_ocr_on_its_page(tmp_path):
    path = tmp_path / "photo.png"
    _render(4).save(path)
    [document] = load_many([path]).documents
    assert [page.number for page in document.pages] == [1]
    assert "Error code E1 means the inlet pressure is too low" in _flat(document.pages[0].text)


@pytest.mark.slow
def test_a_mixed_pdf_ocrs_only_its_scanned_page(mixed):
    document = load_pdf(mixed)
    assert document.metadata["ocr_pages"] == [2]
    assert document.metadata["text_layer_pages"] == 1
    assert document.pages[0].text == load_pdf(MANUAL).pages[0].text  # the text layer, untouched
    assert "inlet pressure is too low" in _flat(document.pages[1].text)


def test_ocr_never_leaves_the_scanned_page_out_and_says_how_to_read_it(mixed, scan, monkeypatch):
    monkeypatch.setenv("RAGGLM_OCR", "never")
    document = load_pdf(mixed)
    assert document.pages[1].text == "" and document.metadata["ocr_pages"] == []
    assert "page(s) 2" in document.metadata["notes"][0] and "--ocr auto" in document.metadata["notes"][0]
    with pytest.raises(SourceError, match="OCR is off"):
        load_pdf(scan)


@pytest.mark.slow
def test_a_corrupt_image_is_an_error_for_that_file_while_the_rest_is_read(tmp_path):
    good = tmp_path / "a-good.png"
    _render(3).crop((0, 0, 900, 200)).save(good)
    bad = tmp_path / "b-bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    report = load_many([tmp_path])
    assert [d.source for d in report.documents] == [str(good.resolve())]
    [error] = report.errors
    assert error.source == str(bad.resolve()) and "not a readable image" in str(error)
    assert "save it again as PNG or JPEG" in str(error)


def test_without_the_ocr_extra_scanned_pages_are_named_with_the_install_command(mixed, scan, tmp_path,
                                                                                monkeypatch):
    def absent():
        raise OcrUnavailable("No module named 'rapidocr_onnxruntime'")

    monkeypatch.setattr(ocr_module, "import_engine", absent)
    monkeypatch.setattr("ragglm.connectors.image.import_engine", absent)
    document = load_pdf(mixed)
    [warning] = document.metadata["warnings"]
    assert str(mixed) in warning and "page(s) 2 " in warning and OCR_INSTALL in warning
    assert 'pip install "ragglm[ocr]"' in warning
    assert "Troubleshooting" not in document.text  # the scanned page stays out, said so
    with pytest.raises(SourceError, match=re.escape(OCR_INSTALL)) as raised:
        load_pdf(scan)
    assert str(scan) in str(raised.value)
    image = tmp_path / "page.png"
    _render(3).crop((0, 0, 300, 200)).save(image)
    with pytest.raises(SourceError, match=re.escape(OCR_INSTALL)):
        load_image(image)


@pytest.mark.slow
def test_a_page_whose_ocr_fails_is_named_and_the_others_are_read(tmp_path, monkeypatch):
    from ragglm.connectors import ocr_pages

    first, second = _render(3), _render(4).crop((0, 0, 300, 300))
    path = tmp_path / "two.pdf"
    first.save(path, "PDF", resolution=DPI, save_all=True, append_images=[second])
    recognise = ocr_pages.recognise_text

    def flaky(image):
        if image.width < 1.2 * image.height:  # the second page, square where the first is wide
            raise RuntimeError("the engine gave up")
        return recognise(image)

    monkeypatch.setattr(ocr_pages, "recognise_text", flaky)
    document = load_pdf(path)
    assert "The composite filter cartridge lasts 12 months" in _flat(document.pages[0].text)
    assert document.pages[1].text == "" and document.metadata["ocr_failed_pages"] == [2]
    [warning] = document.metadata["warnings"]
    assert f"{path}: OCR failed on page(s) 2 (page 2: RuntimeError: the engine gave up)" in warning


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for a reader to decide to refuse it."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 50_000])  # past the bound, and past twice the bound
def test_an_image_too_large_to_decode_safely_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    with pytest.raises(SourceError, match=r"bomb\.png: is too large an image to read safely .*below 100 megapixels"):
        load_image(path)
