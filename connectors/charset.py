"""Decode bytes of unknown encoding: a declared charset first, then byte-order marks, UTF-8, GB18030."""

from __future__ import annotations

import codecs
import re

from ragglm.errors import SourceError

__all__ = ["decode_bytes", "declared_charset"]

_BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Pages that declare GB2312 or GBK routinely use characters only GB18030 has; it is a superset of both.
_WIDER = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252",
          "latin-1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252"}


def declared_charset(content_type: str | None = None, head: bytes = b"") -> str | None:
    """The charset named by an HTTP Content-Type header, else by a <meta> tag in the first bytes."""
    for found in (_HEADER_CHARSET.search(content_type or ""), _META_CHARSET.search(head[:8192])):
        if found:
            name = found.group(1) if isinstance(found.group(1), str) else found.group(1).decode("ascii")
            try:
                return codecs.lookup(_WIDER.get(name.lower(), name)).name
            except LookupError:
                continue
    return None


def decode_bytes(data: bytes, source: str, declared: str | None = None) -> str:
    """Text of data: a byte-order mark wins, then the declared charset, then UTF-8, then GB18030."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    candidates = [declared] if declared else []
    candidates += ["utf-8", "gb18030"]
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    guess = _detect(data)
    if guess:
        return data.decode(guess, errors="replace")
    raise SourceError(source, "text is in an unknown encoding (not UTF-8 or GB18030)", "save the file as UTF-8")


def _detect(data: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    best = from_bytes(data[:65536]).best()
    return best.encoding if best else None
