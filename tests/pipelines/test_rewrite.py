from ragglm.pipelines.rewrite import is_follow_up, standalone_question


def test_follow_up_is_made_standalone_with_the_earlier_question():
    history = [{"role": "user", "content": "How long does the filter of the AquaPure W3 last?"},
               {"role": "assistant", "content": "Six months [1]."},
               {"role": "user", "content": "How do I replace it?"}]
    question = standalone_question(history)
    assert "replace" in question and "AquaPure W3" in question


def test_standalone_questions_are_left_alone():
    history = [{"role": "user", "content": "How long does the filter of the AquaPure W3 last?"},
               {"role": "assistant", "content": "Six months [1]."},
               {"role": "user", "content": "What does error code E2 mean on the router R7?"}]
    assert standalone_question(history) == "What does error code E2 mean on the router R7?"
    assert is_follow_up("它的电池能用多久？", "zh") and not is_follow_up("智能锁S2的电池能用多久？", "zh")
