"""The one-token decode step compiled with torch.compile (Inductor), for long-running processes.

At batch 1 a decode step is hundreds of small kernels: norms, rotary, cache writes, casts around
every matmul. Eager PyTorch pays Python and dispatch time for each, which on a small model costs as
much as the matmuls themselves. Inductor fuses the elementwise work into a few generated C++ loops
and calls the matmul kernels directly. Compiling takes tens of seconds once per process, so it pays
off in a server or a chat session, not in a one-shot CLI question; prefill stays eager (its large
matmuls dominate anyway).
"""

from __future__ import annotations

import time
from functools import partial

import torch

from ragglm.engine.model import MIN_COMPILED_CACHE, Transformer
from ragglm.errors import ConfigError

__all__ = ["compile_decode"]


def compile_decode(model: Transformer) -> float:
    """Compile model's decode step in place (model.decode then runs it); returns the seconds spent.

    The step is traced for symbolic positions, so one compilation serves every position in the
    cache. It runs after quantization and any change of linear layers, and a warm-up step compiles
    it here rather than in the middle of the first answer.
    """
    started = time.perf_counter()
    model.use_decode_step(partial(torch.compile(model.forward, dynamic=True), last_only=True), sized_caches=True)
    device = model.tok_embeddings.weight.device
    model.setup_cache(1, MIN_COMPILED_CACHE)
    try:
        with torch.inference_mode():
            model.decode(torch.zeros((1, 1), dtype=torch.long, device=device), start=2)  # 0 and 1 would be traced as constants
    except Exception as error:  # Inductor needs a C++ compiler on CPU, among other things
        model.use_decode_step(None)
        raise ConfigError(
            f"compiling the decode step failed ({type(error).__name__}: {str(error).strip().splitlines()[0][:200]}); "
            "on CPU torch.compile needs a C++ compiler (g++ or clang) on PATH: install one, or load "
            "the model without compile"
        ) from error
    return time.perf_counter() - started
