"""Settings shared by the Python API and the CLI; every field can come from RAGGLM_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ragglm.config_file import settings_from_file

__all__ = ["Settings"]


@dataclass
class Settings:
    model: str = "smollm2"  # alias, folder, .gguf file or hub id
    quant: str | None = None
    adapter: str | None = None  # LoRA or P-Tuning v2 folder applied to the local model
    compile: bool = False  # torch.compile the decode step: tens of seconds at load; on CPU the native step is faster
    device: str = "cpu"
    embedder: str = "all-MiniLM-L6-v2"
    reranker: str | None = None  # cross-encoder folder or hub id; None = fused ranking as is
    chunk_tokens: int = 80  # jieba tokens per chunk (Chinese pages: 2.5 times that; measured, see README)
    chunk_overlap_sentences: int = 1
    top_k: int = 4
    max_new_tokens: int = 160
    temperature: float = 0.0
    allow_private_urls: bool = False  # fetch loopback, private and link-local addresses (intranet pages)
    ocr: str = "auto"  # scanned pages and images: auto (pages without a text layer) | always | never

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Defaults, then the config file (ragglm.toml), then RAGGLM_<FIELD> variables, then overrides."""
        values = settings_from_file({f.name: f.default for f in fields(cls)})
        for f in fields(cls):
            raw = os.environ.get(f"RAGGLM_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(raw: str, default):
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw or None
