"""llama.cpp (llama-cpp-python) as the peer the engine benchmarks compare with: greedy decoding of
the same GGUF, timed the way our engine is (prompt prefill, then one token per evaluation)."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["llama_cpp_greedy"]

MISSING = {"available": False, "reason": "llama-cpp-python is not installed (pip install llama-cpp-python)"}


def llama_cpp_greedy(path: Path, ids: list[int], new: int, threads: int, runs: int = 1) -> dict:
    """Prefill `ids`, then `new` greedy tokens; best prefill and decode tokens/s over `runs` runs,
    and the tokens of the first."""
    try:
        import llama_cpp
    except ImportError:
        return dict(MISSING)
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads,
                          n_ctx=len(ids) + new + 8, n_batch=512, verbose=False)

    def next_token() -> int:
        # Llama.scores is only filled with logits_all=True, which would also compute every prompt
        # position's logits; read the last position's straight from the context instead
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        return int(np.argmax(logits))

    llm.eval(ids[:16])  # warm up
    figures: dict = {"available": True, "prefill_tok_s": 0.0, "decode_tok_s": 0.0, "threads": threads}
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        prefill_s = time.perf_counter() - started
        tokens = [next_token()]
        started = time.perf_counter()
        for _ in range(new - 1):
            llm.eval([tokens[-1]])
            tokens.append(next_token())
        decode_s = time.perf_counter() - started
        figures["prefill_tok_s"] = max(figures["prefill_tok_s"], round(len(ids) / prefill_s, 1))
        figures["decode_tok_s"] = max(figures["decode_tok_s"], round((new - 1) / decode_s, 1))
        figures.setdefault("tokens", tokens)
    return figures
