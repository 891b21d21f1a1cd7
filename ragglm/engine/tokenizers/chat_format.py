"""Turn chat messages into the exact prompt string a checkpoint was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

__all__ = ["ChatFormat"]


@dataclass
class ChatFormat:
    template: str  # a Jinja chat template, as shipped with the checkpoint
    bos_token: str | None = None
    eos_token: str | None = None

    @cached_property
    def _compiled(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        return env.from_string(self.template)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "",
        )

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
        return tokenizer.encode(self.render(messages, add_generation_prompt))


def _raise(message: str):
    raise ValueError(message)
