"""Images (.png, .jpg, .jpeg, .tif, .tiff, .bmp, .webp) read by OCR; each frame of a TIFF is a page."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from ragglm.connectors.ocr import OCR_INSTALL, OcrUnavailable, import_engine, ocr_mode
from ragglm.connectors.ocr_pages import ocr_images
from ragglm.documents import Document, Page
from ragglm.errors import SourceError

__all__ = ["IMAGE_SUFFIXES", "MAX_FRAMES", "MAX_PIXELS", "load_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MAX_PIXELS = 100_000_000  # per frame: a photographed page is 12-50 million; more is a decompression bomb
MAX_FRAMES = 1000
_LONG_SIDE = 4000  # larger frames are scaled down to this: text on a page stays legible, memory bounded
_FIX = "open it in an image viewer and save it again as PNG or JPEG"


def _open(data: bytes, source: str):
    """The image and its number of frames; a SourceError when it cannot be decoded or is too large."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            frames = getattr(image, "n_frames", 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SourceError(source, f"is too large an image to read safely ({exc})",
                          "scale it down below 100 megapixels") from exc
    except Image.UnidentifiedImageError as exc:
        raise SourceError(source, "not a readable image (no PNG, JPEG, TIFF, BMP or WebP image in it, "
                          "or a damaged one)", _FIX) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise SourceError(source, f"not a readable image ({exc})", _FIX) from exc
    if frames > MAX_FRAMES:
        raise SourceError(source, f"has {frames} frames, more than the {MAX_FRAMES} ragglm reads",
                          "split it into smaller files")
    return image, frames


def _frames(image, frames: int):
    """(frame number, RGB image or the exception that stopped its decoding), one frame at a time.

    Each frame of a TIFF declares its own size: one past MAX_PIXELS or of no pixels fails alone."""
    from PIL import Image

    for number in range(1, frames + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.seek(number - 1)
            width, height = image.size
            if not width or not height or width * height > MAX_PIXELS:
                raise ValueError(f"the frame is {width}x{height} pixels: none, or more than "
                                 f"{MAX_PIXELS // 10**6} million")
            frame = image.convert("RGB")
            if max(frame.size) > _LONG_SIDE:
                frame.thumbnail((_LONG_SIDE, _LONG_SIDE))
            yield number, frame
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            yield number, exc


def load_image(path: Path | str, data: bytes | None = None) -> Document:
    """One page per frame, with the text OCR reads on it; a damaged image is a SourceError naming it."""
    source = str(path)
    data = Path(path).read_bytes() if data is None else data
    if ocr_mode() == "never":
        raise SourceError(source, "an image is read by OCR, and OCR is off", "read it with --ocr auto (or RAGGLM_OCR=auto)")
    try:
        import_engine()
    except OcrUnavailable as exc:
        raise SourceError(source, "an image is read by OCR, and the OCR engine is not installed",
                          OCR_INSTALL) from exc
    image, frames = _open(data, source)
    texts, failed = ocr_images(source, _frames(image, frames), frames)
    if len(failed) == frames:
        raise SourceError(source, f"not a readable image ({failed[1]})", _FIX)
    pages = [Page(number, texts.get(number, "")) for number in range(1, frames + 1)]
    metadata: dict = {"page_count": len(pages), "ocr_pages": sorted(texts), "text_layer_pages": 0,
                      "warnings": [], "notes": []}
    if failed:
        metadata["ocr_failed_pages"] = sorted(failed)
        metadata["warnings"].append(f"{source}: frame(s) {', '.join(map(str, sorted(failed)))} could not be read "
                                    f"({next(iter(failed.values()))}); the others were indexed")
    if not any(page.text.strip() for page in pages):
        raise SourceError(source, "OCR found no text in the image", "check that it shows legible text")
    return Document(source, pages, title=Path(source).stem, metadata=metadata)
