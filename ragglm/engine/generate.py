"""Prefill, decode and sampling as small functions over a Transformer with a KV cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ragglm.engine.model import Transformer
from ragglm.engine.prefix_cache import PrefixCache

__all__ = ["GenerationResult", "sample", "generate_tokens"]


@dataclass
class GenerationResult:
    token_ids: list[int]  # generated ids only, stop token excluded
    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    ttft_s: float = 0.0
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    finish_reason: str = "length"  # "stop" | "length"
    timings: dict = field(default_factory=dict)


def sample(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> int:
    """logits [V] -> token id; temperature 0 is greedy."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    stats: GenerationResult | None = None,
    prefix_cache: PrefixCache | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one; fills stats with timings when given.

    With a prefix cache, the longest cached prefix of the prompt is copied into the KV cache and only
    the rest is prefilled; the prompt's KV is then kept for later prompts.
    """
    device = model.tok_embeddings.weight.device
    total = len(prompt_ids) + max_new_tokens
    if total > model.args.max_seq_len:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens plus {max_new_tokens} new ones exceeds the "
            f"model window of {model.args.max_seq_len} tokens"
        )
    model.setup_cache(1, total)
    stats = stats if stats is not None else GenerationResult([])
    stats.prompt_tokens = len(prompt_ids)
    started = time.perf_counter()
    # At least the last prompt token is prefilled: its logits give the first new token.
    cached = prefix_cache.load_into(model, prompt_ids, limit=len(prompt_ids) - 1) if prefix_cache is not None else 0
    tokens = torch.tensor([prompt_ids[cached:]], dtype=torch.long, device=device)
    logits = model(tokens, start=cached, last_only=True)[0, -1]
    token = sample(logits, temperature, generator)
    stats.ttft_s = time.perf_counter() - started
    stats.cached_tokens = cached
    stats.prefill_tok_s = (len(prompt_ids) - cached) / max(stats.ttft_s, 1e-9)
    if prefix_cache is not None:
        prefix_cache.store(model, prompt_ids)
    decode_started = time.perf_counter()
    position = len(prompt_ids)
    produced = 0
    while True:
        if token in stop_ids:
            stats.finish_reason = "stop"
            break
        stats.token_ids.append(token)
        produced += 1
        yield token
        if produced >= max_new_tokens:
            break
        logits = model(torch.tensor([[token]], device=device), start=position)[0, -1]
        position += 1
        token = sample(logits, temperature, generator)
    decode_s = time.perf_counter() - decode_started
    stats.decode_tok_s = (produced - 1) / decode_s if produced > 1 and decode_s > 0 else 0.0
