"""Sampling against transformers' logits processors; seeds, stop strings and stop tokens end to end."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.generate import filter_logits, penalise_repetition, sample

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize("penalty, temperature, top_k, top_p", [
    (1.3, 0.7, 20, 0.9), (1.0, 1.0, 5, None), (2.0, 0.5, None, 0.5), (1.1, 1.3, 50, 0.95),
])
def test_processed_logits_match_transformers(penalty, temperature, top_k, top_p):
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(1000) * 3
    previous = torch.randint(0, 1000, (40,))
    ours = filter_logits(penalise_repetition(logits, previous, penalty) / temperature, top_k, top_p)

    theirs = logits[None].clone()
    ids = previous[None]
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, theirs)
    theirs = TemperatureLogitsWarper(temperature)(ids, theirs)
    if top_k:
        theirs = TopKLogitsWarper(top_k)(ids, theirs)
    if top_p:
        theirs = TopPLogitsWarper(top_p)(ids, theirs)
    theirs = theirs[0]
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    kept = ~torch.isinf(ours)
    assert kept.sum() >= 1
    assert torch.allclose(ours[kept], theirs[kept], atol=1e-5)


def test_sample_greedy_limits_and_seed():
    logits = torch.tensor([0.0, 5.0, 4.9, -1.0])
    assert sample(logits, 0.0) == 1
    assert sample(logits, 1.0, top_k=1) == 1
    assert sample(logits, 1.0, top_p=1e-6) == 1
    # the penalty turns the favourite into the runner-up
    assert sample(logits, 0.0, repetition_penalty=1.5, previous=torch.tensor([1])) == 2
    draws = [sample(logits, 1.0, torch.Generator().manual_seed(s)) for s in range(40)]
    assert set(draws) >= {1, 2}
    again = [sample(logits, 1.0, torch.Generator().manual_seed(s)) for s in range(40)]
    assert draws == again


def test_seeded_sampling_is_reproducible(smollm2):
    first = smollm2.chat(QUESTION, max_new_tokens=12, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    second = smollm2.chat(QUESTION, max_new_tokens=12, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    assert first.token_ids == second.token_ids
    others = [smollm2.chat(QUESTION, max_new_tokens=12, temperature=1.5, seed=s).token_ids for s in range(3)]
    assert any(o != first.token_ids for o in others)


def test_stop_string_cuts_text_and_streams_the_same(smollm2):
    full = smollm2.chat(QUESTION, max_new_tokens=16)
    assert "Paris" in full.text
    cut = smollm2.chat(QUESTION, max_new_tokens=16, stop=["Paris"])
    assert cut.text == full.text[: full.text.index("Paris")]
    assert cut.finish_reason == "stop"
    result = type(cut)([])
    pieces = list(smollm2.chat(QUESTION, max_new_tokens=16, stop="Paris", stream=True, result=result))
    assert "".join(pieces) == cut.text == result.text


def test_stop_token_ids(smollm2):
    full = smollm2.chat(QUESTION, max_new_tokens=16)
    third = full.token_ids[2]
    stopped = smollm2.chat(QUESTION, max_new_tokens=16, stop_token_ids=[third])
    assert stopped.token_ids == full.token_ids[: full.token_ids.index(third)]
    assert stopped.finish_reason == "stop"
