"""`ragglm index` and KnowledgeBase.add: bad files reported, unchanged files never re-embedded,
deleted files removed, an interrupted run leaves the saved index as it was."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ragglm.cli import app
from ragglm.index.embedder import Embedder
from ragglm.knowledge_base import KnowledgeBase

pytestmark = pytest.mark.slow


@pytest.fixture
def counting(monkeypatch):
    """Counts the texts every real Embedder embeds (the CLI's included); fail_on_call=N raises
    KeyboardInterrupt at the N-th call, as if the user pressed Ctrl-C in the middle of indexing."""
    counter = SimpleNamespace(texts=0, calls=0, fail_on_call=None)
    embed = Embedder.embed

    def counted(self, texts, *args, **kwargs):
        if texts:
            counter.calls += 1
            if counter.fail_on_call == counter.calls:
                raise KeyboardInterrupt
        counter.texts += len(texts)
        return embed(self, texts, *args, **kwargs)

    monkeypatch.setattr(Embedder, "embed", counted)
    return counter


@pytest.fixture
def docs(manuals, tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(manuals, folder)
    (folder / "policies").mkdir()
    (folder / "policies" / "returns.md").write_text(
        "# 退货政策\n\n购买后三十天内可以无理由退货，请保留发票。\n\nRefunds take five working days.",
        encoding="utf-8")
    return folder


def _index(folder, kb, *extra):
    result = CliRunner().invoke(app, ["index", str(folder), "--kb", str(kb), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_run_embeds_nothing_and_an_edit_embeds_only_that_file(docs, tmp_path, counting):
    kb = tmp_path / "kb"
    first = _index(docs, kb)
    assert len(first["added"]) == 4 and first["errors"] == []
    assert counting.texts == first["chunks"] == first["total_chunks"] > 0

    counting.texts = 0
    second = _index(docs, kb)
    assert counting.texts == 0
    assert second["added"] == [] and len(second["unchanged"]) == 4 and second["chunks"] == 0
    assert second["total_chunks"] == first["total_chunks"]

    edited = docs / "policies" / "returns.md"
    edited.write_text("# 退货政策\n\n购买后十四天内可以退货。\n\n退款需要三个工作日。\n\nKeep the receipt.",
                      encoding="utf-8")
    from ragglm.connectors import load
    from ragglm.text.chunker import Chunker

    expected = len(Chunker(KnowledgeBase(kb).settings.chunk_tokens).split(load(edited)[0]))
    counting.texts = 0
    third = _index(docs, kb)
    assert third["added"] == [str(edited)] and len(third["unchanged"]) == 3
    assert counting.texts == third["chunks"] == expected
    hit = KnowledgeBase(kb).search("退货 十四天", 1)[0]
    assert hit.source == str(edited) and "十四天" in hit.text

    (docs / "router-r7-faq.html").unlink()
    counting.texts = 0
    fourth = _index(docs, kb)
    assert fourth["removed"] == [str(docs / "router-r7-faq.html")] and counting.texts == 0
    reloaded = KnowledgeBase(kb)
    assert str(docs / "router-r7-faq.html") not in reloaded.sources and len(reloaded.sources) == 3


def test_corrupt_pdf_among_good_files_is_reported_and_the_rest_indexed(docs, tmp_path, counting):
    good_pdf = (docs / "aquapure-w3-manual.pdf").read_bytes()
    (docs / "truncated.pdf").write_bytes(good_pdf[: len(good_pdf) // 2])
    (docs / "not-a-pdf.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf\n%%EOF\n")
    kb = KnowledgeBase(tmp_path / "kb")
    report = kb.add(docs, workers=2)
    assert sorted(e.source for e in report.errors) == [str(docs / "not-a-pdf.pdf"), str(docs / "truncated.pdf")]
    problems = {error.source: error.problem for error in report.errors}
    assert "truncated" in problems[str(docs / "truncated.pdf")]
    good = sorted(str(p) for p in docs.rglob("*") if p.is_file() and p.name not in ("truncated.pdf",
                                                                                      "not-a-pdf.pdf"))
    assert kb.sources == good == sorted(report.added)
    assert counting.texts == report.chunks == len(kb)
    reference = KnowledgeBase()
    reference.add([docs / "aquapure-w3-manual.pdf"])
    pdf_chunks = [c for c in KnowledgeBase(tmp_path / "kb").store.chunks.values()
                  if c.source.endswith("aquapure-w3-manual.pdf")]
    assert [c.text for c in pdf_chunks] == [c.text for c in reference.store.chunks.values()]
    assert sorted({c.page for c in pdf_chunks}) == [1, 2, 3, 4]


def test_interrupted_run_leaves_the_saved_index_as_it_was(docs, tmp_path, counting):
    kb_folder = tmp_path / "kb"
    kb = KnowledgeBase(kb_folder)
    kb.add(docs / "smartlock-s2-guide.md")
    before = (kb_folder / "index" / "index.json").read_bytes()
    sources_before, size_before = kb.sources, len(kb)

    counting.fail_on_call = counting.calls + 2  # the second file to embed is interrupted
    with pytest.raises(KeyboardInterrupt):
        kb.add(docs)
    assert (kb_folder / "index" / "index.json").read_bytes() == before
    assert kb.sources == sources_before and len(kb) == size_before
    assert KnowledgeBase(kb_folder).sources == sources_before
    assert [p.name for p in kb_folder.iterdir()] == ["index"]  # no staging folder left behind

    counting.fail_on_call = None
    report = kb.add(docs)
    assert len(report.added) == 3 and report.unchanged == [str(docs / "smartlock-s2-guide.md")]


def test_in_memory_knowledge_base_rolls_back_too(docs, counting):
    kb = KnowledgeBase()
    kb.add(docs / "smartlock-s2-guide.md")
    sources_before, size_before = kb.sources, len(kb)
    counting.fail_on_call = counting.calls + 1
    with pytest.raises(KeyboardInterrupt):
        kb.add(docs)
    assert kb.sources == sources_before and len(kb) == size_before
    assert kb.search("battery", 1)[0].source.endswith("smartlock-s2-guide.md")
