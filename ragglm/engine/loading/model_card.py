"""What a model is (name, languages, size) from its file's header, before any weight is read.

Answering decides between extract and generate from the model's size and languages; learning
them by loading the model costs more than the whole extract. A GGUF header says both; other
sources are not described here (None), and their generator loads as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragglm.engine.loading.gguf_header import check_gguf
from ragglm.engine.loading.sources import resolve_model_path
from ragglm.errors import RagglmError

__all__ = ["ModelCard", "read_model_card", "DeferredGenerator"]

_DEFAULT_LANGUAGES = ("en", "zh")  # what a GGUF file's tokenizer fields give when it names none


@dataclass(frozen=True)
class ModelCard:
    name: str
    languages: tuple[str, ...]
    parameter_count: int


def read_model_card(model: str | Path) -> ModelCard | None:
    """The card of a local GGUF model (an alias or a path); None for anything else or on any doubt,
    so that loading the generator reports the problem as it always has."""
    from gguf import GGML_QUANT_SIZES

    try:
        path = resolve_model_path(model)
        if path.suffix != ".gguf" or not path.is_file():
            return None
        layout = check_gguf(path, {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()})
    except (RagglmError, OSError, ValueError):
        return None
    return ModelCard(str(model), layout.languages or _DEFAULT_LANGUAGES, layout.parameter_count)


class DeferredGenerator:
    """A generator's card that becomes the generator on first real use: name, languages and
    parameter_count come from the card; any other attribute loads the model and is read from it."""

    def __init__(self, card: ModelCard, load: Callable[[], object]):
        self.name, self.languages, self.parameter_count = card.name, card.languages, card.parameter_count
        self._load = load

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self._load(), attribute)
