"""Ingestor: one copy of each source however it is spelled, and parser processes that do not
re-run the caller's script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from ragglm.connectors.directory import normalise_url
from ragglm.documents import Document, Page
from ragglm.ingestor import Ingestor
from ragglm.knowledge_base import KnowledgeBase

REPO = Path(__file__).resolve().parent.parent


def test_a_plain_script_without_a_main_guard_indexes_pdfs_in_parallel(manuals, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    pdf = next(manuals.glob("*.pdf"))
    for n in range(5):
        shutil.copy(pdf, docs / f"manual-{n}.pdf")
    script = tmp_path / "index_docs.py"
    script.write_text(textwrap.dedent(f"""
        from ragglm import KnowledgeBase
        print("script ran")  # a worker that re-imported this script would print it again
        kb = KnowledgeBase()
        report = kb.add([{str(docs)!r}], workers=2)
        print(len(report.added), len(report.errors), len(kb.sources))
    """), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["script ran", "5 0 5"], done.stdout


def test_one_folder_under_a_relative_and_an_absolute_path_is_indexed_once(manuals, tmp_path, monkeypatch):
    shutil.copytree(manuals, tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    kb = KnowledgeBase(tmp_path / "kb")
    first = kb.add("./docs")
    second = kb.add(str(tmp_path / "docs"))
    assert second.added == [] and sorted(second.unchanged) == sorted(first.added)
    assert all(Path(source).is_absolute() for source in kb.sources)
    hits = kb.search("What does error code E2 mean?", 5)
    assert len({(h.source, h.chunk.start, h.chunk.text) for h in hits}) == len(hits)


def test_a_knowledge_base_holding_one_file_twice_is_repaired_on_the_next_add(manuals, tmp_path, monkeypatch):
    shutil.copytree(manuals, tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    kb = KnowledgeBase(tmp_path / "kb")
    kb.add(tmp_path / "docs")
    guide = "docs/smartlock-s2-guide.md"  # as an older version stored a relative spelling
    Ingestor(kb.store, kb.chunker).index(Document(guide, [Page(None, Path(guide).read_text(encoding="utf-8"))]), "x")
    kb.save()
    assert guide in KnowledgeBase(tmp_path / "kb").sources
    report = KnowledgeBase(tmp_path / "kb").add(tmp_path / "docs")
    repaired = KnowledgeBase(tmp_path / "kb")
    assert guide not in repaired.sources and str(tmp_path / "docs" / "smartlock-s2-guide.md") in repaired.sources
    assert any("another spelling" in note for note in report.notes)
    assert len(repaired.sources) == len(os.listdir(tmp_path / "docs"))


def test_urls_are_named_in_one_spelling():
    assert normalise_url("HTTP://Example.COM:80/faq#top") == "http://example.com/faq"
    assert normalise_url("https://example.com") == "https://example.com/"
    assert normalise_url("https://example.com:8443/a?b=1") == "https://example.com:8443/a?b=1"
    assert normalise_url("http://[::1]:8080/p") == "http://[::1]:8080/p"
