"""Decode bytes of unknown encoding: a declared charset first, then byte-order marks, UTF-8, GB18030."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

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
    """Text of data: a byte-order mark wins, then the declared charset, then UTF-8, then the detector's
    guess, then GB18030 when the result reads as Chinese; text that is garbled in every one of them
    is an error, never indexed as mojibake."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    for encoding in ([declared] if declared else []) + ["utf-8"]:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    # GB18030 decodes nearly any bytes (Big5, Shift-JIS, EUC-KR into garbled hanzi): the detector,
    # which weighs how the decoded text reads, decides among the legacy encodings
    guess = _detect(data)
    if guess:
        return data.decode(guess, errors="replace")
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _reads_as_chinese(text):
        return text
    raise SourceError(source, "the text is garbled in every encoding tried (UTF-8, GB18030, detection)",
                      "save the file as UTF-8")


# GB2312's first level: the 3,755 most frequent hanzi, which cover about 99% of running Chinese text
_LEVEL_ONE = (0xB0, 0xD7)


def _reads_as_chinese(text: str, sample: int = 4000) -> bool:
    """Most CJK characters are common hanzi (text that is not CJK at all also passes)."""
    cjk = [c for c in text[:sample * 4] if "\u3400" <= c <= "\u9fff"][:sample]
    if not cjk:
        return True
    common = sum(1 for c in cjk if _is_level_one(c))
    return common >= 0.8 * len(cjk)


def _is_level_one(character: str) -> bool:
    try:
        lead = character.encode("gb2312")[0]
    except UnicodeEncodeError:
        return False
    return _LEVEL_ONE[0] <= lead <= _LEVEL_ONE[1]


# Among encodings that read a sample equally well, the ones documents are most often written in
_PREFERRED = ("gb18030", "big5", "cp932", "euc_jis_2004", "cp949", "cp1252")


def _detect(data: bytes) -> str | None:
    matches = list(from_bytes(data[:65536]))
    if not matches:
        return None
    least = min(match.chaos for match in matches)
    tied = [match.encoding for match in matches if match.chaos <= least + 0.01]
    return next((name for name in _PREFERRED if name in tied), tied[0])
