"""The settings RagGLM and ChatRagGLM share: which model runs, the knowledge base, and decoding.

Both take max_tokens as another name for max_new_tokens, check their decoding settings when built
(and each call's overrides when run), refuse settings they do not know, and identify themselves
to LangChain by the same parameters.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DecodingOptions", "EngineParams", "renamed_max_tokens"]


class DecodingOptions(BaseModel):
    """How RagGLM decodes: its settings, or one call's keyword arguments; anything else is refused."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    seed: int | None = None

    def split(self) -> tuple[dict, dict, int | None]:
        """The token budget and temperature, the engine's sampling arguments (defaults left out), the seed.

        top_p 0 keeps only the most likely token, which is greedy decoding (the engine reads 0 as off)."""
        greedy = self.top_p == 0
        budget = {"max_new_tokens": self.max_new_tokens, "temperature": 0.0 if greedy else self.temperature}
        sampling = {}
        if self.top_p is not None and 0 < self.top_p < 1:
            sampling["top_p"] = self.top_p
        if self.top_k:
            sampling["top_k"] = self.top_k
        if self.repetition_penalty != 1:
            sampling["repetition_penalty"] = self.repetition_penalty
        return budget, sampling, self.seed


class EngineParams(BaseModel):
    """Fields, checks and identity shared by the LangChain classes. List it after LangChain's base
    class: of two bases' model_config the later one wins, and this one forbids unknown settings."""

    model: str = "smollm2"
    quant: str | None = None
    device: str = "cpu"
    knowledge_base: Any = Field(default=None, exclude=True)
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None  # plain generation only, as are top_k and repetition_penalty
    top_k: int | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None

    # a setting a class does not know is an error, not a silent no-op
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _max_tokens(cls, data: Any) -> Any:
        return renamed_max_tokens(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _valid_decoding(self) -> EngineParams:
        self._decoding()
        return self

    def _engine_params(self) -> dict[str, Any]:
        """The model, where the knowledge base lives, and the decoding settings (for _identifying_params)."""
        kb = self.knowledge_base
        where = None if kb is None else str(kb.path) if kb.path is not None else "in-memory"
        return {"model": self.model, "quant": self.quant, "device": self.device, "knowledge_base": where,
                **{name: getattr(self, name) for name in DecodingOptions.model_fields}}

    def _decoding(self, **overrides: Any) -> DecodingOptions:
        """These decoding settings with a call's keyword arguments over them, checked."""
        settings = {name: getattr(self, name) for name in DecodingOptions.model_fields}
        return DecodingOptions.model_validate({**settings, **renamed_max_tokens(overrides)})


def renamed_max_tokens(data: dict) -> dict:
    """max_tokens, as other LangChain LLMs call it, is max_new_tokens here."""
    if "max_tokens" not in data:
        return data
    data = dict(data)
    tokens = data.pop("max_tokens")
    if data.get("max_new_tokens", tokens) != tokens:
        raise ValueError(f"max_tokens ({tokens}) and max_new_tokens ({data['max_new_tokens']}) disagree; give one")
    return {**data, "max_new_tokens": tokens}
