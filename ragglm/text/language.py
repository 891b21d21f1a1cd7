"""Tell Chinese from English by the share of CJK characters among letters."""

import re

__all__ = ["detect_language", "is_cjk"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def is_cjk(char: str) -> bool:
    return bool(_CJK.match(char))


def detect_language(text: str) -> str:
    """'zh' or 'en'. A few Chinese characters outweigh many Latin ones: each carries a word."""
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    return "zh" if cjk > 0 and cjk >= latin_words * 0.5 else "en"
