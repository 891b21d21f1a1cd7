"""Extractive answers: sentence ranking, answer-type cues, passages quoted whole across sentence breaks."""

from ragglm.documents import Chunk, Hit
from ragglm.pipelines.checks import says_something
from ragglm.pipelines.extract import extractive_answer, rank_sentences
from ragglm.pipelines.prompts import NOT_FOUND


def _hit(text: str, source: str = "notes.md") -> Hit:
    return Hit(Chunk(text, source, None, 0, len(text)), 1.0)


def test_neighbouring_sentences_are_quoted_as_one_passage():
    # "W." ends a sentence for the splitter, so the answer runs over a sentence break
    hit = _hit("The programme was founded in 2001. It is run by the Andrew W. Mellon Foundation and MIT. "
               "Its courses are free.")
    answer = extractive_answer("Who runs the programme founded in 2001, the Andrew Mellon Foundation?", [hit], "en")
    lines = answer.text.split("\n")
    assert lines[0] == "Extract from the documents:"
    assert any("It is run by the Andrew W. Mellon Foundation and MIT." in line for line in lines[1:])
    assert all(line.endswith("[1]") for line in lines[1:])
    assert [c.id for c in answer.citations] == [1]


def test_passages_keep_reading_order_and_separate_sources():
    hits = [_hit("Pumps need oil. The oil pump runs at 3 bar."), _hit("The oil filter of the pump is blue.", "b.md")]
    answer = extractive_answer("What pressure does the oil pump run at?", hits, "en")
    body = answer.text.split("\n")[1:]
    assert body[0].startswith("Pumps need oil. The oil pump runs at 3 bar.") and body[0].endswith("[1]")
    assert {c.id for c in answer.citations} <= {1, 2}


def test_a_when_question_prefers_the_sentence_holding_a_date():
    hit = _hit("The bridge over the river was praised by engineers. The bridge over the river opened in 1932.")
    ranked = rank_sentences("When did the bridge over the river open?", [hit], language="en")
    assert "1932" in ranked[0].text
    no_cue = rank_sentences("Did the bridge over the river open?", [hit], language="en")
    assert no_cue[0].score < ranked[0].score  # the cue adds to the score, it does not replace it


def test_a_chinese_why_question_prefers_the_sentence_giving_a_cause():
    hit = _hit("这张专辑在新加坡销量很好。由于当时的风潮，这张专辑在香港销量惨淡。")
    ranked = rank_sentences("为什么这张专辑在香港销量惨淡？", [hit], language="zh")
    assert ranked[0].text.startswith("由于")


def test_no_shared_word_means_the_refusal_phrase():
    answer = extractive_answer("Who painted the ceiling?", [_hit("The filter lasts six months.")], "en")
    assert answer.text == NOT_FOUND["en"] and answer.citations == []


def test_an_answer_that_only_restates_the_question_claims_nothing():
    assert not says_something("The colour of the filter is the colour of the filter [1].", "What colour is the filter?")
    assert says_something("The filter is blue [1].", "What colour is the filter?")
