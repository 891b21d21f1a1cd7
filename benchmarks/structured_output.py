"""Cost and validity of constrained decoding with the packaged SmolLM2; prints one JSON line.

Decode ms/token of the same prompt with and without a JSON-schema grammar (the nested schema of
the tests: an enum, numbers, an array of objects, a boolean), interleaved round by round, best of
each; the grammar's own share per token (masking and the end-of-budget completion search),
timed apart from the model and the sampler; and how many of `--count` sampled generations (temperature 0.8)
parse and validate under the schema with a budget only a little above the shortest output.

    python benchmarks/structured_output.py [--count 100] [--new 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragglm.engine import Engine  # noqa: E402
from ragglm.engine.constraints import json_schema_constraint  # noqa: E402
from tests.engine.structured_fixtures import SCHEMA  # noqa: E402

ASK = [{"role": "user", "content": "Describe a spare part of a water filter as JSON."}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "part", "schema": SCHEMA}}


def decode_ms(engine: Engine, new: int, constrained: bool) -> tuple[float, int]:
    """(decode ms per token, tokens) of one greedy run; the schema's completion is forced late."""
    kwargs = {"response_format": FORMAT} if constrained else {}
    result = engine.chat(ASK, max_new_tokens=new, temperature=0.0, **kwargs)
    return (1000 / result.decode_tok_s if result.decode_tok_s else float("nan")), len(result.token_ids)


def grammar_ms(engine: Engine, new: int, runs: int = 5) -> float:
    """Milliseconds per token spent in the constraint alone, on sampled random logits."""
    generator = torch.Generator().manual_seed(0)
    spent, tokens = 0.0, 0
    for _ in range(runs):
        constraint = json_schema_constraint(engine, SCHEMA)
        for step in range(new):
            logits = torch.randn(engine.args.vocab_size, generator=generator) * 4
            started = time.perf_counter()
            masked = constraint.allowed(logits, new - step)
            spent += time.perf_counter() - started
            token = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=generator))  # the sampler's, not timed
            started = time.perf_counter()
            done = constraint.accept(token)
            spent += time.perf_counter() - started
            tokens += 1
            if done:
                break
    return 1000 * spent / tokens


def validity(engine: Engine, count: int, extra: int) -> tuple[int, int]:
    import jsonschema

    budget = json_schema_constraint(engine, SCHEMA).min_tokens + extra
    valid = 0
    for seed in range(count):
        text = engine.chat(ASK, response_format=FORMAT, max_new_tokens=budget, temperature=0.8, seed=seed).text
        try:
            jsonschema.validate(json.loads(text), SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return valid, budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", type=int, default=12, help="budget above the shortest output, in tokens")
    args = parser.parse_args()
    engine = Engine.from_pretrained("smollm2")
    json_schema_constraint(engine, SCHEMA)  # builds the vocabulary's grammar compiler once
    plain, constrained = [], []
    for _ in range(args.rounds):
        plain.append(decode_ms(engine, args.new, False))
        constrained.append(decode_ms(engine, args.new, True))
    best_plain, best_constrained = min(p[0] for p in plain), min(c[0] for c in constrained)
    valid, budget = validity(engine, args.count, args.extra)
    print(json.dumps({
        "benchmark": "structured_output", "model": "smollm2", "grammar": "xgrammar",
        "unconstrained_ms_per_token": round(best_plain, 2), "constrained_ms_per_token": round(best_constrained, 2),
        "overhead_ms_per_token": round(best_constrained - best_plain, 2),
        "grammar_only_ms_per_token": round(grammar_ms(engine, args.new), 3),
        "tokens_unconstrained": plain[0][1], "tokens_constrained": constrained[0][1],
        "min_tokens": json_schema_constraint(engine, SCHEMA).min_tokens, "budget": budget,
        "generations": args.count, "valid": valid, "valid_rate": valid / args.count,
    }))


if __name__ == "__main__":
    main()
