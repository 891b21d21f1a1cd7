"""Stuff the whole documents into the prompt, or retrieve chunks: decided per question, with numbers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ragglm.documents import ContextPlan
from ragglm.paths import cache_root
from ragglm.protocols import Generator

__all__ = ["PlannerConfig", "plan_context", "prefill_rate"]


@dataclass
class PlannerConfig:
    answer_tokens: int = 160  # reserved for the answer
    prompt_overhead_tokens: int = 96  # instructions, chat-format markers and source labels
    time_budget_s: float = 8.0  # longest acceptable prefill of uncached documents
    retrieve_k: int = 4  # chunks to retrieve when the documents are not stuffed
    max_stuff_tokens: int | None = None  # a cap below the window, for models that lose long contexts


def plan_context(document_tokens: int, question_tokens: int, window: int, prefill_tok_s: float,
                 cached: int = 0, config: PlannerConfig | None = None, forced: str | None = None) -> ContextPlan:
    """Stuff when the documents fit the window and are cached or quick enough to prefill."""
    config = config or PlannerConfig()
    budget = window - question_tokens - config.answer_tokens - config.prompt_overhead_tokens
    cached = max(0, min(cached, document_tokens))
    uncached = document_tokens - cached
    estimate = uncached / prefill_tok_s if prefill_tok_s > 0 else float("inf")
    limit = budget if config.max_stuff_tokens is None else min(budget, config.max_stuff_tokens)
    fits = document_tokens <= limit
    if forced in ("stuff", "retrieve"):
        mode, reason = forced, f"{forced} was asked for"
        if forced == "stuff" and document_tokens > budget:  # asked for: only the window limits it
            mode, reason = "retrieve", "stuff was asked for, but the documents do not fit the window"
    elif not fits:
        mode, reason = "retrieve", f"{document_tokens} document tokens exceed the {limit}-token budget"
    elif cached and uncached == 0:
        mode, reason = "stuff", "the documents fit and their KV is cached"
    elif estimate <= config.time_budget_s:
        mode, reason = "stuff", f"the documents fit and prefill takes ~{estimate:.1f} s"
    else:
        mode, reason = "retrieve", (f"prefill of {uncached} uncached tokens would take ~{estimate:.1f} s, "
                                    f"over the {config.time_budget_s:g} s budget")
    return ContextPlan(mode, reason, document_tokens, window, question_tokens, config.answer_tokens,
                config.prompt_overhead_tokens, budget, round(prefill_tok_s, 1),
                round(estimate, 3) if estimate != float("inf") else -1.0, cached, config.time_budget_s)


_RATES: dict[str, float] = {}


def prefill_rate(generator: Generator, probe_tokens: int = 256) -> float:
    """Prompt tokens per second, measured once per generator and device and kept on disk."""
    key = f"{generator.name}|{generator.device}|{generator.quant}"
    if key in _RATES:
        return _RATES[key]
    store = cache_root() / "prefill_rates.json"
    saved = _read_rates(store)
    if key in saved:
        _RATES[key] = saved[key]
        return saved[key]
    words = ("The pump pressure is checked every week and the filter is replaced in spring. " * 40).split()
    text = " ".join(words[: probe_tokens * 3 // 4])
    messages = [{"role": "user", "content": text + "\nSay OK."}]
    # the prefix cache would serve the second call from the first: measure real prefill
    generator.chat(messages, max_new_tokens=1, use_prefix_cache=False)  # warm-up: first calls pay for allocation
    started = time.perf_counter()
    result = generator.chat(messages, max_new_tokens=1, use_prefix_cache=False)
    elapsed = result.ttft_s or (time.perf_counter() - started)
    rate = (result.prompt_tokens or generator.count_tokens(text)) / max(elapsed, 1e-6)
    _RATES[key] = rate
    saved[key] = rate
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only home only costs a new measurement next time
    return rate


def _read_rates(path: Path) -> dict:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, AttributeError):
        return {}
