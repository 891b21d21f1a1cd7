"""Checks on generated answers: key facts (numbers, codes, file names) must be in what they cite."""

import threading

from ragglm.documents import Chunk, Hit
from ragglm.pipelines.checks import unbacked_facts
from ragglm.pipelines.config import AnswerConfig
from ragglm.pipelines.qa import answer_question

BOARD = ("The evaluation board carries the CH32V203C8T6 as its main control MCU. "
         "Projects start from the startup_ch32v20x_D8.S file. The board runs at 3.3 V.")


def test_facts_the_evidence_does_not_hold_are_named():
    assert unbacked_facts("The main control MCU is the CH32V203F-R0 [1].", BOARD) == ["ch32v203f-r0"]
    assert unbacked_facts("Use the startup_ch32v20x_D8C.S file [1].", BOARD) == ["startup_ch32v20x_d8c.s"]
    assert unbacked_facts("It runs at 3.3 V on the CH32V203C8T6 [1].", BOARD) == []
    assert unbacked_facts("E2 means a leak.", "A leak shows as a blinking light.", "What does E2 mean?") == []
    assert unbacked_facts("Up to 1 device.", "Up to 128 devices.") == ["1"]  # whole tokens only


class RecordedGenerator:
    """Replays one answer a model gave, as the Generator seam delivers it (streamed pieces)."""

    name, languages, device, quant, window, parameter_count, concurrent = "recorded", ("en",), "cpu", None, 4096, None, True
    lock = threading.RLock()

    def __init__(self, answer: str):
        self.answer = answer

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def cached_prompt_tokens(self, messages: list[dict]) -> int:
        return 0

    def chat(self, messages, *, max_new_tokens=256, temperature=0.0, stream=False, result=None, **options):
        result.token_ids = list(range(len(self.answer.split())))
        words = self.answer.split(" ")
        return (piece for piece in [words[0]] + [" " + word for word in words[1:]])


def test_a_generated_answer_with_a_wrong_part_number_is_replaced_by_the_extract():
    hits = [Hit(Chunk(BOARD, "board.pdf", 2, 0, len(BOARD)), 1.0)]
    question = "Which MCU is the main control MCU of the evaluation board?"
    wrong = answer_question(question, hits, RecordedGenerator("The main control MCU is the CH32V203F-R0 [1]."),
                            "en", config=AnswerConfig(use_support_model=False))
    assert wrong.mode == "extractive" and "ch32v203f-r0" in wrong.plan.fallback
    assert "CH32V203C8T6" in wrong.text and wrong.citations[0].id == 1
    right = answer_question(question, hits, RecordedGenerator("The main control MCU is the CH32V203C8T6 [1]."),
                            "en", config=AnswerConfig(use_support_model=False))
    assert right.mode == "retrieve" and right.plan.fallback is None and right.text.endswith("[1].")
