"""KnowledgeBase: add, search, persist and reload, skip unchanged files."""

import shutil

from ragglm import KnowledgeBase


def test_search_finds_the_right_page(manuals):
    kb = KnowledgeBase()
    report = kb.add(manuals)
    assert not report.errors and len(report.added) == 3
    hits = kb.search("What does error code E2 mean?", k=3)
    assert hits[0].source.endswith("aquapure-w3-manual.pdf") and hits[0].page == 4
    assert "leak" in hits[0].text
    assert hits[0].score >= hits[-1].score


def test_persisted_index_reloads_and_skips_unchanged(manuals, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(manuals, docs)
    kb = KnowledgeBase(tmp_path / "kb")
    first = kb.add(docs)
    assert first.chunks > 0 and len(first.added) == 3

    reloaded = KnowledgeBase(tmp_path / "kb")
    assert len(reloaded) == len(kb)
    query = "门锁电池可以用多久？"
    assert [h.chunk for h in reloaded.search(query, 3)] == [h.chunk for h in kb.search(query, 3)]

    (docs / "smartlock-s2-guide.md").write_text("# 门锁\n\n电池可以使用约 12 个月。", encoding="utf-8")
    second = reloaded.add(docs)
    assert second.added == [str(docs / "smartlock-s2-guide.md")]
    assert len(second.unchanged) == 2
    assert "12 个月" in reloaded.search(query, 1)[0].text


def test_add_text_cites_the_given_source():
    kb = KnowledgeBase()
    kb.add_text("The staff canteen opens at 11:30 on weekdays.", source="handbook.txt", page=7)
    hit = kb.search("When does the canteen open?", k=1)[0]
    assert (hit.source, hit.page) == ("handbook.txt", 7)
    answer = kb.ask("When does the canteen open?", mode="extractive")
    assert answer.mode == "extractive"
    assert answer.citations[0].source == "handbook.txt" and answer.citations[0].page == 7
    assert "11:30" in answer.text
