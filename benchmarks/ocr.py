"""OCR accuracy and speed on the shared vendor PDFs (zh, en): ragglm's OCR and Tesseract in one run.

Pages of ../shared/data/pdfs are rendered at 200 dpi and read back by OCR; the PDF's own text layer is
the truth. Character error rate: edit distance over characters / characters of the truth, both
NFKC-normalised (full- and half-width forms alike) with whitespace removed, summed over the pages of
a language. The truth is taken in visual order (text-layer characters grouped into lines by their
baseline, lines top to bottom, characters left to right), since a PDF may store a table after the
text below it. Pictures are removed from the pages before they are drawn: text in a screenshot has no truth in the
text layer. Runs of four or more leader dots are dropped from both sides. `cer_percent` reads our pages
line by line, as Tesseract and the truth are ordered; `cer_percent_table_rows` as ragglm ships them,
with ruled tables read cell by cell (order counted too). Pages/s: wall time over
the same pages, both engines on all cores (a busy machine shows in load_average_at_start).

    python benchmarks/ocr.py                  # one JSON line; --pages N per language (default 6)
    python benchmarks/ocr.py --retrieval      # + recall@5 of the QA sets over OCR'd renderings

Retrieval on scans: paragraphs of CMRC 2018 (zh) and SQuAD 2.0 (en) are drawn as pages (11 pt at
200 dpi), OCR'd, indexed as ragglm indexes them, and asked their questions; a hit is a top-5 chunk of
the question's paragraph holding a gold answer, whitespace ignored and up to a tenth of its characters
misread (rapidfuzz partial_ratio >= 90: a long answer span is often a whole sentence, and the
question is whether the chunk that holds it is found; misreadings are what the error rate counts).
Compared with the same paragraphs' own text under the same rule.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from shared_data import shared_data_dir

from ragglm.connectors.ocr import OCR_DPI, recognise
from ragglm.connectors.ocr_layout import page_text
from ragglm.connectors.ocr_pages import ocr_images, ocr_threads
from ragglm.connectors.ocr_tables import find_ruled_tables

MIN_TRUTH_CHARS = 200  # pages with less text (covers, figures) say little about an OCR engine
TESSERACT_LANGS = {"zh": "chi_sim+eng", "en": "eng"}
QA_SETS = {"cmrc2018": "cmrc2018_trial.json", "squad2": "squad2_dev_articles1-8.json"}
FONTS = ["/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
         "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"]


def normalise(text: str) -> str:
    """NFKC, no whitespace, no leader dots (a table of contents' dot count is typesetting, not text),
    no cell separators (a ruled table read as "a | b" rows: layout the text layer does not hold)."""
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text.replace(" | ", " ")))
    return re.sub(r"[.·…_]{4,}", "", text)


def visual_text(page) -> str:
    """The page's text-layer characters in visual order: lines by baseline, top to bottom, left to right."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    chars = []
    x, y = ctypes.c_double(), ctypes.c_double()
    for i in range(textpage.count_chars()):
        char = textpage.get_text_range(i, 1)
        if char.strip():
            pdfium_c.FPDFText_GetCharOrigin(textpage.raw, i, ctypes.byref(x), ctypes.byref(y))
            size = pdfium_c.FPDFText_GetFontSize(textpage.raw, i) or 10.0
            chars.append((y.value, size, x.value, char))
    textpage.close()
    lines: list[list] = []  # [baseline, font size, [(x, char)]]
    for baseline, size, left, char in sorted(chars, key=lambda c: -c[0]):
        if lines and lines[-1][0] - baseline <= 0.3 * max(size, lines[-1][1]):
            lines[-1][2].append((left, char))
        else:
            lines.append([baseline, size, [(left, char)]])
    return "\n".join("".join(c for _, c in sorted(line[2])) for line in lines)


def sample_pages(folder: Path, count: int, seed: int = 0) -> list[tuple[str, int, str, object]]:
    """(file name, page number, truth, image) for count pages spread over the folder's PDFs."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    candidates = []
    for path in sorted(folder.glob("*.[pP][dD][fF]")):
        document = pdfium.PdfDocument(str(path))
        for index in range(len(document)):
            truth = visual_text(document[index])
            if len(normalise(truth)) >= MIN_TRUTH_CHARS:
                candidates.append((path, index, truth))
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    pages = []
    for path, index, truth in sorted(chosen, key=lambda c: (c[0].name, c[1])):
        page = pdfium.PdfDocument(str(path))[index]
        # pictures are left out: text in a screenshot has no truth in the text layer
        for picture in list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=1)):
            page.remove_obj(picture)
        page.gen_content()
        pages.append((path.name, index + 1, truth, page.render(scale=OCR_DPI / 72).to_pil().convert("RGB")))
    return pages


def tesseract(image, lang: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    done = subprocess.run(["tesseract", "stdin", "stdout", "-l", lang], input=buffer.getvalue(),
                          capture_output=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    return done.stdout.decode("utf-8", "replace")


def cer(truths: list[str], reads: list[str]) -> float:
    from rapidfuzz.distance import Levenshtein

    errors = sum(Levenshtein.distance(normalise(t), normalise(r)) for t, r in zip(truths, reads, strict=True))
    return round(100 * errors / sum(len(normalise(t)) for t in truths), 2)


def lines_and_tables(image) -> tuple[str, str]:
    """The page read line by line (as Tesseract reads it, and as the truth is ordered), and as ragglm
    ships it, ruled tables cell by cell: a cell's lines come together, where the text layer's visual
    order interleaves them with the next cell's, so that figure counts order as well as characters."""
    boxes = recognise(image)
    tables = find_ruled_tables(np.asarray(image.convert("L")))
    return page_text(boxes, float(image.width)), page_text(boxes, float(image.width), tables)


def run_engines(pages, lang: str) -> dict:
    truths = [truth for _, _, truth, _ in pages]
    threads = ocr_threads()
    started = time.perf_counter()
    texts, failed = ocr_images(lang, iter((n, image) for n, (_, _, _, image) in enumerate(pages, 1)), len(pages),
                               read=lines_and_tables)
    ours_s = time.perf_counter() - started
    ours = [texts.get(n, ("", ""))[0] for n in range(1, len(pages) + 1)]
    shipped = [texts.get(n, ("", ""))[1] for n in range(1, len(pages) + 1)]
    out = {"pages": [f"{name}#{number}" for name, number, _, _ in pages], "truth_chars": sum(len(normalise(t)) for t in truths),
           "ragglm": {"engine": "RapidOCR PP-OCRv4 (rapidocr-onnxruntime)", "cer_percent": cer(truths, ours),
                      "cer_percent_table_rows": cer(truths, shipped),
                      "pages_per_s": round(len(pages) / ours_s, 3), "failed_pages": len(failed)}}
    out["ragglm"]["cer_percent_per_page"] = [cer([t], [r]) for t, r in zip(truths, ours, strict=True)]
    if shutil.which("tesseract"):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            theirs = list(pool.map(lambda page: tesseract(page[3], TESSERACT_LANGS[lang]), pages))
        tess_s = time.perf_counter() - started
        out["tesseract"] = {"engine": f"tesseract {TESSERACT_LANGS[lang]}", "cer_percent": cer(truths, theirs),
                            "pages_per_s": round(len(pages) / tess_s, 3),
                            "cer_percent_per_page": [cer([t], [r]) for t, r in zip(truths, theirs, strict=True)]}
    else:
        out["tesseract"] = "not installed (apt-get install tesseract-ocr tesseract-ocr-chi-sim)"
    return out


# ---- retrieval on scans ----------------------------------------------------------------------------

def _font_path() -> str:
    for path in FONTS:
        if Path(path).exists():
            return path
    raise SystemExit("benchmarks/ocr.py --retrieval draws Chinese pages: install a CJK font "
                     "(apt-get install fonts-wqy-microhei)")


def draw_page(text: str, font, dpi: int = OCR_DPI):
    """text typeset on an A4 page image: 11 pt, 2.5 cm margins, words (or CJK characters) wrapped."""
    from PIL import Image, ImageDraw

    width, margin = int(8.27 * dpi), int(dpi / 2.54 * 2.5)
    pieces = re.findall(r"[\u3000-\u9fff\uff00-\uffef]|[^\s\u3000-\u9fff\uff00-\uffef]+\s*|\s+", text)
    lines, line = [], ""
    for piece in pieces:
        if line and font.getlength(line + piece.rstrip()) > width - 2 * margin:
            lines.append(line)
            line = piece.lstrip()
        else:
            line += piece
    lines.append(line)
    pitch = int(font.size * 1.5)
    image = Image.new("RGB", (width, max(int(11.69 * dpi), 2 * margin + pitch * len(lines))), "white")
    draw = ImageDraw.Draw(image)
    for n, content in enumerate(lines):
        draw.text((margin, margin + n * pitch), content, fill="black", font=font)
    return image


def bears(answer: str, chunk: str) -> bool:
    """Whether the chunk holds the answer, up to a tenth of its characters misread."""
    from rapidfuzz import fuzz

    answer, chunk = normalise(answer), normalise(chunk)
    return answer in chunk or fuzz.partial_ratio(answer, chunk) >= 90


def retrieval(data: Path, paragraphs_per_set: int, sets: list[str]) -> dict:
    from PIL import ImageFont

    from ragglm.documents import Document, Page
    from ragglm.index.embedder import Embedder
    from ragglm.index.store import IndexStore
    from ragglm.text.chunker import Chunker

    font = ImageFont.truetype(_font_path(), int(11 / 72 * OCR_DPI))
    embedder = Embedder()
    out = {}
    for name, file in QA_SETS.items():
        if name not in sets:
            continue
        articles = json.loads((data / file).read_text(encoding="utf-8"))["data"]
        paragraphs = [p for a in articles for p in a["paragraphs"]]
        chosen = random.Random(0).sample(range(len(paragraphs)), min(paragraphs_per_set, len(paragraphs)))
        contexts = {f"p{i}": paragraphs[i]["context"] for i in chosen}
        questions = [(qa["question"], f"p{i}", [a["text"] for a in qa["answers"] if a["text"].strip()])
                     for i in chosen for qa in paragraphs[i]["qas"]
                     if qa.get("answers") and not qa.get("is_impossible", False)]
        started = time.perf_counter()
        read, failed = ocr_images(name, iter((n, draw_page(contexts[pid], font)) for n, pid in enumerate(contexts, 1)),
                                  len(contexts))
        ocr_s = time.perf_counter() - started
        scanned = {pid: read.get(n, "") for n, pid in enumerate(contexts, 1)}
        result = {"paragraphs": len(contexts), "questions": len(questions), "ocr_pages_per_s": round(len(contexts) / ocr_s, 3),
                  "cer_percent": cer(list(contexts.values()), list(scanned.values()))}
        for label, texts in (("text", contexts), ("ocr", scanned)):
            store, chunker = IndexStore(embedder), Chunker()
            for pid, text in texts.items():
                store.add(pid, pid, chunker.split(Document(pid, [Page(1, text)])))
            hits = 0
            for question, pid, answers in questions:
                top = store.search(question, 5)
                hits += any(h.chunk.source == pid and any(bears(a, h.chunk.text) for a in answers) for h in top)
            result[f"recall@5_{label}"] = round(100 * hits / len(questions), 2)
        result["ocr_over_text"] = round(result["recall@5_ocr"] / result["recall@5_text"], 3)
        out[name] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6, help="pages per language (default 6; 0: none)")
    parser.add_argument("--retrieval", action="store_true", help="also recall@5 over OCR'd renderings of the QA sets")
    parser.add_argument("--paragraphs", type=int, default=30, help="paragraphs per QA set for --retrieval")
    parser.add_argument("--qa-sets", default=",".join(QA_SETS), help="QA sets for --retrieval (comma-separated)")
    args = parser.parse_args()
    data = shared_data_dir(required=True)
    result: dict = {"benchmark": "ocr", "dpi": OCR_DPI, "threads": ocr_threads(), "cores": os.cpu_count(),
                    "load_average_at_start": round(os.getloadavg()[0], 1)}
    for lang in ("zh", "en") if args.pages > 0 else ():
        result[lang] = run_engines(sample_pages(data / "pdfs" / lang, args.pages), lang)
    if args.retrieval:
        result["retrieval_on_scans"] = retrieval(data, args.paragraphs, args.qa_sets.split(","))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
