"""Seeded hostile and careless inputs for every connector: mutated real files, crafted PDFs and
DOCX files, decompression bombs, deep HTML, long runs without punctuation, legacy charsets, noise.

`inputs(seed, count)` yields (file name, bytes); the same seed gives the same inputs.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["KINDS", "inputs"]

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
    "many_paragraphs": ((".docx",), _many_paragraphs),
    "zip_bomb": ((".docx",), _zip_bomb),
    "deep_html": ((".html",), _deep_html),
    "long_run": ((".txt", ".md"), _long_run),
    "legacy_text": ((".txt",), _legacy_text),
    "noise": ((".pdf", ".docx", ".html", ".md", ".txt"), _noise),
}


def inputs(seed: int, count: int) -> Iterator[tuple[str, str, bytes]]:
    """(kind, file name, bytes) for count inputs; mutations are most of them, crafted files the rest."""
    rng = random.Random(seed)
    weights = {kind: (6 if kind.startswith("mutated") or kind == "noise" else 1) for kind in KINDS}
    kinds = list(weights)
    for number in range(count):
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        suffixes, make = KINDS[kind]
        yield kind, f"{number:05d}-{kind}{rng.choice(suffixes)}", make(rng)
