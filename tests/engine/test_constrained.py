"""Constrained decoding: sampled output always parses and validates, ends within max_new_tokens,
and the constraint hook of generate() is generic."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ragglm.engine.constraints import GrammarConstraint, json_schema_constraint, regex_constraint
from ragglm.engine.generate import GenerationResult
from ragglm.errors import InvalidRequestError
from tests.engine.structured_fixtures import SCHEMA, tiny_glm_engines, validate

RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "part", "schema": SCHEMA}}
ASK = [{"role": "user", "content": "Describe a spare part as JSON."}]


@pytest.fixture(scope="module")
def glm_engines(tmp_path_factory):
    return tiny_glm_engines(tmp_path_factory)


def sampled(engine, count: int, extra_tokens: int, **kwargs) -> list[GenerationResult]:
    budget = json_schema_constraint(engine, SCHEMA).min_tokens + extra_tokens
    return [engine.chat(ASK, response_format=RESPONSE_FORMAT, max_new_tokens=budget, temperature=0.8, seed=seed,
                        **kwargs) for seed in range(count)]


@pytest.fixture(scope="module")
def smollm2_default():
    """SmolLM2 as users load it (its native decode step): 100 generations take a fifth of fp32's time."""
    from ragglm.engine import Engine

    return Engine.from_pretrained("smollm2")


@pytest.mark.slow
def test_smollm2_sampled_output_always_validates(smollm2_default):
    results = sampled(smollm2_default, 100, extra_tokens=12)
    for result in results:
        validate(result.text, SCHEMA)
        assert result.finish_reason == "stop"
    assert len({r.text for r in results}) > 10  # sampled, not one forced answer


@pytest.mark.slow
@pytest.mark.parametrize(("family", "count"), [("glm4", 100), ("chatglm3", 20)])
def test_tiny_glm_sampled_output_always_validates(glm_engines, family, count):
    # random weights: the model would write anything, so the grammar and the closing do all the work
    results = sampled(glm_engines[family], count, extra_tokens=12)
    for result in results:
        validate(result.text, SCHEMA)
    assert len({r.text for r in results}) > 1  # sampled, not one forced answer


def test_output_ends_complete_at_the_smallest_budget(smollm2):
    budget = json_schema_constraint(smollm2, SCHEMA).min_tokens
    result = smollm2.chat(ASK, response_format=RESPONSE_FORMAT, max_new_tokens=budget, temperature=0.8, seed=3)
    validate(result.text, SCHEMA)
    assert len(result.token_ids) <= budget


def test_a_budget_below_the_shortest_output_is_refused(smollm2):
    with pytest.raises(InvalidRequestError, match="max_new_tokens is 5.*ask for at least"):
        smollm2.chat(ASK, response_format=RESPONSE_FORMAT, max_new_tokens=5)


def test_json_object_is_any_object(smollm2):
    result = smollm2.chat(ASK, response_format={"type": "json_object"}, max_new_tokens=16, temperature=0.8, seed=0)
    assert isinstance(json.loads(result.text), dict)


def test_regex(smollm2):
    pattern = r"[A-Z][a-z]{2,8} (filter|pump)"
    result = smollm2.chat(ASK, response_format={"type": "regex", "regex": pattern}, max_new_tokens=16,
                          temperature=0.8, seed=0)
    assert re.fullmatch(pattern, result.text), result.text
    assert regex_constraint(smollm2, pattern).min_tokens >= 2


def test_unconstrained_chat_is_unchanged(smollm2):
    plain = smollm2.generate(smollm2.chat_ids(ASK), max_new_tokens=8)
    assert smollm2.chat(ASK, max_new_tokens=8, response_format={"type": "text"}).text == plain.text


def test_json_streams_as_it_is_written(smollm2):
    result = GenerationResult([])
    budget = json_schema_constraint(smollm2, SCHEMA).min_tokens + 2
    pieces = list(smollm2.chat(ASK, response_format=RESPONSE_FORMAT, max_new_tokens=budget, stream=True, result=result))
    assert len(pieces) > 1 and "".join(pieces) == result.text
    validate(result.text, SCHEMA)


class OnlyDigits:
    """A constraint of its own: digits only, done after three."""

    def __init__(self, engine):
        self.digits = torch.tensor([engine.tokenizer.token_id(str(d)) for d in range(10)])
        self.count = 0

    def allowed(self, logits, remaining):
        masked = torch.full_like(logits, float("-inf"))
        masked[self.digits] = logits[self.digits]
        return masked

    def accept(self, token):
        self.count += 1
        return self.count == 3


def test_generate_takes_any_constraint(smollm2):
    result = smollm2.generate(smollm2.chat_ids(ASK), max_new_tokens=10, constraint=OnlyDigits(smollm2))
    assert re.fullmatch(r"\d{3}", result.text) and result.finish_reason == "stop"


def test_a_constraint_is_a_grammar_constraint(smollm2):
    assert isinstance(json_schema_constraint(smollm2, SCHEMA), GrammarConstraint)
