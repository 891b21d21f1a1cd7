"""Turn a model setting into a generator: the in-package Engine, or a remote OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

from ragglm.engine.remote import RemoteGenerator, is_remote_spec
from ragglm.errors import ConfigError

__all__ = ["load_generator"]


def load_generator(model: str | Path = "smollm2", quant: str | None = None, device: str = "cpu",
                   cache_dir: str | Path | None = None, compile: bool = False, disk_cache_limit_mb: int | None = None,
                   adapter: str | Path | None = None):
    """`openai:http://host:port/v1[#name]` -> RemoteGenerator; anything else -> Engine.from_pretrained.

    A remote server quantizes, places and caches its model itself, so quant, device, cache_dir
    (the on-disk prefix KV cache), compile and adapter (a LoRA / P-Tuning v2 folder) apply to local
    models only.
    """
    if is_remote_spec(model):
        if adapter is not None:
            raise ConfigError(f"adapter {adapter}: a remote model ({model}) is adapted where it is served "
                              "(ragglm serve --adapter FOLDER); drop the adapter here")
        return RemoteGenerator.from_spec(str(model))
    from ragglm.engine.engine import Engine  # torch: not imported for a remote generator

    return Engine.from_pretrained(model, quant=quant, device=device, cache_dir=cache_dir, compile=compile,
                                  disk_cache_limit_mb=disk_cache_limit_mb, adapter=adapter)
