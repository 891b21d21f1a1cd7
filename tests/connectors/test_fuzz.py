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

    figures = run(seed=3, count=80, workers=2)
    assert figures["crashes"] == 0, figures["crash_examples"]
    assert figures["over_budget"] == 0, figures
    assert figures["read"] > 0 and figures["clean_errors"] > 0
    assert len(figures["kinds"]) >= len(KINDS) - 2, figures["kinds"]  # the seed reaches nearly every kind
