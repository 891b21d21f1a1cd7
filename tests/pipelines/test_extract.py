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


def test_a_numbered_item_is_quoted_with_its_number():
    hit = _hit("Boards: main board - CH32V003EVT 1. Connect the board to the WCH-Link with the SWD cable. "
               "2. Open MounRiver Studio and choose the project.")
    answer = extractive_answer("How do I connect the board to the WCH-Link?", [hit], "en")
    line = answer.text.split("\n")[1]
    assert line.startswith("1. Connect the board to the WCH-Link") and not line.endswith(" 1. [1]")
    assert "CH32V003EVT" not in line  # the item before is not dragged along


def test_a_register_question_is_answered_by_its_row_under_the_header():
    rows = "\n".join(f"R{n}_GPIO{n}_CFG | 0x4001{n:04X} | 0x{n:08X}" for n in range(40))
    table = f"Register | Address | Reset value\n{rows}"
    answer = extractive_answer("What is the reset value of R17_GPIO17_CFG?", [_hit(table, "regs.pdf")], "en")
    body = answer.text.split("\n")[1:]
    assert body[0] == "Register | Address | Reset value"
    assert body[1].startswith("R17_GPIO17_CFG | 0x40010011 | 0x00000011")
    assert len(answer.text) < 200  # the row, not the table


def test_citations_are_numbered_from_one_in_the_order_they_appear():
    hits = [_hit("The lobby opens at eight.", "a.md"), _hit("The pump P3 delivers 40 litres a minute.", "b.md")]
    answer = extractive_answer("How many litres a minute does pump P3 deliver?", hits, "en")
    assert [c.id for c in answer.citations] == [1] and answer.citations[0].source == "b.md"
    assert answer.text.endswith("[1]") and answer.sources[0].source == "b.md"


def test_an_extract_stays_short_and_in_the_best_sentence_s_document():
    long_page = " ".join(f"The valve V{n} is checked every {n + 2} weeks by the night shift." for n in range(30))
    hits = [_hit(long_page, "valves.md"), _hit("The valve V7 is painted green in the other building.", "paint.md")]
    answer = extractive_answer("How often is the valve V7 checked?", hits, "en")
    body = "\n".join(answer.text.split("\n")[1:])
    assert "V7 is checked every 9 weeks" in body.split("\n")[0]
    assert len(body) <= 200 and {c.source for c in answer.citations} == {"valves.md"}
