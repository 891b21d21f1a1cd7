"""A bounded, seeded fuzz run over every connector and the chunker: clean per-file errors only."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_hostile_inputs_end_in_documents_or_clean_errors_within_the_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("RAGGLM_PARSE_TIMEOUT", "20")
    from fuzz_connectors import run
    from fuzz_inputs import KINDS

    figures = run(seed=8, count=80, workers=2)
    assert figures["crashes"] == 0, figures["crash_examples"]
    assert figures["over_budget"] == 0, figures
    assert figures["read"] > 0 and figures["clean_errors"] > 0
    assert len(figures["kinds"]) >= len(KINDS) - 2, figures["kinds"]  # the seed reaches nearly every kind


@pytest.mark.slow
def test_hostile_images_end_as_clean_errors_or_reads_within_the_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("RAGGLM_PARSE_TIMEOUT", "20")
    pytest.importorskip("rapidocr_onnxruntime", reason="images are read by the OCR extra")
    from fuzz_connectors import run
    from fuzz_inputs import IMAGE_KINDS

    figures = run(seed=1, count=16, workers=2, kinds=list(IMAGE_KINDS))
    assert figures["crashes"] == 0, figures["crash_examples"]
    assert figures["over_budget"] == 0, figures
    assert figures["clean_errors"] > 0 and figures["read"] > 0  # a misnamed or half-bad image is still read
    assert figures["timed_out"] == 0, figures  # every one ends by itself, none is stopped at the budget
    assert set(figures["kinds"]) == set(IMAGE_KINDS), figures["kinds"]
