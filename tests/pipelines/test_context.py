from ragglm.documents import Document, Page
from ragglm.ingestor import Ingestor
from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.context import pack_hits


def test_whole_pages_are_rebuilt_from_overlapping_chunks():
    page_one = " ".join(f"Sentence number {i} talks about valve V{i} and its torque." for i in range(40))
    page_two = "## Cleaning\n\nRinse the tank. " + " ".join(f"Step {i} uses brush B{i}." for i in range(30))
    kb = KnowledgeBase(chunk_tokens=40, chunk_overlap_sentences=1)
    Ingestor(kb.store, kb.chunker).index(Document("guide.pdf", [Page(1, page_one), Page(2, page_two)]), "h")
    assert len(kb) > 4  # several overlapping chunks per page
    pages = kb.store.whole_pages()
    assert [(p.source, p.page) for p in pages] == [("guide.pdf", 1), ("guide.pdf", 2)]
    assert " ".join(pages[0].text.split()) == " ".join(page_one.split())
    assert pages[1].text.count("Step 7 uses") == 1 and "Rinse the tank." in pages[1].text


def test_pack_hits_stops_at_the_budget():
    page = Page(None, "alpha beta gamma. " * 30)
    kb = KnowledgeBase(chunk_tokens=20, chunk_overlap_sentences=0)
    Ingestor(kb.store, kb.chunker).index(Document("a.txt", [page]), "h")
    hits = kb.store.whole_pages() * 3
    packed, used = pack_hits(hits, 2 * (len(hits[0].text.split()) + 12) + 5, lambda t: len(t.split()))
    assert len(packed) == 2 and used <= 2 * (len(hits[0].text.split()) + 12)
