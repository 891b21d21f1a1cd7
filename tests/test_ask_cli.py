"""`ragglm ask` end to end on the example manuals: a real index, the real engine, cited answers."""

import json
import subprocess
import sys

import pytest

RAGGLM = [sys.executable, "-m", "ragglm.cli"]


def run(*args, cwd=None):
    return subprocess.run([*RAGGLM, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_ask_json_cites_the_pdf_page(manuals):
    done = run("ask", "--docs", str(manuals), "--json", "How long does the filter cartridge last?")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) >= {"answer", "citations", "mode", "model", "timings"}
    assert payload["answer"].strip()
    assert payload["model"] == "smollm2"
    assert {"ttft_s", "total_s"} <= set(payload["timings"])
    cited = {(c["source"].rsplit("/", 1)[-1], c["page"]) for c in payload["citations"]}
    assert ("aquapure-w3-manual.pdf", 3) in cited
    pdf_citation = next(c for c in payload["citations"] if c["page"] == 3)
    assert "12 months" in pdf_citation["text"]


def test_missing_path_is_named_and_fails(tmp_path):
    done = run("ask", "--docs", str(tmp_path / "nowhere"), "anything?")
    assert done.returncode == 1
    assert "nowhere" in done.stderr and "no such file or folder" in done.stderr


def test_empty_folder_is_named_and_fails(tmp_path):
    done = run("ask", "--docs", str(tmp_path), "anything?")
    assert done.returncode == 1
    assert str(tmp_path) in done.stderr and "no supported files" in done.stderr


@pytest.mark.slow
def test_unreadable_file_is_reported_and_others_still_answer(manuals, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n this is not really a pdf")
    done = run("ask", "--docs", str(manuals), "--docs", str(broken), "--json", "--mode", "extractive",
               "What does error code E2 mean?")
    assert done.returncode == 0, done.stderr
    assert "broken.pdf" in done.stderr
    payload = json.loads(done.stdout)
    assert any("leak" in c["text"] for c in payload["citations"])


def test_a_bad_path_fails_before_torch_or_the_embedder_loads(tmp_path):
    probe = ("import sys; from typer.testing import CliRunner; from ragglm.cli import app; "
             f"done = CliRunner().invoke(app, ['ask', '--docs', {str(tmp_path / 'nowhere')!r}, 'x']); "
             "print(done.exit_code, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False", "False"], done.stderr
