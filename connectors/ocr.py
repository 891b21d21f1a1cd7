"""Optical character recognition, offline: RapidOCR's PP-OCRv4 Chinese/English models, shipped in its wheel.

The engine is optional (`pip install "ragglm[ocr]"`); without it a page that needs OCR is reported
with that command, never read as empty. One engine per thread: pages are recognised in parallel
threads (ONNX Runtime releases the GIL), each engine on one core.
"""

from __future__ import annotations

import math
import os
import threading

from ragglm.config import Settings
from ragglm.connectors.ocr_layout import OcrBox, page_text
from ragglm.connectors.ocr_tables import find_ruled_tables
from ragglm.errors import ConfigError

__all__ = ["OCR_DPI", "OCR_INSTALL", "OCR_MODES", "OcrUnavailable", "import_engine", "ocr_available",
           "ocr_mode", "recognise", "recognise_text", "word_spaces"]

OCR_INSTALL = 'pip install "ragglm[ocr]"'
OCR_MODES = ("auto", "always", "never")
OCR_DPI = 200  # scans are read at the resolution the OCR figures were measured at

_local = threading.local()
_MAX_SIDE = 2000  # pixels: larger pages are scaled down first, as the engine's own pipeline does
# The detector scales an image's short side up to 736 px: a 3000x1 strip would grow to 2,208,000 px
# wide, gigabytes. A strip is padded with white until its sides are at most this far apart.
_MAX_ASPECT = 8
_MIN_SCORE = 0.5  # recognitions the engine is less sure of are noise (specks, rules, pictures)
_REC_HEIGHT, _REC_STRIDE = 48, 8  # the recognition model's input height and pixels per output step
_SPACE_GAP = 0.18  # a blank run this share of the line height between Latin letters is a space
_DIGIT_GAP = 0.3  # digits stand further apart than letters: "12" must not become "1 2"


class OcrUnavailable(RuntimeError):
    """The OCR extra is not installed."""


def ocr_mode() -> str:
    """The ocr setting ($RAGGLM_OCR, else ragglm.toml): auto (pages without a text layer, and images),
    always (every page), never (images are then refused)."""
    raw = os.environ.get("RAGGLM_OCR") or Settings.from_env().ocr or "auto"
    mode = raw.strip().lower()
    if mode not in OCR_MODES:
        raise ConfigError(f"ocr = {raw!r} (RAGGLM_OCR or ragglm.toml): use one of {', '.join(OCR_MODES)}")
    return mode


def import_engine():
    """The RapidOCR class; OcrUnavailable naming the install command when the extra is absent."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise OcrUnavailable(f"the OCR engine is not installed ({exc}); install it with: {OCR_INSTALL}") from exc
    return RapidOCR


def ocr_available() -> bool:
    try:
        import_engine()
    except OcrUnavailable:
        return False
    return True


def _engine():
    engine = getattr(_local, "engine", None)
    if engine is None:
        import logging

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        # one core per engine: parallelism comes from pages, and two sessions per core only contend
        engine = import_engine()(intra_op_num_threads=1, inter_op_num_threads=1)
        _local.engine = engine
    return engine


def recognise(image) -> list[OcrBox]:
    """The text boxes found on a PIL image, in the engine's order, in the image's pixels."""
    import numpy as np

    engine = _engine()
    scale = min(1.0, _MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    image = _padded(image)
    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # (h, w, 3) BGR
    found, _ = engine.text_det(pixels)
    if found is None or len(found) == 0:
        return []
    crops = engine.get_crop_img_list(pixels, found)
    results, _ = engine.text_rec(crops, True)
    boxes = []
    for points, crop, (text, score, columns) in zip(found, crops, results, strict=True):
        if score < _MIN_SCORE or not text.strip():
            continue
        xs, ys = points[:, 0] / scale, points[:, 1] / scale
        boxes.append(OcrBox(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()),
                            word_spaces(text, columns, crop), float(score)))
    return boxes


def _padded(image):
    """image with white added right and below until its short side is a _MAX_ASPECT-th of its long
    side; the pixels stay where they were, so the boxes found need no shift."""
    from PIL import Image

    side = math.ceil(max(image.size) / _MAX_ASPECT)
    if min(image.size) >= side:
        return image
    padded = Image.new("RGB", (max(image.width, side), max(image.height, side)), "white")
    padded.paste(image.convert("RGB"), (0, 0))
    return padded


def word_spaces(text: str, columns: list, crop) -> str:
    """text with a space wherever the line's image shows one between two Latin characters.

    The recognition model often drops the narrow spaces of Latin text ("turntheoldcartridge");
    its output steps (columns) place each character on the line, and a run of blank pixel columns
    between two characters wider than a space's share of the line height is a space."""
    steps, _, cols, _, _ = columns
    positions = [c for word in cols for c in word]
    if len(positions) != len(text) or len(text) < 2:
        return text
    height, width = crop.shape[:2]
    gray = crop.mean(axis=2)  # (h, w)
    ink = (gray < (gray.max() + gray.min()) / 2).any(axis=0)  # (w,) columns holding a dark pixel
    resized = min(math.ceil(_REC_HEIGHT * width / height), steps * _REC_STRIDE)  # the line as the model saw it

    def x(step: int) -> int:
        return int((step + 0.5) * _REC_STRIDE * width / resized)

    out = text[0]
    for i in range(1, len(text)):
        left, right = text[i - 1], text[i]
        if left != " " and right != " " and left.isascii() and right.isascii():
            need = (_DIGIT_GAP if left.isdigit() and right.isdigit() else _SPACE_GAP) * height
            run = widest = 0
            for blank in ~ink[max(0, x(positions[i - 1])):min(width, x(positions[i]))]:
                run = run + 1 if blank else 0
                widest = max(widest, run)
            if widest >= need:
                out += " "
        out += right
    return out


def recognise_text(image) -> str:
    """The image's text in reading order, ruled tables as rows under their header."""
    import numpy as np

    tables = find_ruled_tables(np.asarray(image.convert("L")))
    return page_text(recognise(image), float(image.width), tables)
