"""Prefill, decode and sampling as small functions over a Transformer with a KV cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ragglm.engine.cache.prefix_cache import DEFAULT_BLOCK_SIZE, PrefixCache
from ragglm.engine.model import Transformer
from ragglm.errors import ContextLengthError

__all__ = ["Constraint", "GenerationResult", "sample", "penalise_repetition", "filter_logits", "generate_tokens", "prefill",
           "PREFILL_CHUNK", "GPU_PREFILL_CHUNK"]

# Prompt tokens per prefill piece: the prefix cache's block, so that a prompt is cut at the same
# absolute positions whether part of it came from the cache or not (see prefill).
PREFILL_CHUNK = DEFAULT_BLOCK_SIZE
# On a GPU a piece's fixed cost (kernel launches, host work per layer) outweighs the math of 128
# tokens many times over (an H200 prefilled a 4-layer ChatGLM3-6B slice at 10K tok/s in pieces of
# 512, 86K in pieces of 8,192), so prompts go in pieces of whole blocks up to this size. The pieces still
# end at multiples of the chunk from position 0, and the prefix cache still stores whole blocks; a
# prompt after a cached prefix is then cut where a full prefill cuts it, but its first piece is
# shorter, so on a GPU its KV may differ from a full prefill's in the last bits. CPUs keep 128.
GPU_PREFILL_CHUNK = 8192


@dataclass
class GenerationResult:
    token_ids: list[int]  # generated ids only, stop token excluded
    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    ttft_s: float = 0.0
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    finish_reason: str = "length"  # "stop" | "length" | "tool_calls"
    timings: dict = field(default_factory=dict)
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI shape, parsed by Engine.chat


class Constraint(Protocol):
    """Which tokens may come next (a grammar, see ragglm.engine.constraints), asked at every step."""

    def allowed(self, logits: Tensor, remaining: int) -> Tensor:
        """logits [V] -> logits [V], forbidden ids at -inf; remaining counts this step's token."""

    def accept(self, token: int) -> bool:
        """Record the token chosen; True when the output is complete and generation should stop."""


def sample(logits: Tensor, temperature: float, generator: torch.Generator | None = None, *,
           top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
           previous: Tensor | None = None) -> int:
    """logits [V] -> token id; temperature 0 is greedy (after the repetition penalty)."""
    logits = penalise_repetition(logits, previous, repetition_penalty)
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def penalise_repetition(logits: Tensor, previous: Tensor | None, penalty: float) -> Tensor:
    """Make the ids in `previous` less likely: positive logits divided by penalty, negative multiplied."""
    if penalty == 1.0 or previous is None or not previous.numel():
        return logits
    seen = logits.gather(0, previous)
    return logits.scatter(0, previous, torch.where(seen > 0, seen / penalty, seen * penalty))


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """-inf outside the k most likely ids, then outside the smallest set whose probability reaches top_p."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop an id when the ids before it already reach top_p (the most likely always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    stats: GenerationResult | None = None,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    prefill_chunk: int | None = None,
    prefix_cache: PrefixCache | None = None,
    constraint: Constraint | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one; fills stats with timings when given.

    The prompt is prefilled in pieces of `prefill_chunk` tokens (default: the prefix cache's block
    size, else PREFILL_CHUNK) aligned to absolute positions, so attention scores never take more
    than prefill_chunk x prompt length. With a prefix cache, the longest cached prefix of whole
    blocks is copied into the KV cache and only the rest is prefilled, in the same pieces a full
    prefill uses; the prompt's KV is then kept for later prompts. A constraint masks the logits
    before sampling at every step and may end generation once its output is complete.
    """
    device = model.tok_embeddings.weight.device
    total = len(prompt_ids) + max_new_tokens
    if total > model.args.max_seq_len:
        raise ContextLengthError(
            f"prompt of {len(prompt_ids)} tokens plus {max_new_tokens} new ones exceeds the "
            f"model window of {model.args.max_seq_len} tokens"
        )
    if not prompt_ids:
        raise ValueError("the prompt is empty; generation needs at least one token")
    model.setup_cache(1, total)
    stats = stats if stats is not None else GenerationResult([])
    stats.prompt_tokens = len(prompt_ids)
    penalised = repetition_penalty != 1.0
    history = torch.tensor(prompt_ids, dtype=torch.long, device=device) if penalised else None

    def pick(logits: Tensor) -> int:
        if constraint is not None:
            logits = constraint.allowed(logits, max_new_tokens - produced)
        return sample(logits, temperature, generator, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, previous=history)

    if prefill_chunk is None:
        prefill_chunk = prefix_cache.block_size if prefix_cache is not None else PREFILL_CHUNK
        if device.type == "cuda":  # see GPU_PREFILL_CHUNK
            prefill_chunk = max(prefill_chunk, GPU_PREFILL_CHUNK // prefill_chunk * prefill_chunk)
    if model.args.bidirectional_context:  # the context's tokens see each other: one pass
        prefill_chunk = max(prefill_chunk, len(prompt_ids))
    produced = 0
    started = time.perf_counter()
    # At least the last prompt token is prefilled: its logits give the first new token.
    cached = prefix_cache.load_into(model, prompt_ids, limit=len(prompt_ids) - 1) if prefix_cache is not None else 0
    logits = prefill(model, prompt_ids[cached:], prefill_chunk, start=cached)
    token = pick(logits)
    stats.ttft_s = time.perf_counter() - started
    stats.cached_tokens = cached
    stats.prefill_tok_s = (len(prompt_ids) - cached) / max(stats.ttft_s, 1e-9)
    if prefix_cache is not None:
        prefix_cache.store(model, prompt_ids)
    decode_started = time.perf_counter()
    position = len(prompt_ids)
    step = torch.empty((1, 1), dtype=torch.long, device=device)
    try:
        while True:
            if token in stop_ids:
                stats.finish_reason = "stop"
                break
            stats.token_ids.append(token)
            produced += 1
            yield token
            if constraint is not None and constraint.accept(token):
                stats.finish_reason = "stop"
                break
            if produced >= max_new_tokens:
                break
            if penalised:
                history = torch.cat([history, torch.tensor([token], device=device)])
            step.fill_(token)
            logits = model.decode(step, position)[0, -1]
            position += 1
            token = pick(logits)
    finally:  # also when the consumer stops early (a stop string)
        decode_s = time.perf_counter() - decode_started
        stats.decode_tok_s = (produced - 1) / decode_s if produced > 1 and decode_s > 0 else 0.0


@torch.inference_mode()
def prefill(model: Transformer, prompt_ids: list[int], chunk: int = PREFILL_CHUNK, start: int = 0) -> Tensor:
    """Write the prompt's KV into the cache from `start`; logits [V] of the last token.

    Pieces end at multiples of chunk counted from position 0, not from start: matrix products may
    round a row differently depending on how many rows they take, so a prompt prefilled after a
    cached prefix must be cut exactly where a full prefill cuts it to give the same KV and output.
    """
    device = model.tok_embeddings.weight.device
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    chunk = max(1, chunk)
    ends = []
    while not ends or ends[-1] < tokens.shape[1]:
        ends.append(min(tokens.shape[1], (start + (ends[-1] if ends else 0)) // chunk * chunk + chunk - start))
    if len(ends) > 1 and model.args.position_mode == "1d" and not model.kv_prefix_len:
        # the same pieces layer by layer (the same KV to the bit): an int4 layer converts its weight once; not
        # under a P-Tuning prefix, whose pieces would all hold their masks at once (quadratic memory)
        return model.prefill_by_layer(tokens, ends, start)[0, -1]
    logits = None
    for lo, hi in zip([0, *ends[:-1]], ends, strict=True):
        logits = model(tokens[:, lo:hi], start=start + lo, last_only=True)
    return logits[0, -1]
