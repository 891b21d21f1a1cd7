from ragglm.documents import Chunk, Hit
from ragglm.pipelines.citations import (
    parse_citation_numbers,
    resolve_citations,
    strip_citation_marks,
)


def _hit(text: str, source: str = "manual.pdf", page: int | None = 1) -> Hit:
    return Hit(Chunk(text, source, page, 0, len(text)), 1.0)


def test_parses_lists_ranges_and_model_variants():
    assert parse_citation_numbers("Yes [1]. Also [2, 3] and [4-6].") == [1, 2, 3, 4, 5, 6]
    assert parse_citation_numbers("滤芯每六个月更换【2】，见资料（3）。") == [2, 3]
    assert parse_citation_numbers("See (1) and [Source 2].") == [1, 2]
    assert parse_citation_numbers("Founded in (1990) with [1]") == [1]  # a year is not a citation


def test_citations_to_unknown_sources_are_dropped():
    hits = [_hit("The filter lasts six months."), _hit("Error E2 means a leak.", "faq.html", None)]
    citations = resolve_citations("The filter lasts six months [1][7]. A leak [2, 9].", hits)
    assert [c.id for c in citations] == [1, 2]
    assert citations[0].source == "manual.pdf" and citations[0].page == 1
    assert citations[1].text == "Error E2 means a leak."
    assert not any(c.inferred for c in citations)


def test_uncited_answer_gets_the_clearly_supporting_source_flagged_inferred():
    hits = [_hit("Press the reset button for ten seconds."), _hit("The filter lasts six months.", "b.md")]
    citations = resolve_citations("The filter lasts six months.", hits)
    assert [(c.id, c.source, c.inferred) for c in citations] == [(2, "b.md", True)]
    assert resolve_citations("Bananas are yellow fruit.", hits) == []


def test_strip_citation_marks():
    assert strip_citation_marks("Six months [1] .") == "Six months."
