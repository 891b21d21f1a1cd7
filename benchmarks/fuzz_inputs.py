"""Seeded hostile and careless inputs for every connector: mutated real files, crafted PDFs and
DOCX files, decompression bombs, deep HTML, long runs without punctuation, legacy charsets, noise,
and images: damaged, declaring huge or no dimensions, thin strips, too many frames, misnamed.

`inputs(seed, count)` yields (file name, bytes); the same seed gives the same inputs.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["IMAGE_KINDS", "KINDS", "inputs"]

MANUALS = Path(__file__).resolve().parents[1] / "examples" / "manuals"


def _mutated(data: bytes, rng: random.Random) -> bytes:
    """Flipped bytes, a cut tail or a repeated slice: what a broken download or disk leaves."""
    data = bytearray(data)
    move = rng.choice(("flip", "cut", "repeat"))
    if move == "flip":
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif move == "cut":
        del data[rng.randrange(len(data)):]
    else:
        start = rng.randrange(len(data))
        data[start:start] = data[start:start + rng.randint(1, 4096)] * rng.randint(2, 50)
    return bytes(data)


def _real(suffix: str) -> bytes:
    return next(MANUALS.glob(f"*{suffix}")).read_bytes()


def _looping_pdf(rng: random.Random) -> bytes:
    """A page tree that lists one page many times (a crafted file that hangs a naive reader)."""
    repeats = rng.choice((10_000, 100_000))
    kids = " ".join(["3 0 R"] * repeats)
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {repeats} >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
        "<< /Length 44 >>\nstream\nBT /F1 12 Tf 20 100 Td (Looping page) Tj ET\nendstream",
    ]
    body, offsets = b"%PDF-1.4\n", []
    for number, text in enumerate(objects, 1):
        offsets.append(len(body))
        body += f"{number} 0 obj\n{text}\nendobj\n".encode()
    xref = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    body += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    body += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return body


def _table_pdf() -> bytes:
    """A page of text over a ruled table, the kind of page that goes to the table search."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    table = Table([["Register", "Offset", "Reset"], *[[f"R{n}", f"0x{4 * n:02X}", "0"] for n in range(12)]])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer).build([Paragraph("Register map of the controller.", getSampleStyleSheet()["BodyText"]),
                                     table])
    return buffer.getvalue()


def _damaged_table_pdf(rng: random.Random) -> bytes:
    """A table page with flipped bytes or repeated slices, past the end-of-file check (a cut file fails
    before the table search)."""
    data = _table_pdf()
    tail = data[-64:]
    return _mutated(data[:-64], rng) + tail if rng.random() < 0.8 else data


def _docx(document_xml: bytes, zeros_mb: int = 0) -> bytes:
    """A minimal .docx around a document.xml body; zeros_mb adds a member of that many zero bytes,
    written in pieces so that a bomb never exists unpacked here."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml",
                         '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                         'content-types"><Default Extension="xml" ContentType="application/xml"/>'
                         '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                         'officedocument.wordprocessingml.document.main+xml"/></Types>')
        archive.writestr("_rels/.rels",
                         '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
                         '2006/relationships"><Relationship Id="r1" Type="http://schemas.openxmlformats.org/'
                         'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
                         '</Relationships>')
        archive.writestr("word/document.xml", document_xml)
        if zeros_mb:
            with archive.open("word/media/zeros.bin", "w") as member:
                for _ in range(zeros_mb):
                    member.write(bytes(2**20))
    return buffer.getvalue()


_W = b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'


def _many_paragraphs(rng: random.Random) -> bytes:
    return _docx(_W + b"<w:p><w:r><w:t>x</w:t></w:r></w:p>" * rng.choice((250_000, 1_000_000)) + b"</w:body></w:document>")


def _zip_bomb(rng: random.Random) -> bytes:
    return _docx(_W + b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p></w:body></w:document>", rng.choice((300, 600)))


def _deep_html(rng: random.Random) -> bytes:
    depth = rng.choice((20_000, 100_000))
    stray = rng.choice(("</span>", "</p>", "</li>", ""))
    return ("<html><body>" + "<div>" * depth + "deep text" + stray * depth + "</body></html>").encode()


def _long_run(rng: random.Random) -> bytes:
    return (rng.choice(".a-中;") * rng.choice((40_000, 200_000, 1_000_000))).encode()


def _legacy_text(rng: random.Random) -> bytes:
    text = _real(".md").decode("utf-8")
    for encoding in rng.sample(["gbk", "big5", "shift_jis", "euc_kr", "cp1252"], 5):
        try:
            return text.encode(encoding)
        except UnicodeEncodeError:
            continue
    return text.encode("utf-16")


_IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")


def _image(fmt: str, size: tuple[int, int] = (160, 48), text: str = "Filter 12 months", frames: int = 1) -> bytes:
    """A small image of a line of text (what a photographed label is), saved as fmt."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB" if fmt != "TIFF" else "L", size, "white")
    ImageDraw.Draw(picture).text((6, size[1] // 3), text, fill="black")
    buffer = io.BytesIO()
    more = {"save_all": True, "append_images": [picture] * (frames - 1)} if frames > 1 else {}
    picture.save(buffer, fmt, **more)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height over a few bytes of pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
            + chunk(b"IEND", b""))


def _jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(_image("JPEG"))
    frame = data.find(b"\xff\xc0")  # start of frame: precision, then height and width
    data[frame + 5:frame + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))  # 16-bit fields
    return bytes(data)


def _tiff_ifds(data: bytes) -> list[int]:
    offset, ifds = struct.unpack_from("<I", data, 4)[0], []
    while offset and offset not in ifds:
        ifds.append(offset)
        entries = struct.unpack_from("<H", data, offset)[0]
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * entries)[0]
    return ifds


def _tiff_frame_declaring(side: int) -> bytes:
    """A two-frame TIFF whose second frame declares side x side pixels: only the first is checked on opening."""
    data = bytearray(_image("TIFF", frames=2))
    second = _tiff_ifds(data)[1]
    for entry in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * entry
        tag, kind = struct.unpack_from("<HH", data, at)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H", data, at + 8, min(side, 65535)) if kind == 3 else struct.pack_into(
                "<I", data, at + 8, side)
    return bytes(data)


def _image_bomb(rng: random.Random) -> bytes:
    side = rng.choice((12_000, 30_000, 100_000))
    return rng.choice((_png_declaring, _jpeg_declaring))(side, side) if rng.random() < 0.7 else _tiff_frame_declaring(side)


def _damaged_image(rng: random.Random) -> bytes:
    """A cut image, or a PNG with flipped bytes (its checksums catch them): these fail without OCR."""
    fmt = rng.choice(_IMAGE_FORMATS)
    data = _image(fmt)
    if fmt == "PNG" and rng.random() < 0.5:
        data = bytearray(data)
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(40, len(data) - 12)] ^= 0xFF
        return bytes(data)
    return data[:rng.randrange(8, len(data) // 2)]


def _odd_image(rng: random.Random) -> bytes:
    """No pixels, one pixel, a strip thousands of pixels long and one high, too many frames, a TIFF
    whose frame list loops back on itself."""
    move = rng.choice(("zero", "one", "strip", "frames", "loop"))
    if move == "zero":
        return _png_declaring(0, rng.choice((0, 1)))
    if move == "one":
        return _image(rng.choice(("PNG", "WEBP")), size=(1, 1), text="")
    if move == "strip":
        return _image("PNG", size=(rng.choice((3000, 8000)), 1), text="")
    if move == "frames":
        return _image("TIFF", size=(4, 4), text="", frames=1001)
    data = bytearray(_image("TIFF", size=(8, 8), text=""))
    first = _tiff_ifds(data)[0]
    struct.pack_into("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0], first)
    return bytes(data)


def _misnamed(rng: random.Random) -> bytes:
    """Bytes of another kind under an image name (a PDF saved as .png), or now and then an image under
    another image type's name, which is read as what it is."""
    if rng.random() < 0.2:
        return _image(rng.choice(_IMAGE_FORMATS))
    return rng.choice((_real(".pdf")[:4096], _real(".html"), b"GIF89a\x01\x00", b"%PDF-1.4\n%%EOF\n"))


def _noise(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 100, 10_000)))


# kind -> (file suffixes, maker)
KINDS: dict[str, tuple[tuple[str, ...], Callable[[random.Random], bytes]]] = {
    "mutated_pdf": ((".pdf",), lambda rng: _mutated(_real(".pdf"), rng)),
    "mutated_html": ((".html",), lambda rng: _mutated(_real(".html"), rng)),
    "mutated_md": ((".md",), lambda rng: _mutated(_real(".md"), rng)),
    "mutated_docx": ((".docx",), lambda rng: _mutated(_docx(_W + b"<w:p><w:r><w:t>Filter</w:t></w:r></w:p>"
                                                                 b"</w:body></w:document>"), rng)),
    "looping_pdf": ((".pdf",), _looping_pdf),
    "damaged_table_pdf": ((".pdf",), _damaged_table_pdf),
    "many_paragraphs": ((".docx",), _many_paragraphs),
    "zip_bomb": ((".docx",), _zip_bomb),
    "deep_html": ((".html",), _deep_html),
    "long_run": ((".txt", ".md"), _long_run),
    "legacy_text": ((".txt",), _legacy_text),
    "noise": ((".pdf", ".docx", ".html", ".md", ".txt", ".png", ".jpg", ".tiff", ".webp"), _noise),
    "damaged_image": ((".png", ".jpg", ".tiff", ".webp", ".bmp"), _damaged_image),
    "image_bomb": ((".png", ".jpg", ".tiff"), _image_bomb),
    "odd_image": ((".png", ".tiff", ".webp"), _odd_image),
    "misnamed_image": ((".png", ".jpg", ".tiff", ".webp"), _misnamed),
}
IMAGE_KINDS = ("damaged_image", "image_bomb", "odd_image", "misnamed_image")


def inputs(seed: int, count: int, kinds: Sequence[str] | None = None) -> Iterator[tuple[str, str, bytes]]:
    """(kind, file name, bytes) for count inputs of the given kinds (all by default); mutations are
    most of them, crafted files the rest."""
    rng = random.Random(seed)
    weights = {kind: (6 if kind.startswith("mutated") or kind == "noise" else 1) for kind in kinds or KINDS}
    kinds = list(weights)
    for number in range(count):
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        suffixes, make = KINDS[kind]
        yield kind, f"{number:05d}-{kind}{rng.choice(suffixes)}", make(rng)
