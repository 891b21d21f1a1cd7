"""--ocr on the command line: checked before anything is read, then in force for the parsing processes."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from ragglm.cli import app


def test_a_bad_ocr_mode_is_refused_by_name(tmp_path):
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--kb", str(tmp_path / "kb"), "--ocr", "sometimes"])
    assert result.exit_code == 2
    assert "--ocr 'sometimes': use one of auto, always, never" in result.output


@pytest.mark.slow
def test_ocr_never_reaches_the_readers_and_an_image_is_refused_with_the_way_to_read_it(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("RAGGLM_OCR", raising=False)
    Image.new("RGB", (60, 30), "white").save(tmp_path / "note.png")
    (tmp_path / "guide.md").write_text("# Guide\n\nUse the blue cable.", encoding="utf-8")
    try:
        result = CliRunner().invoke(app, ["index", str(tmp_path), "--kb", str(tmp_path / "kb"), "--ocr", "never"])
        assert os.environ["RAGGLM_OCR"] == "never"
    finally:
        os.environ.pop("RAGGLM_OCR", None)
    assert result.exit_code == 6  # some inputs could not be read, the others were indexed
    assert "note.png: an image is read by OCR, and OCR is off (read it with --ocr auto" in result.output
