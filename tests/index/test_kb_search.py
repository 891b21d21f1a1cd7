"""KnowledgeBase.search and `ragglm search` over the example manuals, and their persistence."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragglm.cli import app
from ragglm.knowledge_base import KnowledgeBase


@pytest.mark.slow
def test_search_command_finds_the_chinese_answer(manuals):
    result = CliRunner().invoke(app, ["search", "--docs", str(manuals), "--json", "-k", "3",
                                      "电池完全没电了怎么开门"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert len(hits) == 3
    assert hits[0]["source"].endswith("smartlock-s2-guide.md") and "应急供电口" in hits[0]["text"]
    source = (manuals / "smartlock-s2-guide.md").read_text(encoding="utf-8")
    assert hits[0]["text"].endswith(source[hits[0]["start"]:hits[0]["end"]])


@pytest.mark.slow
def test_persisted_knowledge_base_answers_the_same(tmp_path, manuals):
    kb = KnowledgeBase(tmp_path / "kb")
    kb.add(manuals)
    queries = ["How long does the filter of the AquaPure W3 last?", "密码输错几次会锁定", "reset router"]
    before = {q: [(h.source, h.page, h.text) for h in kb.search(q, 4)] for q in queries}
    again = KnowledgeBase(tmp_path / "kb")
    assert len(again) == len(kb)
    assert {q: [(h.source, h.page, h.text) for h in again.search(q, 4)] for q in queries} == before
    assert again.search("   ", 4) == []
    guide = str(manuals / "smartlock-s2-guide.md")
    again.remove(guide)
    assert all(h.source != guide for h in again.search("门锁 电池", 5))
    assert sorted(again.store.sparse.ids().tolist()) == sorted(again.store.chunks)
