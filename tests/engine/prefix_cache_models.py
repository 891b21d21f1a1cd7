"""Tiny random models of both families and a greedy run, shared by the prefix-cache tests and their
subprocess (run as `python -m tests.engine.prefix_cache_models FAMILY FOLDER TOKENS...`)."""

from __future__ import annotations

import json
import sys

import torch

from ragglm.engine.cache.keys import ROOT, block_key
from ragglm.engine.cache.prefix_cache import PrefixCache, model_fingerprint
from ragglm.engine.generate import GenerationResult, generate_tokens
from ragglm.engine.model import ModelArgs, Transformer

__all__ = ["CONFIGS", "BLOCK", "tiny_model", "greedy", "prompts", "disk_cache"]

_COMMON = dict(vocab_size=512, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, intermediate_size=128,
               max_seq_len=512)
CONFIGS = {
    "llama": ModelArgs(**_COMMON),
    "glm": ModelArgs(family="glm", rope_fraction=0.5, rope_interleaved=True, qkv_bias=True, **_COMMON),
}
BLOCK = 16


def tiny_model(family: str, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(CONFIGS[family]).eval()


def prompts(shared: int, *suffixes: int, seed: int = 0) -> list[list[int]]:
    """Prompts made of one shared random prefix of `shared` tokens and different random suffixes."""
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, 512, (shared,), generator=generator).tolist()
    return [prefix + torch.randint(0, 512, (n,), generator=generator).tolist() for n in suffixes]


def greedy(model: Transformer, prompt: list[int], cache: PrefixCache | None = None,
           new_tokens: int = 24) -> tuple[list[int], int]:
    """(generated ids, prompt tokens that came from the cache)."""
    stats = GenerationResult([])
    ids = list(generate_tokens(model, prompt, new_tokens, set(), stats=stats, prefix_cache=cache))
    return ids, stats.cached_tokens


def disk_cache(model: Transformer, folder, name: str = "tiny", **kwargs) -> PrefixCache:
    cache = PrefixCache.for_model(model, block_size=BLOCK, **kwargs)
    cache.enable_disk(folder, model_fingerprint(model, name))
    return cache


def second_block_file(model: Transformer, folder, prompt: list[int]):
    """Write prompt's KV to a disk cache under folder; (first block key, second block key, the second's file)."""
    cache = disk_cache(model, folder)
    greedy(model, prompt, cache)
    cache.flush()
    first = block_key(ROOT, prompt[:BLOCK])
    second = block_key(first, prompt[BLOCK:2 * BLOCK])
    return first, second, cache.disk.path(first, second)


if __name__ == "__main__":
    family, folder, *tokens = sys.argv[1:]
    model = tiny_model(family)
    cache = disk_cache(model, folder)
    prompt = [int(t) for t in tokens]
    found = cache.cached_length(prompt)
    ids, cached = greedy(model, prompt, cache)
    print(json.dumps({"cached_length": found, "cached_tokens": cached, "ids": ids,
                      "rejected": cache.disk.rejected}))
