"""The grounded prompt: rules first, then the caller's instructions, then sources and question."""

from ragglm.documents import Chunk, Hit
from ragglm.pipelines.prompts import NOT_FOUND, build_messages

HITS = [Hit(Chunk("E2 means a leak.", "/m/aquapure.pdf", 3, 0, 16), 1.0)]


def test_caller_instructions_follow_the_grounding_rules_in_the_system_turn():
    plain = build_messages("What is E2?", HITS, "en")
    instructed = build_messages("What is E2?", HITS, "en", "Answer like a pirate.")
    rules = plain[0]["content"]
    assert instructed[0]["content"].startswith(rules) and NOT_FOUND["en"] in rules
    assert instructed[0]["content"].endswith("Answer like a pirate.")
    assert instructed[1:] == plain[1:]  # sources and question unchanged


def test_blank_instructions_change_nothing():
    assert build_messages("E2 是什么？", HITS, "zh", "  \n") == build_messages("E2 是什么？", HITS, "zh")
    chinese = build_messages("E2 是什么？", HITS, "zh", "请用敬语回答。")[0]["content"]
    assert chinese.startswith(build_messages("E2 是什么？", HITS, "zh")[0]["content"]) and chinese.endswith("请用敬语回答。")
