"""The in-package engine: our own Transformer, loaders, tokenizers and generation."""

from ragglm.engine.engine import Engine
from ragglm.engine.generate import GenerationResult
from ragglm.engine.model import PRESETS, ModelArgs, Transformer

__all__ = ["Engine", "GenerationResult", "ModelArgs", "PRESETS", "Transformer"]
