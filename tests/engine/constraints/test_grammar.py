"""The grammar constraint's mask, computed on numpy from xgrammar's bitmask, against xgrammar's own
application of the bitmask to logits, along sampled walks through a JSON schema."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine.constraints import json_schema_constraint
from tests.engine.structured_fixtures import SCHEMA
from tests.engine.test_tool_format_templates import LLAMA3_SPECIALS, LLAMA31_TEMPLATE, tiny_engine


@pytest.fixture(scope="module")
def engine():
    # 500-odd ids, not a multiple of 32: the bitmask's last word is partly past the vocabulary
    return tiny_engine(LLAMA3_SPECIALS, [], LLAMA31_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>")


def reference_allowed(constraint, logits: torch.Tensor) -> torch.Tensor:
    """bool [V]: xgrammar's own masking of the logits from the constraint's matcher state."""
    import xgrammar

    bitmask = xgrammar.allocate_token_bitmask(1, constraint.vocab_size)
    constraint.matcher.fork().fill_next_token_bitmask(bitmask)
    masked = logits.clone().unsqueeze(0)
    xgrammar.apply_token_bitmask_inplace(masked, bitmask)
    return torch.isfinite(masked[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_matches_xgrammar_along_a_sampled_walk(engine, seed):
    generator = torch.Generator().manual_seed(seed)
    constraint = json_schema_constraint(engine, SCHEMA)
    assert engine.args.vocab_size % 32 and constraint.vocab_size == engine.args.vocab_size
    for _ in range(120):
        logits = torch.randn(engine.args.vocab_size, generator=generator)
        masked = constraint.allowed(logits, 10_000)  # far from the end: the grammar's mask alone
        allowed = torch.isfinite(masked)
        assert torch.equal(allowed, reference_allowed(constraint, logits))
        assert torch.equal(masked[allowed], logits[allowed])  # allowed logits pass unchanged
        token = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=generator))
        if constraint.accept(token):
            break
